//! Scheduling: with two workers, new connections from a single client are spread evenly,
//! both when the workers accept on the shared socket (tokio's accept loop alone gives most to
//! one worker) and when the master hands connections out in turn; round-robin work waits for
//! a worker's `ready()` when the cluster asks for it.

use std::collections::HashMap;

use cluster_core::{Event, Scheduling, setup_master};
use cluster_tests::{http_get, wait_event, worker_settings};

async fn split(scheduling: Scheduling) {
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(scheduling);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    cluster.fork(&[]).expect("fork");
    let address = cluster_tests::wait_listening(&mut events, 2).await;
    let mut served: HashMap<u32, usize> = HashMap::new();
    const CONNECTIONS: usize = 10_000;
    for _ in 0..CONNECTIONS {
        let (status, body) = http_get(address, "/").await.expect("GET /");
        assert_eq!(status, 200);
        *served.entry(body.trim().parse().expect("pid")).or_default() += 1;
    }
    let most = served.values().copied().max().unwrap_or(0);
    let share = most as f64 / CONNECTIONS as f64;
    eprintln!("{scheduling:?} split: {served:?}");
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(
        share <= 0.55,
        "one worker served {:.1}%: {served:?}",
        share * 100.0
    );
    cluster.disconnect().await;
}

#[tokio::test]
async fn shared_socket_splits_ten_thousand_connections_from_one_client_evenly() {
    split(Scheduling::Shared).await;
}

#[tokio::test]
async fn round_robin_splits_ten_thousand_connections_from_one_client_evenly() {
    split(Scheduling::RoundRobin).await;
}

#[tokio::test]
async fn round_robin_gives_no_connection_to_a_worker_before_it_is_ready() {
    use std::time::Instant;
    let settings = cluster_core::Settings::new()
        .exec(cluster_tests::graceful_worker_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("READY_DELAY_MS", "600")
        .scheduling(Scheduling::RoundRobin)
        .wait_ready(true);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    cluster.fork(&[]).expect("fork");
    let address = wait_event(&mut events, 10, "listening", |e| match e {
        Event::Listening(_, a) => Some(*a),
        _ => None,
    })
    .await;
    let asked = Instant::now();
    let request = tokio::spawn(async move { http_get(address, "/").await });
    wait_event(&mut events, 10, "ready", |e| {
        matches!(e, Event::Ready(_)).then_some(())
    })
    .await;
    let ready_after = asked.elapsed();
    let (status, _) = cluster_tests::within(10, "the answer", request)
        .await
        .expect("join")
        .expect("GET");
    let answered_after = asked.elapsed();
    assert_eq!(status, 200);
    assert!(
        ready_after >= std::time::Duration::from_millis(400),
        "{ready_after:?}"
    );
    assert!(
        answered_after >= ready_after,
        "answered before ready: {answered_after:?} < {ready_after:?}"
    );
    cluster.disconnect().await;
}
