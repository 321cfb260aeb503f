//! Each heartbeat carries the worker's load: requests served and connections open, as the
//! master shows them (`Worker::load`, `clusterctl status`, metrics).

use std::time::Duration;

use cluster_tests::{GracefulCluster, KeepAliveClient, eventually, graceful_worker_exe};

#[tokio::test]
async fn heartbeats_report_requests_served_and_connections_open() {
    let settings = cluster_core::Settings::new()
        .exec(graceful_worker_exe())
        .env("TEST_LISTEN", "127.0.0.1:0")
        .heartbeat_timeout(Some(Duration::from_millis(500)))
        .stop_timeout(Duration::from_secs(10));
    let system = GracefulCluster::with_settings(settings, 2).await;
    let served = || -> u64 {
        system
            .cluster
            .workers()
            .iter()
            .filter_map(|w| w.load())
            .map(|l| l.served)
            .sum()
    };
    let open = || -> u64 {
        system
            .cluster
            .workers()
            .iter()
            .filter_map(|w| w.load())
            .map(|l| l.open_connections)
            .sum()
    };
    let mut client = KeepAliveClient::new(system.address);
    for _ in 0..25 {
        let answer = client.get("/").await.expect("GET /");
        assert_eq!(answer.status, 200);
    }
    // One keep-alive connection is held open; its 25 requests are counted.
    eventually(5, "25 requests and 1 open connection reported", || {
        served() >= 25 && open() == 1
    })
    .await;
    client.drop_connection();
    eventually(5, "no connection open any more", || open() == 0).await;
    system.cluster.stop(cluster_core::StopMode::Graceful).await;
}
