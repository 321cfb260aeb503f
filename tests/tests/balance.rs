//! Balance: with two workers accepting on one shared socket, new connections from a single
//! client are spread evenly (tokio's accept loop alone gives most to one worker).

use std::collections::HashMap;

use cluster_tests::{GracefulCluster, http_get};

#[tokio::test]
async fn ten_thousand_connections_from_one_client_are_split_evenly() {
    let cluster = GracefulCluster::start(2, &[]).await;
    let mut served: HashMap<u32, usize> = HashMap::new();
    const CONNECTIONS: usize = 10_000;
    for _ in 0..CONNECTIONS {
        let (status, body) = http_get(cluster.address, "/").await.expect("GET /");
        assert_eq!(status, 200);
        *served.entry(body.trim().parse().expect("pid")).or_default() += 1;
    }
    let most = served.values().copied().max().unwrap_or(0);
    let share = most as f64 / CONNECTIONS as f64;
    eprintln!("split: {served:?}");
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(
        share <= 0.55,
        "one worker served {:.1}%: {served:?}",
        share * 100.0
    );
    cluster.cluster.disconnect().await;
}
