//! Scheduling: with two workers, new connections from a single client are spread evenly,
//! both when the workers accept on the shared socket (tokio's accept loop alone gives most to
//! one worker) and when the master hands connections out in turn; round-robin work waits for
//! a worker's `ready()` when the cluster asks for it; a deaf worker's clients go to the
//! other worker.

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
    cluster.stop(cluster_core::StopMode::Graceful).await;
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
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

/// A worker whose runtime stops (it no longer reads its channel) holds no client: its
/// hand-over is taken back after the dispatch timeout and it gets no more until it answers.
#[tokio::test]
async fn round_robin_gives_a_deaf_workers_clients_to_the_other_worker() {
    use std::time::{Duration, Instant};
    let settings = worker_settings("serve")
        .env("TEST_LISTEN", "127.0.0.1:0")
        .scheduling(Scheduling::RoundRobin);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let healthy = cluster.fork(&[]).expect("fork");
    let deaf = cluster.fork(&[]).expect("fork");
    let address = cluster_tests::wait_listening(&mut events, 2).await;
    deaf.send(&cluster_tests::TestMsg::new("deaf", ""))
        .await
        .expect("send");
    wait_event(
        &mut events,
        10,
        "the deaf worker's last word",
        |e| match e {
            Event::Message(w, m) if w.id() == deaf.id() => m
                .decode::<cluster_tests::TestMsg>()
                .ok()
                .filter(|m| m.kind == "deaf")
                .map(drop),
            _ => None,
        },
    )
    .await;

    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(3), http_get(address, "/")).await;
        let waited = started.elapsed();
        let (status, body) = answer
            .unwrap_or_else(|_| panic!("request {i} hung for 3 s"))
            .expect("GET /");
        assert_eq!(status, 200);
        assert_eq!(body.trim(), healthy.pid().to_string(), "request {i}");
        slowest = slowest.max(waited);
    }
    eprintln!("slowest of 30 requests: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a client waited {slowest:?}"
    );
    assert!(deaf.missed_handovers() >= 1, "the miss is counted");
    assert_eq!(healthy.missed_handovers(), 0);
    deaf.kill(cluster_core::Signal::SIGKILL);
    cluster.stop(cluster_core::StopMode::Graceful).await;
}

/// Clients that queued up while no worker could take them are handed over several to a
/// frame (`Control::Connections`, answered together by `Control::ConnectionsTaken` for those
/// the server asked for): every one of them is answered, once, by a worker.
#[tokio::test]
async fn round_robin_answers_every_client_of_a_burst_handed_over_in_batches() {
    const CLIENTS: usize = 48;
    let settings = cluster_core::Settings::new()
        .exec(cluster_tests::graceful_worker_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .env("READY_DELAY_MS", "300")
        .scheduling(Scheduling::RoundRobin)
        .wait_ready(true);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    let workers = [
        cluster.fork(&[]).expect("fork"),
        cluster.fork(&[]).expect("fork"),
    ];
    let address = cluster_tests::wait_listening(&mut events, 2).await;
    // Queued in the kernel before any worker is ready: the master accepts them in bursts.
    let requests: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(async move { http_get(address, "/").await }))
        .collect();
    let pids: Vec<String> = workers.iter().map(|w| w.pid().to_string()).collect();
    let mut served: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let (status, body) = cluster_tests::within(20, "an answer", request)
            .await
            .expect("join")
            .expect("GET");
        assert_eq!(status, 200);
        let pid = body.trim().to_string();
        assert!(pids.contains(&pid), "answered by {pid}, not a worker");
        *served.entry(pid).or_default() += 1;
    }
    eprintln!("burst split: {served:?}");
    assert_eq!(served.values().sum::<usize>(), CLIENTS);
    cluster.stop(cluster_core::StopMode::Graceful).await;
}
