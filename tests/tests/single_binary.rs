//! One binary that is both the master and its workers: cluster-core's crate example runs
//! without forking more than its workers, and a binary that forgets the worker branch gets
//! an error from `setup_master` in each worker instead of a fork bomb.

use std::process::Stdio;

use cluster_tests::{Lines, children_of, process_gone, sibling_exe, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Starts `binary` with its stderr merged into stdout (`sh` execs it: same pid).
fn start(binary: &str, env: &[(&str, String)]) -> (Child, Lines) {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("exec \"$0\" 2>&1")
        .arg(sibling_exe(binary))
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    (child, lines)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn sigterm(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
}

#[test]
fn the_test_binary_is_the_crate_example_verbatim() {
    let lib = include_str!("../../cluster-core/src/lib.rs");
    let start = lib.find("//! ```no_run\n").expect("the example") + "//! ```no_run\n".len();
    let end = start + lib[start..].find("//! ```\n").expect("its end");
    let example: String = lib[start..end]
        .lines()
        .map(|line| {
            line.strip_prefix("//! ")
                .unwrap_or(line.trim_start_matches("//!"))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let copy = include_str!("../src/bin/crate_example.rs");
    let body = copy
        .split_once("\n\n")
        .expect("header, blank line, example")
        .1;
    assert_eq!(
        body, example,
        "tests/src/bin/crate_example.rs is out of date"
    );
}

#[tokio::test]
async fn the_crate_example_forks_its_two_workers_and_no_more() {
    let port = free_port();
    let (mut master, mut lines) = start("crate_example", &[("PORT", port.to_string())]);
    let master_pid = master.id().expect("pid");
    lines.wait_for(10, "forked").await;
    lines.wait_for(10, "forked").await;
    // Both workers accept on the shared port.
    within(10, "the workers accept", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let workers = children_of(master_pid);
    assert_eq!(workers.len(), 2, "{workers:?}; saw {:#?}", lines.seen);
    for worker in &workers {
        assert!(children_of(*worker).is_empty(), "worker {worker} forked");
    }
    sigterm(master_pid);
    let status = within(10, "the master exits", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0), "saw {:#?}", lines.seen);
    let output = all_output(lines).await;
    assert_eq!(output.matches("forked").count(), 2, "{output}");
    for worker in workers {
        assert!(process_gone(worker), "worker {worker} still running");
    }
}

#[tokio::test]
async fn setup_master_in_a_worker_is_an_error_naming_it_not_a_fork_bomb() {
    let (mut master, mut lines) = start("setup_master_in_worker", &[]);
    let master_pid = master.id().expect("pid");
    lines.wait_for(10, "exit ").await;
    lines.wait_for(10, "exit ").await;
    sigterm(master_pid);
    let status = within(10, "the master exits", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let output = all_output(lines).await;
    assert_eq!(output.matches("forked ").count(), 2, "{output}");
    assert_eq!(output.matches(" code 2").count(), 2, "{output}");
    let refusal = "generation 1: setup_master was called in worker process";
    assert_eq!(output.matches(refusal).count(), 2, "{output}");
    assert!(
        output.contains(&format!("that master {master_pid} started")),
        "{output}"
    );
    assert!(
        output.contains("branch on cluster_worker::is_worker()"),
        "{output}"
    );
    assert!(!output.contains("not forking further"), "{output}");
}

/// Everything the child wrote: the lines read so far and the rest, to its end.
async fn all_output(lines: Lines) -> String {
    let seen = lines.seen.join("\n");
    let rest = within(5, "the rest of the output", async {
        use tokio::io::AsyncReadExt;
        let mut rest = String::new();
        let _ = lines.into_inner().read_to_string(&mut rest).await;
        rest
    })
    .await;
    format!("{seen}\n{rest}")
}
