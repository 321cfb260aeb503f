//! A master whose stdout and stderr are pipes whose reader has gone (a log shipper that
//! restarted, `| head`, journald restarting) keeps serving: every log line is an `EPIPE`
//! that is dropped, never a panic (which would end the master and, by PDEATHSIG, every
//! worker).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;

use cluster_tests::{Lines, Load, children_of, eventually, within};
use support::{free_port, get, kill};
use tokio::process::Command;

async fn keeps_serving_after_its_log_pipes_break(worker_output: &str) {
    let port = free_port();
    let mut master = Command::new(env!("CARGO_BIN_EXE_connect_with_cluster"))
        .env("PORT", port.to_string())
        .env("REST_PORT", free_port().to_string())
        .env("WORKER_OUTPUT", worker_output)
        .env("KILL_TIMEOUT_MS", "3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let master_pid = master.id().expect("pid");
    let mut stdout = Lines::new(master.stdout.take().expect("stdout"));
    for _ in 0..2 {
        stdout.wait_for(10, "rest api start listen on").await;
    }
    // The reader goes away: every later write to either stream is EPIPE.
    drop(stdout);
    drop(master.stderr.take());

    // A panic and a SIGKILL under load: the panicking request is answered 500 and its
    // worker replaced, the killed one too, while the log lines (the master's and the
    // workers') go nowhere.
    const CLIENTS: usize = 4;
    let load = Load::start(SocketAddr::from(([127, 0, 0, 1], port)), CLIENTS);
    load.answers(200).await;
    let first = children_of(master_pid);
    let response = get(port, "/asycerror").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    eventually(10, "the panicked worker replaced", || {
        let now = children_of(master_pid);
        now.len() == 2 && now.iter().filter(|p| first.contains(p)).count() == 1
    })
    .await;
    load.answers(200).await;
    let victim = children_of(master_pid)[0];
    kill(victim, "KILL");
    eventually(10, "the killed worker replaced", || {
        let now = children_of(master_pid);
        now.len() == 2 && !now.contains(&victim)
    })
    .await;
    load.answers(200).await;
    let (answered, failures) = load.stop().await;
    // Only the keep-alive connections the killed worker held can fail.
    assert!(failures.len() <= CLIENTS, "{failures:?}");
    assert!(answered > 600, "{answered}");
    assert!(
        master.try_wait().expect("try_wait").is_none(),
        "master died"
    );

    kill(master_pid, "TERM");
    let status = within(15, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn workers_writing_to_the_broken_pipe_themselves() {
    keeps_serving_after_its_log_pipes_break("inherit").await;
}

#[tokio::test]
async fn workers_output_forwarded_by_the_master() {
    keeps_serving_after_its_log_pipes_break("forward").await;
}
