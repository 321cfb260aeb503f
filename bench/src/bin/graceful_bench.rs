//! Graceful-exit benchmark (not a test): under steady keep-alive load on a 2-worker cluster,
//! makes a worker panic again and again, and measures per panic: panic → 500 delivered,
//! panic → replacement listening, panic → first answer from the replacement, panic → old
//! worker exit, and requests that failed. The old worker's exit comes after the replacement
//! answers because it drains its keep-alive clients (each gets `Connection: close`). The same binary is master and worker.
//!
//! Run: `cargo run --release -p cluster-bench --bin graceful_bench [PANICS]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_core::{Event, EventStream, Settings, setup_master};
use cluster_tests::KeepAliveClient;
use http_body_util::Full;
use hyper::{Request, Response};

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if cluster_worker::is_worker() {
        runtime.block_on(worker());
    } else {
        runtime.block_on(master());
    }
}

async fn worker() {
    graceful::install(
        graceful::Options::new()
            .kill_timeout(Duration::from_secs(10))
            .on_error(|_| {}),
    )
    .expect("install");
    let listener = cluster_worker::listen("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("listen");
    let service = graceful::service_fn(|request: Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/panic" {
            panic!("benchmark panic");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            std::process::id().to_string(),
        ))))
    });
    graceful::serve(listener, service).await.expect("serve");
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

async fn listening(events: &mut EventStream) -> (u32, SocketAddr) {
    loop {
        if let Some(Event::Listening(w, a)) = events.next().await {
            return (w.pid(), a);
        }
    }
}

async fn master() {
    let panics: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let cluster = setup_master(Settings::new()).expect("setup");
    let mut events = cluster.events();
    let dispatch = cluster.clone();
    let mut dispatch_events = cluster.events();
    tokio::spawn(async move {
        while let Some(event) = dispatch_events.next().await {
            if let Event::Disconnect(_) = event {
                let _ = dispatch.fork(&[]);
            }
        }
    });
    cluster.fork(&[]).expect("fork");
    cluster.fork(&[]).expect("fork");
    let (_, address) = listening(&mut events).await;
    listening(&mut events).await;

    // Steady load: 8 keep-alive clients, each remembering the pids that answered it.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut client = KeepAliveClient::new(address);
            while !stop.load(Ordering::Relaxed) {
                match client.get("/").await.map(|a| a.status) {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut to_500, mut to_listening, mut to_serving, mut to_exit) =
        (vec![], vec![], vec![], vec![]);
    let mut failed_per_panic = Vec::new();
    for _ in 0..panics {
        let failed_before = failed.load(Ordering::Relaxed);
        let start = Instant::now();
        let status = KeepAliveClient::new(address)
            .get("/panic")
            .await
            .expect("an answer to /panic")
            .status;
        assert_eq!(status, 500);
        to_500.push(start.elapsed());
        let (new_pid, _) = listening(&mut events).await;
        to_listening.push(start.elapsed());
        loop {
            if let Event::Exit(_, exit) = events.next().await.expect("events") {
                assert_eq!(exit.code, Some(0), "drained exit");
                to_exit.push(start.elapsed());
                break;
            }
        }
        // New connections go to either worker: probe until the replacement answers one.
        let serving = loop {
            if let Ok(answer) = KeepAliveClient::new(address).get("/").await {
                if answer.status == 200 && answer.pid() == Some(new_pid) {
                    break start.elapsed();
                }
            }
            if start.elapsed() > Duration::from_secs(5) {
                panic!("the replacement did not answer within 5 s");
            }
        };
        to_serving.push(serving);
        failed_per_panic.push(failed.load(Ordering::Relaxed) - failed_before);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    cluster.disconnect().await;

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{panics} panics under 8 keep-alive clients; {} requests answered 200, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!("| measure | p50 | p99 |");
    println!("|---|---|---|");
    for (name, samples) in [
        ("panic → 500 delivered", &mut to_500),
        ("panic → replacement listening", &mut to_listening),
        (
            "panic → replacement answers a new connection",
            &mut to_serving,
        ),
        ("panic → old worker exited (code 0)", &mut to_exit),
    ] {
        println!(
            "| {name} | {} | {} |",
            ms(percentile(samples, 50)),
            ms(percentile(samples, 99))
        );
    }
    println!(
        "failed requests per panic: max {}",
        failed_per_panic.iter().max().copied().unwrap_or(0)
    );
}
