//! A worker that writes hostile bytes on its channel or asks for too many listeners cannot
//! end or exhaust the master (issue 16): the test master runs as its own process, so an
//! abort would show as its exit.

use std::process::Stdio;

use cluster_tests::{Lines, master_exe, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Starts the test master with one worker in `mode`, its log on stdout, and `env`.
fn start_master(mode: &str, env: &[(&str, &str)]) -> (Child, Lines) {
    let mut command = Command::new(master_exe());
    command
        .env("TEST_MODE", mode)
        .env("TEST_WORKERS", "1")
        .env("TEST_LOG", "1")
        .env("TEST_PRINT_MESSAGES", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut master = command.spawn().expect("start master");
    let lines = Lines::new(master.stdout.take().expect("stdout"));
    (master, lines)
}

/// The master is still running; SIGTERM stops it with status 0.
async fn assert_alive_then_stop(master: &mut Child) {
    assert!(
        master.try_wait().expect("try_wait").is_none(),
        "the master ended"
    );
    let pid = master.id().expect("pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// The second word of a line such as `fork 1 4242`: the pid.
fn pid_in(line: &str) -> u32 {
    line.split(' ').nth(2).expect("pid").parse().expect("pid")
}

#[tokio::test]
async fn a_19_byte_binary_frame_ends_that_worker_not_the_master_and_a_new_one_forks() {
    // Before the fix the master aborted: "memory allocation of 2997595911977802137 bytes
    // failed", and every worker went with it.
    let (mut master, mut lines) = start_master(
        "bad-control-frame",
        &[("TEST_SERIALIZATION", "binary"), ("TEST_REFORK", "1")],
    );
    let bad = pid_in(&lines.wait_for(10, "fork 1 ").await);
    // The master logs it at once; the `fork` line comes from a callback, maybe later.
    let reason = lines.seen_or_wait_for(10, "ending worker 1").await;
    assert!(reason.contains("control message"), "{reason}");
    let exit = lines.wait_for(10, "exit 1 ").await;
    assert_eq!(pid_in(&exit), bad);
    assert!(exit.contains("signal SIGKILL"), "{exit}");
    let replacement = pid_in(&lines.wait_for(10, "online 2 ").await);
    assert_ne!(replacement, bad);
    assert_alive_then_stop(&mut master).await;
}

#[tokio::test]
async fn a_user_frame_announcing_more_descriptors_than_it_carries_ends_that_worker_only() {
    // Messages with descriptors (issue 14) use the same frames: a worker cannot make the
    // master wait for, or pile up, descriptors it announces and does not send.
    let (mut master, mut lines) = start_master("lying-fds", &[("TEST_REFORK", "1")]);
    let bad = pid_in(&lines.wait_for(10, "fork 1 ").await);
    // The master logs it at once; the `fork` line comes from a callback, maybe later.
    let reason = lines.seen_or_wait_for(10, "ending worker 1").await;
    assert!(
        reason.contains("announces 2 descriptors, 1 arrived"),
        "{reason}"
    );
    let exit = lines.wait_for(10, "exit 1 ").await;
    assert_eq!(pid_in(&exit), bad);
    assert!(exit.contains("signal SIGKILL"), "{exit}");
    let replacement = pid_in(&lines.wait_for(10, "online 2 ").await);
    assert_ne!(replacement, bad);
    assert_alive_then_stop(&mut master).await;
}

#[tokio::test]
async fn a_binary_user_message_with_a_lying_length_fails_to_decode_and_nothing_else() {
    // The master's code decodes it (`message.decode::<TestMsg>()`): an error, no abort, and
    // the worker's channel goes on.
    let (mut master, mut lines) =
        start_master("bad-user-frame", &[("TEST_SERIALIZATION", "binary")]);
    let unreadable = lines.wait_for(10, "unreadable message 1").await;
    assert!(unreadable.contains("binary"), "{unreadable}");
    lines.wait_for(10, "message 1 hello").await;
    // `Online` is written before the worker's first message (it came after it before).
    lines.seen_or_wait_for(10, "online 1 ").await;
    assert!(
        !lines.seen.iter().any(|l| l.contains("ending worker")),
        "{:#?}",
        lines.seen
    );
    assert_alive_then_stop(&mut master).await;
}

#[tokio::test]
async fn listen_requests_beyond_the_per_worker_cap_fail_in_the_worker() {
    // Before the cap, 100 requests made 100 listeners in the master.
    let (mut master, mut lines) = start_master("listen-many:100", &[("TEST_MAX_LISTENS", "8")]);
    let done = lines.wait_for(20, "message 1 listen-done").await;
    // 8 granted; the first closed and granted again.
    assert!(done.ends_with(" 8"), "{done}");
    let count = |needle: &str| lines.seen.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("message 1 listened "), 8);
    assert_eq!(count("message 1 listened-again"), 1);
    let refusals: Vec<&String> = lines
        .seen
        .iter()
        .filter(|l| l.contains("message 1 listen-error"))
        .collect();
    assert_eq!(refusals.len(), 92);
    assert!(
        refusals
            .iter()
            .all(|l| l.contains("max_listens_per_worker")),
        "{refusals:#?}"
    );
    // The master logged each refusal.
    let logged = lines
        .seen
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("already listens on 8 addresses"))
        .count();
    assert_eq!(logged, 92, "{:#?}", lines.seen);
    let master_pid = master.id().expect("pid");
    let fds = std::fs::read_dir(format!("/proc/{master_pid}/fd"))
        .expect("fd dir")
        .count();
    assert!(fds < 40, "the master holds {fds} descriptors");
    assert_alive_then_stop(&mut master).await;
}

#[tokio::test]
async fn a_bad_max_listens_per_worker_is_named() {
    let output = Command::new(master_exe())
        .env("TEST_MAX_LISTENS", "0")
        .output();
    let output = within(10, "master exit", output).await.expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_listens_per_worker"), "{stderr}");
}

#[tokio::test]
async fn a_batch_answer_with_too_many_or_no_hand_overs_ends_that_worker_only() {
    // `ConnectionsTaken` answers at most 16 hand-overs (one frame's descriptors), at least
    // one: any other count is a worker that cannot be trusted, not a reason to loop.
    for (count, reason_says) in [
        (17, "answered 17 hand-overs in one frame"),
        (0, "answered 0 hand-overs in one frame"),
    ] {
        let mode = format!("taken-batch:{count}");
        let (mut master, mut lines) = start_master(&mode, &[("TEST_REFORK", "1")]);
        let bad = pid_in(&lines.wait_for(10, "fork 1 ").await);
        let reason = lines.seen_or_wait_for(10, "ending worker 1").await;
        assert!(reason.contains(reason_says), "{reason}");
        let exit = lines.wait_for(10, "exit 1 ").await;
        assert_eq!(pid_in(&exit), bad);
        assert!(exit.contains("signal SIGKILL"), "{exit}");
        let replacement = pid_in(&lines.wait_for(10, "online 2 ").await);
        assert_ne!(replacement, bad);
        assert_alive_then_stop(&mut master).await;
    }
}
