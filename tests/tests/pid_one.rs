//! The master as PID 1 of a PID namespace, as in a container started without an init
//! (issue 11): it reaps the orphans the kernel re-parents to it, its workers' `exit` events
//! keep their real codes (the reaper does not steal tokio's children), and SIGTERM still
//! drains and exits 0 (PID 1 has no default signal actions). Runs the test master under
//! `unshare --pid --fork --mount-proc`, which needs root; skips with a message otherwise.

use std::process::Stdio;

use cluster_tests::{catches_signal, children_of, http_get, master_exe, process_gone, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

/// True if this process may make a PID namespace (root, and `unshare` works here).
fn can_unshare() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: making a PID namespace needs root");
        return false;
    }
    let works = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` fails here");
    }
    works
}

#[tokio::test]
async fn as_pid_1_the_master_reaps_orphans_keeps_exit_codes_and_drains_on_sigterm() {
    if !can_unshare() {
        return;
    }
    // Each worker leaves an orphan behind and watches whether it is reaped; the first two
    // then exit with code 7 and are replaced (`TEST_REFORK`); their replacements serve.
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(master_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("TEST_WORKERS", "2")
        .env("TEST_REFORK", "1")
        .env("TEST_PRINT_MESSAGES", "1")
        .env("TEST_ORPHAN", "1")
        .env("TEST_ORPHAN_EXIT", "7")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start unshare");
    let mut lines = cluster_tests::Lines::new(unshare.stdout.take().expect("stdout"));
    let first = lines.wait_for(10, "master ").await;
    assert_eq!(
        first, "master 1",
        "the master runs as PID 1 of its namespace"
    );

    // Its pid as seen from here: unshare's only child.
    let unshare_pid = unshare.id().expect("pid");
    let mut master = Vec::new();
    cluster_tests::eventually(5, "unshare's child", || {
        master = children_of(unshare_pid);
        master.len() == 1
    })
    .await;
    let master = master[0];
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        assert!(
            catches_signal(master, signal as i32),
            "PID 1 master has no {signal} handler: the kernel would drop the signal"
        );
    }

    // Four workers (1, 2 and their replacements 3, 4) each report their orphan; 1 and 2
    // exit with code 7; 3 and 4 listen.
    let mut reaped = Vec::new();
    let mut exits = Vec::new();
    let mut address = None;
    within(30, "four orphans, two exits, two replacements", async {
        while reaped.len() < 4 || exits.len() < 2 || address.is_none() {
            let line = lines.wait_for(30, "").await;
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["message", id, "orphan", fate, pid] => {
                    assert_eq!(*fate, "reaped", "worker {id}'s orphan {pid}: {line}");
                    reaped.push(pid.to_string());
                }
                ["exit", id, ..] => {
                    assert!(
                        line.contains("code 7 "),
                        "worker {id}'s exit event lost its code: {line}"
                    );
                    exits.push(id.to_string());
                }
                ["listening", "4", _, listening] => address = Some(listening.to_string()),
                _ => {}
            }
        }
    })
    .await;
    exits.sort();
    assert_eq!(exits, ["1", "2"]);

    // The replacements serve, and the master (PID 1) holds no zombie.
    let address = address.expect("address").parse().expect("address");
    let (status, _) = within(10, "GET", http_get(address, "/"))
        .await
        .expect("GET");
    assert_eq!(status, 200);
    let children = children_of(master);
    assert_eq!(
        children.len(),
        2,
        "only the two serving workers: {children:?}"
    );
    for child in &children {
        assert!(!process_gone(*child), "child {child} of PID 1 is a zombie");
    }

    // SIGTERM from outside the namespace: handled (not dropped), drains, exits 0.
    kill(Pid::from_raw(master as i32), Signal::SIGTERM).expect("SIGTERM");
    for _ in 0..2 {
        let line = lines.wait_for(10, "exit ").await;
        assert!(line.contains("code 0 after_disconnect=true"), "{line}");
    }
    lines.wait_for(10, "master stopped").await;
    let status = within(10, "unshare exit", unshare.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "the PID 1 master's exit status");
}
