//! Scheduling benchmark (not a test): for each scheduling mode, requests per second and
//! latency under keep-alive load (32 connections opened at once), how those live
//! connections and their requests split between the workers, then with a new connection per
//! request (the cost of the master's dispatch in RoundRobin and Sticky mode) and how those
//! split, and the duration of a zero-downtime reload. The same binary is master and worker.
//! Clients connect from 20 loopback addresses (127.0.0.1–20), so sticky scheduling has
//! clients to spread.
//!
//! Run: `cargo run --release -p cluster-bench --bin sched_bench [SECONDS] [WORKERS]`
//! (default 5 s, 2 workers).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_core::pm::{GroupEvent, GroupOptions, Master};
use cluster_core::{Scheduling, Settings, StopMode};
use cluster_tests::KeepAliveClient;
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
    let pid = Bytes::from(std::process::id().to_string());
    let service = graceful::service_fn(move |_| {
        let pid = pid.clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(pid))) }
    });
    graceful::serve(listener, service).await.expect("serve");
}

#[derive(Default)]
struct Load {
    requests: usize,
    failed: usize,
    latencies: Vec<Duration>,
    by_pid: HashMap<u32, usize>,
    /// Keep-alive clients: the worker that answered each connection's first request.
    connections_by_pid: HashMap<u32, usize>,
}

/// Keep-alive connections, opened at once (what wrk does in `bench/compare.sh`).
const KEEP_ALIVE_CLIENTS: usize = 32;

/// Client addresses the load comes from.
const SOURCES: u8 = 20;

/// The `n`th client address: 127.0.0.1 to 127.0.0.20, round and round.
fn source(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, (n % SOURCES as usize) as u8 + 1))
}

/// Runs `clients` clients until `stop` is set or `seconds` pass. Keep-alive client `i`
/// connects from [`source`]`(i)`; a closing client from the next address at each request.
async fn load(
    address: SocketAddr,
    clients: usize,
    seconds: f64,
    close: bool,
    stop: Arc<AtomicBool>,
) -> Load {
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut client = KeepAliveClient::new(address).from(source(i));
                let mut sent = i;
                let mut out = Load::default();
                while !stop.load(Ordering::Relaxed) {
                    if close {
                        client = KeepAliveClient::closing(address).from(source(sent));
                        sent += clients;
                    }
                    let start = Instant::now();
                    match client.get("/").await.ok().and_then(|a| a.pid()) {
                        Some(pid) => {
                            if !close && out.requests == 0 {
                                out.connections_by_pid.insert(pid, 1);
                            }
                            out.requests += 1;
                            out.latencies.push(start.elapsed());
                            *out.by_pid.entry(pid).or_default() += 1;
                        }
                        None => out.failed += 1,
                    }
                }
                out
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = Load::default();
    for task in tasks {
        let part = task.await.expect("client");
        total.requests += part.requests;
        total.failed += part.failed;
        total.latencies.extend(part.latencies);
        for (pid, n) in part.by_pid {
            *total.by_pid.entry(pid).or_default() += n;
        }
        for (pid, n) in part.connections_by_pid {
            *total.connections_by_pid.entry(pid).or_default() += n;
        }
    }
    total.latencies.sort();
    total
}

/// Waits until every worker has answered a request (a worker reports ready just before it
/// starts serving): the keep-alive connections are opened once, at the start, and a worker
/// not accepting yet would get none of them.
async fn all_answer(address: SocketAddr, workers: usize) -> HashSet<u32> {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while seen.len() < workers && Instant::now() < deadline {
        sent += 1;
        // From each client address in turn: Sticky sends one address to one worker.
        if let Some(pid) = KeepAliveClient::closing(address)
            .from(source(sent))
            .get("/")
            .await
            .ok()
            .and_then(|a| a.pid())
        {
            seen.insert(pid);
        }
    }
    assert_eq!(seen.len(), workers, "not every worker answers");
    seen
}

