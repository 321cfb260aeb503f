//! Pieces the benchmarks share: a test server (a master and its workers from one binary)
//! and CPU-time readings from `/proc`.
//!
//! Linux only, as the cluster crates it builds on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

/// Set in a benchmark's child: the process serves (as master, or as a worker) instead of
/// driving the benchmark.
pub const SERVE: &str = "CLUSTER_BENCH_SERVE";

/// The master (`WORKERS` workers, default 1, replaced by the default respawn; `SCHEDULING`
/// `shared` or `round-robin`) or, in a worker, the app on `127.0.0.1:PORT`: it answers its
/// pid, `/panic` panics in a task tied to the request (a 500, then graceful's exit), and
/// `/messages/N` sends N small messages (a `u8`) to the master before answering.
/// With `SINGLE` set, the app alone (no master): the single-process ceiling. Logs go to
/// stderr, filtered by `RUST_LOG`.
pub fn serve() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .init();
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default)
    };
    let port = number("PORT", 1337) as u16;
    // `SINGLE=1`: the app alone, no cluster (it binds by itself, on a multi-thread runtime).
    if cluster_worker::is_worker() || std::env::var_os("SINGLE").is_some() {
        return cluster_worker::runtime()?.block_on(worker(port));
    }
    let scheduling = match std::env::var("SCHEDULING").as_deref() {
        Ok("round-robin") => cluster_core::Scheduling::RoundRobin,
        _ => cluster_core::Scheduling::Shared,
    };
    let workers = number("WORKERS", 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let settings = cluster_core::Settings::new()
            .exec(std::env::current_exe()?)
            .scheduling(scheduling);
        let cluster = cluster_core::setup_master(settings).map_err(std::io::Error::other)?;
        for _ in 0..workers {
            cluster.fork(&[]).map_err(std::io::Error::other)?;
        }
        cluster.run().await.map_err(std::io::Error::other)
    })
}

async fn worker(port: u16) -> std::io::Result<()> {
    let incoming = cluster_worker::incoming(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    graceful::install(graceful::Options::new().kill_timeout(Duration::from_secs(2)))
        .map_err(std::io::Error::other)?;
    let pid = Bytes::from(std::process::id().to_string());
    graceful::serve(
        incoming,
        graceful::service_fn(move |request: Request<hyper::body::Incoming>| {
            let pid = pid.clone();
            async move {
                let path = request.uri().path();
                if path == "/panic" {
                    graceful::spawn(async { panic!("bench: the panic") });
                    std::future::pending::<()>().await;
                }
                if let Some(count) = path.strip_prefix("/messages/") {
                    let count: u64 = count.parse().unwrap_or(0);
                    if let Some(worker) = cluster_worker::Worker::current() {
                        for _ in 0..count {
                            if worker.send(&1u8).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Ok::<_, Infallible>(Response::new(Full::new(pid)))
            }
        }),
    )
    .await
}

/// CPU time process `pid` has used, in ns: the sum of its threads' on-CPU time
/// (`/proc/PID/task/*/schedstat`, first field; user and system). A thread that ended is
/// no longer counted, so compare readings of long-lived threads only.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of process `pid` from `/proc/PID/stat` (utime + stime, every thread that ever
/// ran included), in ns; its resolution is the clock tick (10 ms).
pub fn cpu_ticks_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // `/proc` counts in USER_HZ, 100 per second on every Linux architecture we run on.
    ticks * 10_000_000
}
