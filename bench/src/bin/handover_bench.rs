//! Round-robin hand-over benchmark (not a test): what each hand-over costs the master and
//! the worker. A cluster of 2 workers in `Scheduling::RoundRobin` answering their pid through
//! `graceful::serve`; load from the master process: `CLIENTS` clients opening a new
//! connection per request (`Connection: close`: one hand-over per request), then the same
//! number of keep-alive clients. Prints one table row, labelled by the first argument, with
//! the CPU time the workers and the master process (its clients included) spent per
//! `Connection: close` request: less sensitive to a busy machine than requests per second.
//!
//! It uses only API that predates the dispatch timeout, so the same file builds against an
//! older commit for a side-by-side run (see docs/BENCHMARKS.md).
//!
//! Run: `cargo run --release -p cluster-bench --bin handover_bench LABEL [SECONDS]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_core::{Event, Scheduling, Settings, setup_master};
use cluster_tests::KeepAliveClient;
use http_body_util::Full;
use hyper::Response;

const CLIENTS: usize = 8;

fn main() {
    if cluster_worker::is_worker() {
        let runtime = cluster_worker::runtime().expect("runtime");
        runtime.block_on(worker());
    } else {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(master());
    }
}

async fn worker() {
    let address: SocketAddr = std::env::var("BENCH_ADDR")
        .expect("BENCH_ADDR")
        .parse()
        .expect("address");
    let listener = cluster_worker::incoming(address).await.expect("incoming");
    let pid = Bytes::from(std::process::id().to_string());
    let service = graceful::service_fn(move |_| {
        let pid = pid.clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(pid))) }
    });
    graceful::serve(listener, service).await.expect("serve");
}

/// Requests per second and sorted latencies of `CLIENTS` clients for `seconds`.
async fn load(address: SocketAddr, seconds: f64, close: bool) -> (f64, Vec<Duration>, usize) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = if close {
                    KeepAliveClient::closing(address)
                } else {
                    KeepAliveClient::new(address)
                };
                let (mut latencies, mut failed) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match client.get("/").await.ok().and_then(|a| a.pid()) {
                        Some(_) => latencies.push(start.elapsed()),
                        None => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut all, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, f) = task.await.expect("client");
        all.extend(latencies);
        failed += f;
    }
    all.sort();
    (all.len() as f64 / seconds, all, failed)
}

/// CPU time, in nanoseconds, all threads of process `pid` have run.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn micros(sorted: &[Duration], percent: usize) -> f64 {
    sorted
        .get(sorted.len() * percent / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

async fn master() {
    let label = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "this build".into());
    let seconds: f64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3.0);
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let settings = Settings::new()
        .exec(std::env::current_exe().expect("exe"))
        .env("BENCH_ADDR", address.to_string())
        .scheduling(Scheduling::RoundRobin);
    let cluster = setup_master(settings).expect("setup");
    let mut events = cluster.events();
    for _ in 0..2 {
        cluster.fork(&[]).expect("fork");
    }
    let mut listening = 0;
    while listening < 2 {
        if let Some(Event::Listening(..)) = events.next().await {
            listening += 1;
        }
    }
    let workers: Vec<u32> = cluster.workers().iter().map(|w| w.pid()).collect();
    let cpu = || {
        (
            workers.iter().map(|pid| cpu_ns(*pid)).sum::<u64>(),
            cpu_ns(std::process::id()),
        )
    };
    let before = cpu();
    let (close_rate, close_latencies, close_failed) = load(address, seconds, true).await;
    let after = cpu();
    let requests = (close_rate * seconds).max(1.0);
    let per_request = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e3 / requests;
    let (keep_rate, _, keep_failed) = load(address, seconds, false).await;
    println!(
        "| {label} | {close_rate:.0} | {:.0} µs | {:.0} µs | {:.1} µs | {:.1} µs | {keep_rate:.0} | {} |",
        micros(&close_latencies, 50),
        micros(&close_latencies, 99),
        per_request(before.0, after.0),
        per_request(before.1, after.1),
        close_failed + keep_failed
    );
    cluster.disconnect().await;
}