/// Counts per worker, largest first: `17 / 15`.
fn counts(by_pid: &HashMap<u32, usize>) -> String {
    let mut counts: Vec<usize> = by_pid.values().copied().collect();
    counts.sort_by(|a, b| b.cmp(a));
    counts
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Each worker's share, largest first.
fn share(by_pid: &HashMap<u32, usize>) -> String {
    share_in(by_pid, &by_requests(by_pid))
}

/// The workers, most requests first.
fn by_requests(by_pid: &HashMap<u32, usize>) -> Vec<u32> {
    let mut order: Vec<u32> = by_pid.keys().copied().collect();
    order.sort_by_key(|pid| std::cmp::Reverse(by_pid[pid]));
    order
}

/// Each worker's share, in `order` (to read two splits side by side, worker by worker).
fn share_in(by_pid: &HashMap<u32, usize>, order: &[u32]) -> String {
    let total: usize = by_pid.values().sum();
    order
        .iter()
        .map(|pid| by_pid.get(pid).copied().unwrap_or(0) as f64 * 100.0 / total.max(1) as f64)
        .map(|s| format!("{s:.1}%"))
        .collect::<Vec<_>>()
        .join(" / ")
}

async fn master() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5.0);
    let workers: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let exe = std::env::current_exe().expect("exe");
    println!(
        "| mode | keep-alive req/s | p50 | p99 | live connections | keep-alive split | worker CPU split | new-connection req/s | p50 | p99 | new-connection split | failed | reload |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, scheduling) in [
        ("Shared", Scheduling::Shared),
        (
            "ReusePort",
            Scheduling::ReusePort {
                accept_queued_loss: true,
            },
        ),
        ("RoundRobin", Scheduling::RoundRobin),
        ("Sticky", Scheduling::Sticky),
    ] {
        let master = Master::new();
        let mut events = master.events();
        let looping = master.clone();
        tokio::spawn(async move { looping.run().await });
        master
            .register(
                "web",
                GroupOptions::new()
                    .listen("127.0.0.1:0".parse().expect("addr"))
                    .children(workers)
                    .reload_stable(Duration::from_millis(100))
                    .settings(Settings::new().scheduling(scheduling))
                    .exec(&exe),
            )
            .expect("register");
        master.dispatch();
        let mut ready = 0;
        let mut address = None;
        while ready < workers {
            if let Some(GroupEvent::Ready { worker, .. }) = events.recv().await {
                ready += 1;
                address = worker.addresses().first().copied();
            }
        }
        let address = address.expect("address");
        let pids = all_answer(address, workers).await;
        let cpu_before: HashMap<u32, u64> = pids
            .iter()
            .map(|&pid| (pid, cluster_bench::cpu_ns(pid)))
            .collect();
        let never = || Arc::new(AtomicBool::new(false));
        let keep_alive = load(address, KEEP_ALIVE_CLIENTS, seconds, false, never()).await;
        // The CPU each worker got meanwhile (in the order of the request split): with
        // connections split evenly, the requests split as the CPU does (the load generator
        // shares the cores).
        let cpu: HashMap<u32, usize> = cpu_before
            .iter()
            .map(|(&pid, &before)| {
                let used = cluster_bench::cpu_ns(pid).saturating_sub(before);
                (pid, (used / 1000) as usize)
            })
            .collect();
        let fresh_seconds = seconds.min(3.0);
        let fresh = load(address, 1, fresh_seconds, true, never()).await;
        let pct = |load: &Load, p: usize| {
            load.latencies[load.latencies.len() * p / 100].as_secs_f64() * 1e6
        };

        // Reload under the same keep-alive load.
        let stop = Arc::new(AtomicBool::new(false));
        let background = tokio::spawn(load(address, 4, 60.0, false, stop.clone()));
        let started = Instant::now();
        master.reload("web");
        loop {
            match events.recv().await {
                Some(GroupEvent::Reloaded { .. }) => break,
                Some(GroupEvent::ReloadFailed { reason, .. }) => panic!("reload failed: {reason}"),
                _ => {}
            }
        }
        let reload = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let during_reload = background.await.expect("reload load");

        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {} | {} | {} | {:.0} | {:.0} µs | {:.0} µs | {} | {} | {:.0} ms |",
            keep_alive.requests as f64 / seconds,
            pct(&keep_alive, 50),
            pct(&keep_alive, 99),
            counts(&keep_alive.connections_by_pid),
            share(&keep_alive.by_pid),
            share_in(&cpu, &by_requests(&keep_alive.by_pid)),
            fresh.requests as f64 / fresh_seconds,
            pct(&fresh, 50),
            pct(&fresh, 99),
            share(&fresh.by_pid),
            keep_alive.failed + fresh.failed + during_reload.failed,
            reload.as_secs_f64() * 1000.0
        );
        master.stop(StopMode::Graceful).await;
    }
}
