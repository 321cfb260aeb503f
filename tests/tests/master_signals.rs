//! Signals to the master process: SIGTERM stops every worker gracefully and exits 0;
//! SIGKILL leaves no worker behind.

use cluster_tests::{Lines, eventually, process_gone, start_test_master, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;

/// The test master with two workers listening on a port of their own.
async fn start_master() -> (Child, Lines, Vec<u32>) {
    start_test_master(&[("TEST_LISTEN", "127.0.0.1:0")]).await
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("kill");
}

#[tokio::test]
async fn sigterm_stops_every_worker_gracefully_and_exits_0() {
    let (mut master, mut lines, pids) = start_master().await;
    signal(master.id().expect("pid"), Signal::SIGTERM);
    for _ in 0..2 {
        let line = lines.wait_for(10, "exit").await;
        assert!(line.contains("code 0 after_disconnect=true"), "{line}");
    }
    let status = within(10, "master exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    for pid in pids {
        assert!(process_gone(pid), "worker {pid} still running");
    }
}

#[tokio::test]
async fn a_sigkilled_master_leaves_no_worker_after_2s() {
    let (mut master, _lines, pids) = start_master().await;
    master.kill().await.expect("SIGKILL master");
    eventually(2, "workers to exit after the master's death", || {
        pids.iter().all(|pid| process_gone(*pid))
    })
    .await;
}

#[tokio::test]
async fn a_sigint_during_a_graceful_stop_makes_it_fast() {
    let (mut master, mut lines, _pids) = start_master().await;
    // A client that never finishes its request keeps one worker from draining.
    let address = lines
        .seen
        .iter()
        .find_map(|l| l.split(' ').nth(3))
        .expect("address");
    let mut stuck = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stuck, b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    // Wait until a worker has taken it off the listening socket's queue.
    let port: u16 = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    cluster_tests::eventually(5, "the stuck connection accepted", || {
        cluster_tests::accept_queue(port) == Some(0)
    })
    .await;
    let pid = master.id().expect("pid");
    signal(pid, Signal::SIGTERM);
    let first = lines.wait_for(10, "exit").await;
    assert!(
        first.contains("code 0"),
        "the idle worker drains at once: {first}"
    );
    // The other is stuck until the 5 s stop timeout; SIGINT cuts it short.
    signal(pid, Signal::SIGINT);
    let second = lines.wait_for(2, "exit").await;
    assert!(second.contains("signal SIGKILL"), "{second}");
    let status = within(2, "master exit", master.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
    drop(stuck);
}
