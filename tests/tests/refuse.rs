//! `Cluster::refuse_connections` on a plain cluster: while on, connections to the shared
//! socket are reset at once; once off, the next ones queue again and the next worker serves
//! them.

use std::time::Duration;

use cluster_core::{Event, Signal, setup_master};
use cluster_tests::{http_get, refused_within, wait_event, wait_listening, worker_settings};

#[tokio::test]
async fn refusing_resets_connections_and_stopping_it_lets_the_next_worker_serve() {
    let cluster =
        setup_master(worker_settings("serve").env("TEST_LISTEN", "127.0.0.1:0")).expect("setup");
    let mut events = cluster.events();
    let first = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    first.kill(Signal::SIGKILL);
    wait_event(&mut events, 10, "exit", |e| {
        matches!(e, Event::Exit(..)).then_some(())
    })
    .await;

    cluster.refuse_connections(true);
    for _ in 0..3 {
        assert!(refused_within(address, Duration::from_millis(100)).await);
    }
    assert_eq!(cluster.addresses(), vec![address]);

    cluster.refuse_connections(false);
    // Queued now, before any worker exists: the next worker answers it.
    let queued = tokio::spawn(http_get(address, "/"));
    cluster_tests::eventually(5, "the request in the accept queue", || {
        cluster_tests::accept_queue(address.port()) == Some(1)
    })
    .await;
    let second = cluster.fork(&[]).expect("fork");
    let (status, body) = cluster_tests::within(10, "the queued request", queued)
        .await
        .expect("join")
        .expect("answered");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), second.pid().to_string());
    cluster.stop(cluster_core::StopMode::Graceful).await;
}
