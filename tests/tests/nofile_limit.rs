//! The master's descriptor limit: raised from a low soft limit to the hard one at start-up
//! (as Go's runtime does) and inherited by the workers; `nofile_limit` picks another value;
//! a bad one is an error naming the setting.

use std::process::Stdio;

use cluster_tests::{Lines, master_exe, within};
use tokio::process::{Child, Command};

/// (soft, hard) `RLIMIT_NOFILE` of a process, from `/proc/PID/limits`.
fn nofile_of(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open files line");
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().expect("soft"), numbers.next().expect("hard"))
}

/// Starts the test master under a soft limit of 256 (the hard limit stays), with `env`.
fn start(env: &[(&str, &str)]) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\"")
        .arg(master_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the master")
}

/// The limits of the master and of its first listening worker, and the master's output
/// (kept open: the master writes to it until it exits).
async fn limits_of(master: &mut Child) -> ((u64, u64), (u64, u64), Lines) {
    let mut lines = Lines::new(master.stdout.take().expect("stdout"));
    let line = lines.wait_for(10, "listening").await;
    let worker = line.split(' ').nth(2).expect("pid").to_string();
    let master_pid = master.id().expect("pid").to_string();
    (nofile_of(&master_pid), nofile_of(&worker), lines)
}

async fn stop(mut master: Child) {
    let pid = master.id().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = within(10, "the master's exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_master_raises_its_soft_limit_to_the_hard_one_and_workers_inherit_it() {
    let (_, hard) = nofile_of("self");
    assert!(
        hard > 256,
        "this test needs a hard limit above 256, not {hard}"
    );
    let mut master = start(&[]);
    let (in_master, in_worker, _output) = limits_of(&mut master).await;
    assert_eq!(in_master, (hard, hard));
    assert_eq!(in_worker, (hard, hard));
    stop(master).await;
}

#[tokio::test]
async fn nofile_limit_sets_another_value() {
    let (_, hard) = nofile_of("self");
    assert!(
        hard >= 300,
        "this test needs a hard limit of 300 or more, not {hard}"
    );
    let mut master = start(&[("TEST_NOFILE", "300")]);
    let (in_master, in_worker, _output) = limits_of(&mut master).await;
    assert_eq!(in_master.0, 300);
    assert_eq!(in_worker.0, 300);
    stop(master).await;
}

#[tokio::test]
async fn a_nofile_limit_below_64_is_refused_naming_the_setting() {
    let master = start(&[("TEST_NOFILE", "10")]);
    let output = within(10, "the master's exit", master.wait_with_output())
        .await
        .expect("wait");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nofile_limit"), "{stderr}");
}
