//! CPU time per request and per new connection, per component (issue 13, item 4): the
//! master and the workers, in Shared and RoundRobin scheduling, keep-alive and
//! `Connection: close`, over a fixed number of requests.
//!
//! For each case a master with 2 workers (this same binary) serves on a fresh port; after a
//! warm-up, the driver (one thread) sends REQUESTS requests from CLIENTS clients at once, and
//! the CPU time each process used meanwhile is read from `/proc/PID/task/*/schedstat`
//! (on-CPU ns, user and system; `/proc/PID/stat`'s ticks as a cross-check). CPU time does not
//! depend on what else the machine runs, unlike a rate, so this works on a loaded machine
//! (within cache and frequency effects). Loopback TCP work is charged partly to the sender's
//! context, so the workers' figures include some of the kernel's work for the client.
//!
//! Before the load, the master's idle CPU over IDLE_SECONDS is read too (timers, heartbeats).
//!
//! Prints a table and the figures derived from it (new connections/s one master core can
//! hand over in RoundRobin mode).
//!
//! Run: `cost_bench [REQUESTS] [CLIENTS]` (default 20000 requests, 8 clients).

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cluster_bench::{SERVE, cpu_ns, cpu_ticks_ns};
use cluster_tests::{KeepAliveClient, children_of};

const WORKERS: usize = 2;
const WARM_UP: usize = 2000;
const IDLE_SECONDS: u64 = 2;
/// Worker counts for the idle master's cost.
const IDLE_WORKERS: [usize; 3] = [1, 4, 16];
/// How long the idle master is watched.
const IDLE_WATCH: Duration = Duration::from_secs(6);
/// Messages one worker sends the master in the message case.
const MESSAGES: u64 = 200_000;

struct Case {
    /// `shared`, `round-robin`, or `single` (the app alone, no cluster).
    scheduling: &'static str,
    close: bool,
}

/// What one case measured.
struct Measured {
    requests: usize,
    elapsed: Duration,
    master_ns: u64,
    master_ticks_ns: u64,
    workers_ns: Vec<u64>,
    workers_ticks_ns: u64,
    idle_master_ns_per_s: f64,
}

fn main() -> std::io::Result<()> {
    if std::env::var_os(SERVE).is_some() {
        return cluster_bench::serve();
    }
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(20_000);
    let clients: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(8).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cases = [
        Case {
            scheduling: "single",
            close: false,
        },
        Case {
            scheduling: "single",
            close: true,
        },
        Case {
            scheduling: "shared",
            close: false,
        },
        Case {
            scheduling: "shared",
            close: true,
        },
        Case {
            scheduling: "round-robin",
            close: false,
        },
        Case {
            scheduling: "round-robin",
            close: true,
        },
    ];
    println!(
        "cost_bench: {requests} requests from {clients} clients per case, {WORKERS} workers; CPU µs per request (schedstat; /proc/PID/stat ticks in brackets)"
    );
    println!(
        "| scheduling | connections | master µs/req | workers µs/req (sum; single: the process) | split between workers | master idle µs/s | wall s (loaded machine) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rr_close_master = None;
    let mut idle = Vec::new();
    for case in &cases {
        let measured = match runtime.block_on(one_case(case, requests, clients)) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{} close={}: {e}", case.scheduling, case.close);
                continue;
            }
        };
        let per = |ns: u64| ns as f64 / 1000.0 / measured.requests as f64;
        let workers: u64 = measured.workers_ns.iter().sum();
        let split: Vec<String> = measured
            .workers_ns
            .iter()
            .map(|w| format!("{:.0}%", *w as f64 * 100.0 / workers.max(1) as f64))
            .collect();
        println!(
            "| {} | {} | {:.2} [{:.1}] | {:.2} [{:.1}] | {} | {:.0} | {:.2} |",
            case.scheduling,
            if case.close { "close" } else { "keep-alive" },
            per(measured.master_ns),
            per(measured.master_ticks_ns),
            per(workers),
            per(measured.workers_ticks_ns),
            split.join(" / "),
            measured.idle_master_ns_per_s / 1000.0,
            measured.elapsed.as_secs_f64(),
        );
        if case.scheduling == "round-robin" && case.close {
            rr_close_master = Some(per(measured.master_ns));
        }
        if case.scheduling != "single" {
            idle.push(measured.idle_master_ns_per_s);
        }
    }
    match runtime.block_on(messages(MESSAGES)) {
        Ok(ns) => {
            println!();
            println!(
                "Messages from a worker: the master spends {:.2} µs of CPU per message ({MESSAGES} one-byte messages, JSON, nothing listening for them): one master core reads at most {:.0} messages/s.",
                ns / 1000.0,
                1e9 / ns
            );
        }
        Err(e) => eprintln!("messages: {e}"),
    }
    if let Some(us) = rr_close_master {
        println!();
        println!(
            "RoundRobin: the master spends {us:.2} µs of CPU per new connection (accept, the hand-over frame with its descriptor, the worker's answer): one master core hands over at most {:.0} new connections/s.",
            1e6 / us
        );
    }
    if !idle.is_empty() {
        let mean = idle.iter().sum::<f64>() / idle.len() as f64;
        println!(
            "Idle master with {WORKERS} workers, after load: {:.0} µs of CPU per second.",
            mean / 1000.0,
        );
    }
    println!();
    println!("Idle master by number of workers (default heartbeat: every 6 s per worker):");
    println!("| workers | master µs of CPU per s, idle |");
    println!("|---|---|");
    for workers in IDLE_WORKERS {
        match runtime.block_on(idle_master(workers)) {
            Ok(ns) => println!("| {workers} | {:.0} |", ns / 1000.0),
            Err(e) => eprintln!("idle with {workers} workers: {e}"),
        }
    }
    Ok(())
}

