//! Metrics cost benchmark (not a test): requests per second of a pm group of 2 workers
//! (Shared scheduling) under 8 keep-alive clients, with the metrics endpoint off, and on
//! while scraped every 100 ms (a Prometheus scrape interval is usually 15 s), in interleaved
//! rounds. The same binary is master and worker.
//!
//! Run: `cargo run --release -p cluster-bench --bin metrics_bench [SECONDS] [ROUNDS]`

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_core::StopMode;
use cluster_core::pm::{GroupEvent, GroupOptions, Master};
use cluster_tests::{Load, http_get};
use http_body_util::Full;
use hyper::Response;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if cluster_worker::is_worker() {
        runtime.block_on(worker());
    } else {
        runtime.block_on(master());
    }
}

async fn worker() {
    let listener = cluster_worker::group_incoming()
        .await
        .expect("incoming")
        .pop()
        .expect("an address");
    if let Some(worker) = cluster_worker::Worker::current() {
        let _ = worker.ready().await;
    }
    let service = graceful::service_fn(|_| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    graceful::serve(listener, service).await.expect("serve");
}

/// One round's requests per second.
async fn round(metrics: bool, seconds: f64) -> f64 {
    let master = Master::new();
    let mut events = master.events();
    let looping = master.clone();
    tokio::spawn(async move { looping.run().await });
    master
        .register(
            "web",
            GroupOptions::new()
                .listen("127.0.0.1:0".parse().expect("addr"))
                .children(2)
                .exec(std::env::current_exe().expect("exe")),
        )
        .expect("register");
    let endpoint = metrics.then(|| {
        master
            .metrics_address("127.0.0.1:0".parse().expect("addr"))
            .expect("metrics")
    });
    master.dispatch();
    let mut ready = 0;
    let mut address = None;
    while ready < 2 {
        if let Some(GroupEvent::Ready { worker, .. }) = events.recv().await {
            ready += 1;
            address = worker.addresses().first().copied();
        }
    }
    let load = Load::start(address.expect("address"), 8);
    let scraper = endpoint.map(|endpoint| {
        tokio::spawn(async move {
            loop {
                match http_get(endpoint, "/metrics").await {
                    Ok((200, _)) => {}
                    other => panic!("scrape failed: {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    if let Some(scraper) = scraper {
        assert!(!scraper.is_finished(), "the scraper failed");
        scraper.abort();
    }
    let answered = load.finish().await;
    let rate = answered as f64 / started.elapsed().as_secs_f64();
    master.stop(StopMode::Graceful).await;
    rate
}

async fn master() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4.0);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    println!("| round | metrics off req/s | metrics on req/s (scraped every 100 ms) |");
    println!("|---|---|---|");
    let (mut off_total, mut on_total) = (0.0, 0.0);
    for n in 1..=rounds {
        let off = round(false, seconds).await;
        let on = round(true, seconds).await;
        off_total += off;
        on_total += on;
        println!("| {n} | {off:.0} | {on:.0} |");
    }
    let (off, on) = (off_total / rounds as f64, on_total / rounds as f64);
    println!(
        "| mean | {off:.0} | {on:.0} ({:+.1}%) |",
        (on - off) / off * 100.0
    );
}
