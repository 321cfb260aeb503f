//! `Cluster::refuse_connections` on a plain cluster: while on, connections to the shared
//! socket are reset at once; once off, the next ones queue again and the next worker serves
//! them.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use cluster_core::{Event, Scheduling, Signal, setup_master};
use cluster_tests::{http_get, refused_within, wait_event, wait_listening, worker_settings};

#[tokio::test]
async fn refusing_resets_connections_and_stopping_it_lets_the_next_worker_serve() {
    refuse_then_serve(Scheduling::Shared).await;
}

/// The master's dispatcher, which accepts in this mode, resets what it holds too.
#[tokio::test]
async fn refusing_in_round_robin_mode_resets_what_the_dispatcher_holds() {
    refuse_then_serve(Scheduling::RoundRobin).await;
}

async fn refuse_then_serve(scheduling: Scheduling) {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(scheduling);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let first = cluster.fork(&[]).expect("fork");
    let address = wait_listening(&mut events, 1).await;
    first.kill(Signal::SIGKILL);
    wait_event(&mut events, 10, "exit", |e| {
        matches!(e, Event::Exit(..)).then_some(())
    })
    .await;

    // In RoundRobin mode the master's dispatcher accepts this one and holds it, with no
    // worker to hand it to.
    let held = if scheduling == Scheduling::RoundRobin {
        let mut held = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        cluster_tests::eventually(5, "the dispatcher holding it", || {
            cluster_tests::accept_queue(address.port()) == Some(0)
        })
        .await;
        Some(held)
    } else {
        None
    };

    cluster.refuse_connections(true);
    if let Some(mut held) = held {
        let mut first = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), held.read(&mut first)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the held connection reset: {read:?}"
        );
    }
    for _ in 0..3 {
        assert!(refused_within(address, Duration::from_millis(100)).await);
    }
    assert_eq!(cluster.addresses(), vec![address]);

    cluster.refuse_connections(false);
    // Queued now, before any worker exists: the next worker answers it.
    let queued = tokio::spawn(http_get(address, "/"));
    if scheduling == Scheduling::Shared {
        cluster_tests::eventually(5, "the request in the accept queue", || {
            cluster_tests::accept_queue(address.port()) == Some(1)
        })
        .await;
    }
    let second = cluster.fork(&[]).expect("fork");
    let (status, body) = cluster_tests::within(10, "the queued request", queued)
        .await
        .expect("join")
        .expect("answered");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), second.pid().to_string());
    cluster.stop(cluster_core::StopMode::Graceful).await;
}