async fn one_case(case: &Case, requests: usize, clients: usize) -> Result<Measured, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut master = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(SERVE, "1")
        .env("PORT", port.to_string())
        .env("SCHEDULING", case.scheduling)
        .env("WORKERS", WORKERS.to_string())
        .env("RUST_LOG", "warn")
        .envs((case.scheduling == "single").then_some(("SINGLE", "1")))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let master_pid = master.id();
    let result = measure(case, address, master_pid, requests, clients).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = master.wait();
    result
}

async fn measure(
    case: &Case,
    address: SocketAddr,
    master: u32,
    requests: usize,
    clients: usize,
) -> Result<Measured, String> {
    // The single process is its own (only) worker; it has no master.
    let single = case.scheduling == "single";
    let expected = if single { 0 } else { WORKERS };
    serving(master, expected, address, Duration::from_secs(10)).await?;
    load(address, case.close, WARM_UP, clients).await?;
    let workers = if single {
        vec![master]
    } else {
        children_of(master)
    };
    if workers.len() != expected.max(1) {
        return Err(format!("{} workers, not {expected}", workers.len()));
    }

    let idle_before = cpu_ns(master);
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let idle_master_ns_per_s = (cpu_ns(master) - idle_before) as f64 / IDLE_SECONDS as f64;

    let before = (
        cpu_ns(master),
        cpu_ticks_ns(master),
        workers.iter().map(|w| cpu_ns(*w)).collect::<Vec<_>>(),
        workers.iter().map(|w| cpu_ticks_ns(*w)).sum::<u64>(),
    );
    let started = Instant::now();
    load(address, case.close, requests, clients).await?;
    let elapsed = started.elapsed();
    let after_workers: Vec<u64> = workers.iter().map(|w| cpu_ns(*w)).collect();
    let (master_ns, master_ticks_ns) = if single {
        (0, 0)
    } else {
        (cpu_ns(master) - before.0, cpu_ticks_ns(master) - before.1)
    };
    Ok(Measured {
        requests,
        elapsed,
        master_ns,
        master_ticks_ns,
        workers_ns: after_workers
            .iter()
            .zip(&before.2)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        workers_ticks_ns: workers.iter().map(|w| cpu_ticks_ns(*w)).sum::<u64>() - before.3,
        idle_master_ns_per_s,
    })
}

/// `requests` GETs from `clients` clients at once (keep-alive, or a new connection each).
async fn load(
    address: SocketAddr,
    close: bool,
    requests: usize,
    clients: usize,
) -> Result<(), String> {
    let left = Rc::new(Cell::new(requests));
    let failed = Rc::new(Cell::new(0usize));
    let local = tokio::task::LocalSet::new();
    for _ in 0..clients {
        let left = left.clone();
        let failed = failed.clone();
        local.spawn_local(async move {
            let mut client = if close {
                KeepAliveClient::closing(address)
            } else {
                KeepAliveClient::new(address)
            };
            while left.get() > 0 {
                left.set(left.get() - 1);
                match client.get("/").await {
                    Ok(answer) if answer.status == 200 => {}
                    _ => {
                        failed.set(failed.get() + 1);
                        client.drop_connection();
                    }
                }
            }
        });
    }
    local.await;
    match failed.get() {
        0 => Ok(()),
        n => Err(format!("{n} of {requests} requests failed")),
    }
}

/// The master's CPU ns per message a worker sends it (`/messages/N` on a Shared cluster).
async fn messages(count: u64) -> Result<f64, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut master = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(SERVE, "1")
        .env("PORT", port.to_string())
        .env("WORKERS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = master.id();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !KeepAliveClient::closing(address)
            .get("/")
            .await
            .is_ok_and(|a| a.status == 200)
        {
            if Instant::now() > deadline {
                return Err("the worker never answered".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut client = KeepAliveClient::new(address);
        let _ = client.get("/messages/1000").await;
        let before = cpu_ns(pid);
        let answer = client
            .get(&format!("/messages/{count}"))
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(format!("/messages answered {}", answer.status));
        }
        // The last messages may still be in the channel: wait until the master is idle.
        let mut last = cpu_ns(pid);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = cpu_ns(pid);
            if now - last < 2_000_000 {
                break;
            }
            last = now;
        }
        Ok((cpu_ns(pid) - before) as f64 / count as f64)
    }
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = master.wait();
    result
}

/// Waits, at most `within`, until `master` has `workers` children and `address` answers.
async fn serving(
    master: u32,
    workers: usize,
    address: SocketAddr,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let up = children_of(master).len() == workers
            && KeepAliveClient::closing(address)
                .get("/")
                .await
                .is_ok_and(|a| a.status == 200);
        if up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the workers never answered".into())
}

/// The master's CPU ns per second while `workers` workers idle (after they all answer).
async fn idle_master(workers: usize) -> Result<f64, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut master = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(SERVE, "1")
        .env("PORT", port.to_string())
        .env("WORKERS", workers.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = master.id();
    let result = async {
        serving(pid, workers, address, Duration::from_secs(20)).await?;
        // Let every worker finish starting (online, listening, first heartbeat).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cpu_ns(pid);
        tokio::time::sleep(IDLE_WATCH).await;
        Ok((cpu_ns(pid) - before) as f64 / IDLE_WATCH.as_secs_f64())
    }
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = master.wait();
    result
}
