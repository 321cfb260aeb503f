//! `cluster_worker::listen` composes with axum's own server loop: workers running
//! `axum::serve(listener, router).with_graceful_shutdown(worker.closing())` share the
//! master's socket, and a worker told to disconnect finishes its request in flight, exits
//! with code 0, and leaves the socket to the other worker.

use std::time::Duration;

use cluster_core::{Event, Settings, setup_master};
use cluster_tests::{KeepAliveClient, http_get, sibling_exe, wait_event, wait_listening, within};

#[tokio::test]
async fn an_axum_serve_worker_shares_the_socket_and_drains_its_request_on_disconnect() {
    let cluster = setup_master(
        Settings::new()
            .exec(sibling_exe("axum_serve_worker"))
            .env("TEST_LISTEN", "127.0.0.1:0")
            .stop_timeout(Duration::from_secs(10)),
    )
    .expect("setup");
    let mut events = cluster.events();
    let workers = [
        cluster.fork(&[]).expect("fork"),
        cluster.fork(&[]).expect("fork"),
    ];
    let address = wait_listening(&mut events, 2).await;
    let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();

    // A slow request in flight on one worker (it tells the master when it has started).
    let mut client = KeepAliveClient::new(address);
    let slow = tokio::spawn(async move { client.get("/slow").await });
    let busy = wait_event(&mut events, 10, "slow-started", |event| match event {
        Event::Message(worker, message) => message
            .decode::<cluster_tests::TestMsg>()
            .ok()
            .filter(|m| m.kind == "slow-started")
            .map(|_| worker.clone()),
        _ => None,
    })
    .await;
    assert!(pids.contains(&busy.pid()));

    // The master asks it to disconnect: axum stops accepting and finishes the request.
    busy.disconnect();
    let answer = within(10, "the slow answer", slow)
        .await
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.pid(), Some(busy.pid()));
    let exit = wait_event(&mut events, 10, "its exit", |event| match event {
        Event::Exit(worker, exit) if worker.pid() == busy.pid() => Some(*exit),
        _ => None,
    })
    .await;
    assert_eq!(exit.code, Some(0), "drained and returned from main: {exit}");
    assert!(busy.exited_after_disconnect());

    // The shared socket stays with the master: the other worker answers every new connection.
    let other = pids
        .iter()
        .copied()
        .find(|p| *p != busy.pid())
        .expect("other");
    for _ in 0..20 {
        let (status, body) = http_get(address, "/").await.expect("GET /");
        assert_eq!((status, body.trim()), (200, other.to_string().as_str()));
    }
    cluster.disconnect().await;
}
