//! A worker that keeps axum's own server loop: `axum::serve` on `cluster_worker::listen`'s
//! socket (the master's, shared), ended by `with_graceful_shutdown(worker.closing())`, as in
//! `cluster_worker::listen`'s docs. `GET /` answers the pid; `GET /slow` tells the master
//! `slow-started` (a `TestMsg`), then answers the pid 500 ms later. Listens on `TEST_LISTEN`.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use cluster_tests::TestMsg;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::var("TEST_LISTEN").map_err(std::io::Error::other)?;
    let app = Router::new()
        .route("/", get(|| async { std::process::id().to_string() }))
        .route("/slow", get(slow));
    let listener = cluster_worker::listen(address.parse().map_err(std::io::Error::other)?).await?;
    let worker = cluster_worker::Worker::current(); // None when run alone
    let _serving = worker.as_ref().map(|w| w.register_server());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            match worker {
                Some(worker) => worker.closing().await,
                None => std::future::pending().await,
            }
        })
        .await
}

async fn slow() -> String {
    if let Some(worker) = cluster_worker::Worker::current() {
        let _ = worker.send(&TestMsg::new("slow-started", "")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::process::id().to_string()
}
