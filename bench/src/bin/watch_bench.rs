//! Watchdog and recycling benchmark (not a test). The same binary is master and worker
//! (`graceful::serve` on `cluster_worker::runtime()`: one thread per worker); the master
//! process also runs the load: keep-alive clients hammering `GET /` the whole time.
//!
//! - `hang [N] [TIMEOUT_MS]`: 2 workers, `heartbeat_timeout` TIMEOUT_MS (default 1000); N
//!   times (default 10) a new connection sends `/block`, whose handler blocks the worker's
//!   runtime with `std::thread::sleep`. Measures per hang: hang → `Replacing`, hang →
//!   replacement listening, hang → replacement answers a new connection, hang → the hung
//!   worker's exit (SIGABRT); and the requests lost with the hung worker.
//! - `recycle [N] [MAX_REQUESTS]`: 2 workers, `max_requests` MAX_REQUESTS (default 50) with
//!   jitter MAX_REQUESTS/2, recycled back to back under the load until N (default 10,000)
//!   have exited; prints the master's RSS and descriptors every N/10 recycles, and the
//!   requests answered and failed.
//!
//! Run: `RUST_BACKTRACE=0 cargo run --release -p cluster-bench --bin watch_bench -- hang 10`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_core::{Cluster, Event, EventStream, ReplaceReason, Settings, setup_master};
use cluster_tests::{KeepAliveClient, open_fds, rss_kib};
use http_body_util::Full;
use hyper::{Request, Response};

fn main() {
    if cluster_worker::is_worker() {
        cluster_worker::runtime()
            .expect("runtime")
            .block_on(worker());
    } else {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(master());
    }
}

async fn worker() {
    graceful::install(graceful::Options::new().kill_timeout(Duration::from_secs(10)))
        .expect("install");
    let listener = cluster_worker::incoming("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("incoming");
    let service = graceful::service_fn(|request: Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/block" {
            std::thread::sleep(Duration::from_secs(60));
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            std::process::id().to_string(),
        ))))
    });
    graceful::serve(listener, service).await.expect("serve");
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn master() {
    match std::env::args().nth(1).as_deref() {
        Some("hang") => hang(arg(2, 10), Duration::from_millis(arg(3, 1000))).await,
        Some("recycle") => recycle(arg(2, 10_000), arg(3, 50)).await,
        _ => eprintln!("usage: watch_bench hang [N] [TIMEOUT_MS] | recycle [N] [MAX_REQUESTS]"),
    }
}

/// Two workers with the seed's dispatch (fork on `disconnect`); returns the cluster, its
/// events and the address once both listen.
async fn start(settings: Settings) -> (Cluster, EventStream, SocketAddr) {
    let cluster = setup_master(settings).expect("setup");
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
    let mut address = None;
    while address.is_none() {
        if let Some(Event::Listening(_, a)) = events.next().await {
            address = Some(a);
        }
    }
    loop {
        if let Some(Event::Listening(..)) = events.next().await {
            break;
        }
    }
    (cluster, events, address.expect("address"))
}

/// Keep-alive clients counting answers and failures until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(address: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut client = KeepAliveClient::new(address);
                    while !stop.load(Ordering::Relaxed) {
                        match client.get("/").await.map(|a| a.status) {
                            Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            clients,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            let _ = client.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

async fn hang(hangs: u64, timeout: Duration) {
    let settings = Settings::new().heartbeat_timeout(Some(timeout));
    let (cluster, mut events, address) = start(settings).await;
    let load = Load::start(address, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut to_verdict, mut to_listening, mut to_serving, mut to_exit) =
        (vec![], vec![], vec![], vec![]);
    let mut lost = Vec::new();
    for _ in 0..hangs {
        let failed_before = load.failed.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut blocker = KeepAliveClient::new(address);
        let blocked = tokio::spawn(async move { blocker.get("/block").await.is_err() });
        let (mut hung, mut new_pid, mut exited) = (None, None, false);
        while hung.is_none() || new_pid.is_none() || !exited {
            match events.next().await.expect("events") {
                Event::Replacing(w, ReplaceReason::Unresponsive { .. }) => {
                    hung = Some(w.pid());
                    to_verdict.push(start.elapsed());
                }
                Event::Listening(w, _) if hung.is_some() => {
                    new_pid = Some(w.pid());
                    to_listening.push(start.elapsed());
                }
                Event::Exit(w, exit) if Some(w.pid()) == hung => {
                    assert!(exit.signal.is_some(), "killed: {exit}");
                    to_exit.push(start.elapsed());
                    exited = true;
                }
                _ => {}
            }
        }
        assert!(
            blocked.await.expect("blocked request"),
            "it died with its worker"
        );
        let serving = loop {
            if let Ok(answer) = KeepAliveClient::new(address).get("/").await {
                if answer.pid() == new_pid {
                    break start.elapsed();
                }
            }
        };
        to_serving.push(serving);
        lost.push(load.failed.load(Ordering::Relaxed) - failed_before);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, failed) = load.finish().await;
    cluster.disconnect().await;
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{hangs} hangs, heartbeat_timeout {timeout:?}, 4 keep-alive clients: {ok} answered, \
         {failed} failed (lost with the hung worker: max {} per hang)",
        lost.iter().max().copied().unwrap_or(0)
    );
    println!("| measure | p50 | max |");
    println!("|---|---|---|");
    for (name, samples) in [
        ("hang → `Replacing` (unresponsive)", &mut to_verdict),
        ("hang → replacement listening", &mut to_listening),
        (
            "hang → replacement answers a new connection",
            &mut to_serving,
        ),
        ("hang → hung worker exited (SIGABRT)", &mut to_exit),
    ] {
        println!(
            "| {name} | {} | {} |",
            ms(percentile(samples, 50)),
            ms(percentile(samples, 100))
        );
    }
}

async fn recycle(recycles: u64, max_requests: u64) {
    let settings = Settings::new()
        .max_requests(max_requests)
        .max_requests_jitter(max_requests / 2);
    let (cluster, mut events, address) = start(settings).await;
    let load = Load::start(address, 4);
    let started = Instant::now();
    println!("| recycles | master RSS | master fds | elapsed |");
    println!("|---|---|---|---|");
    let report = |done: u64| {
        println!(
            "| {done} | {} KiB | {} | {:.0} s |",
            rss_kib(),
            open_fds(),
            started.elapsed().as_secs_f64()
        );
    };
    report(0);
    let mut done = 0;
    while done < recycles {
        if let Some(Event::Exit(worker, exit)) = events.next().await {
            assert!(
                worker.replace_reason().is_some(),
                "only recycled workers exit"
            );
            assert_eq!(exit.code, Some(0), "recycled workers drain: {exit}");
            done += 1;
            if done % (recycles / 10).max(1) == 0 {
                report(done);
            }
        }
    }
    let (ok, failed) = load.finish().await;
    println!(
        "{recycles} recycles (max_requests {max_requests} + jitter {}) under 4 keep-alive \
         clients: {ok} requests answered, {failed} failed",
        max_requests / 2
    );
    cluster.disconnect().await;
}
