//! What Kubernetes does to a pod that stops (docs/CONTAINERS.md), as far as it can be
//! tested without a cluster: after `preStop` the kubelet sends SIGTERM while clients may
//! still be in the middle of keep-alive exchanges with the pod. Every request those clients
//! send on their open connections must be answered (the last one with
//! `Connection: close`, after which a client goes to another endpoint), none reset, and the
//! master exits 0 well within the grace period. (`/readyz` turning 503 as the stop begins,
//! before any worker finishes, is `clusterctl/tests/cli.rs`'s
//! `metrics_parse_and_count_a_panic_and_readyz_turns_not_ready_as_the_stop_begins`.)

use std::net::SocketAddr;

use cluster_tests::{KeepAliveClient, process_gone, start_test_master, within};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Requests `/` on one keep-alive connection until the server closes it; returns how many
/// were answered 200 and the first failure, if any.
async fn until_closed(
    address: SocketAddr,
    started: tokio::sync::mpsc::Sender<()>,
) -> (usize, Option<String>) {
    let mut client = KeepAliveClient::new(address);
    let mut answered = 0;
    for _ in 0..100_000 {
        match client.get("/").await {
            Ok(answer) if answer.status == 200 => {
                answered += 1;
                if answered == 20 {
                    let _ = started.send(()).await;
                }
                if answer.close {
                    return (answered, None);
                }
            }
            other => return (answered, Some(format!("{other:?}"))),
        }
    }
    (answered, Some("never closed".into()))
}

#[tokio::test]
async fn sigterm_under_keep_alive_load_answers_every_request_on_open_connections() {
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address")
    };
    let listen = address.to_string();
    let (mut master, mut lines, workers) = start_test_master(&[
        ("TEST_LISTEN", listen.as_str()),
        ("TEST_WORKER_EXE", "graceful_worker"),
    ])
    .await;
    let (started, mut running) = tokio::sync::mpsc::channel(8);
    let clients: Vec<_> = (0..6)
        .map(|_| tokio::spawn(until_closed(address, started.clone())))
        .collect();
    // Every client has its connection and is busy on it.
    within(10, "six clients under way", async {
        for _ in 0..6 {
            running.recv().await;
        }
    })
    .await;

    kill(
        Pid::from_raw(master.id().expect("pid") as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let mut total = 0;
    for client in clients {
        let (answered, failure) = within(20, "a client to be told to close", client)
            .await
            .expect("client");
        assert_eq!(failure, None, "after {answered} answers");
        total += answered;
    }
    assert!(total >= 120, "{total} answers");
    for _ in 0..2 {
        let line = lines.wait_for(20, "exit ").await;
        assert!(line.contains("code 0"), "{line}");
    }
    let status = within(20, "the master to exit", master.wait())
        .await
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    for pid in workers {
        assert!(process_gone(pid), "worker {pid} still running");
    }
}
