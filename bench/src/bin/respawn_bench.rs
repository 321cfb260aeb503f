//! Where the time goes between a worker's panic and its replacement's first answer (issue 13,
//! item 3).
//!
//! Each round starts a master of one worker (this same binary, `SCHEDULING` shared or
//! round-robin) with `RUST_LOG=cluster_timing=debug`, so the master and its workers log the
//! phases of `cluster_ipc::timing` with a `CLOCK_MONOTONIC` time. The driver asks `/panic` on
//! a new connection (the worker panics in a task tied to the request: a 500, then graceful's
//! disconnect), notes when the 500 arrived on the same clock, then opens a new connection
//! after another until one is answered by another pid: the replacement's first answer. With
//! one worker nobody else can accept, so that answer is the replacement's readiness. The
//! master is stopped and its log read; every phase is printed in ms after the 500.
//!
//! The times are wall-clock: on a loaded machine (other builds) they stretch; the medians of
//! several rounds are printed with the minimum and maximum.
//!
//! Run: `respawn_bench [ROUNDS] [shared|round-robin]` (default 10 shared). The server alone
//! (for `fault_bench`): `CLUSTER_BENCH_SERVE=1 PORT=P WORKERS=2 respawn_bench`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_bench::SERVE;
use cluster_ipc::clock::monotonic_ns;
use cluster_tests::KeepAliveClient;

/// The phases, in the order they happen: (who, phase). `old` is the panicking worker (id 1),
/// `new` its replacement (id 2).
const PHASES: &[(&str, &str, &str)] = &[
    (
        "old",
        "panic_reported",
        "master: the worker's panic report read",
    ),
    (
        "old",
        "disconnecting",
        "master: the worker's disconnect read",
    ),
    ("new", "fork", "master: fork of the replacement begins"),
    (
        "new",
        "spawned",
        "master: fork+exec returned (the new program runs)",
    ),
    ("new", "runtime_start", "worker: main, runtime being built"),
    ("new", "connected", "worker: handoff read, channel up"),
    (
        "new",
        "handlers_installed",
        "worker: signal handlers, reader task, `online` queued",
    ),
    ("new", "listen_asked", "worker: listen request sent"),
    ("new", "listen_request", "master: listen request read"),
    ("new", "listen_replied", "master: listen reply sent"),
    (
        "new",
        "listen_granted",
        "worker: listen reply read (or socket from the handoff)",
    ),
    ("new", "listening", "master: the worker's `listening` read"),
    ("new", "first_accept", "worker: first connection accepted"),
];

fn main() -> std::io::Result<()> {
    if std::env::var_os(SERVE).is_some() {
        return cluster_bench::serve();
    }
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
    let scheduling = args.get(2).cloned().unwrap_or_else(|| "shared".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut all: Vec<Vec<Option<f64>>> = Vec::new();
    let mut answers: Vec<f64> = Vec::new();
    for round in 0..rounds {
        match runtime.block_on(one_round(&scheduling)) {
            Ok((phases, answered)) => {
                let line: Vec<String> = PHASES
                    .iter()
                    .zip(&phases)
                    .map(|((_, name, _), t)| format!("{name}={}", ms(*t)))
                    .collect();
                eprintln!(
                    "round {}: {} first_answer={answered:.2}",
                    round + 1,
                    line.join(" ")
                );
                all.push(phases);
                answers.push(answered);
            }
            Err(e) => eprintln!("round {}: {e}", round + 1),
        }
    }
    println!(
        "respawn_bench: {scheduling}, 1 worker, {} rounds; ms after the panicking request's 500 (median [min..max])",
        answers.len()
    );
    println!(
        "| phase | ms after the 500 | step: ms since the previous phase of the replacement | what |"
    );
    println!("|---|---|---|---|");
    for (i, (who, name, what)) in PHASES.iter().enumerate() {
        let values: Vec<f64> = all.iter().filter_map(|p| p[i]).collect();
        // Per round, the time since the replacement's previous phase that happened.
        let steps: Vec<f64> = all
            .iter()
            .filter_map(|p| {
                let previous = (0..i)
                    .rev()
                    .filter(|j| PHASES[*j].0 == "new")
                    .find_map(|j| p[j])?;
                Some(p[i]? - previous)
            })
            .collect();
        let step = if *who == "new" {
            summary(steps)
        } else {
            "".into()
        };
        println!("| {who} {name} | {} | {step} | {what} |", summary(values));
    }
    let steps: Vec<f64> = all
        .iter()
        .zip(&answers)
        .filter_map(|(p, answered)| Some(answered - p[PHASES.len() - 1]?))
        .collect();
    println!(
        "| client first answer | {} | {} | the driver: first answer from the replacement |",
        summary(answers),
        summary(steps)
    );
    Ok(())
}

fn ms(t: Option<f64>) -> String {
    t.map_or("-".into(), |t| format!("{t:.2}"))
}

fn summary(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{median:.2} [{:.2}..{:.2}]",
        values[0],
        values[values.len() - 1]
    )
}

/// One master, one panic: each phase's time after the 500, and the replacement's first
/// answer's.
async fn one_round(scheduling: &str) -> Result<(Vec<Option<f64>>, f64), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::env::temp_dir().join(format!("respawn_bench.{}.{port}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut master = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(SERVE, "1")
        .env("PORT", port.to_string())
        .env("SCHEDULING", scheduling)
        .env("RUST_LOG", "cluster_timing=debug,warn")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = measure(address).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = master.wait();
    let (t_500, answered) = result?;
    let phases = read_phases(&log).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&log);
    let after = |t_ns: u64| (t_ns as f64 - t_500 as f64) / 1e6;
    let timed = PHASES
        .iter()
        .map(|(who, name, _)| {
            let id = if *who == "old" { 1 } else { 2 };
            phases
                .iter()
                .find(|(p, i, _)| p == name && *i == id)
                .map(|(_, _, t)| after(*t))
        })
        .collect();
    Ok((timed, after(answered)))
}

/// Waits for the worker, panics it; the 500's time and the replacement's first answer's.
async fn measure(address: SocketAddr) -> Result<(u64, u64), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let old = loop {
        if Instant::now() > deadline {
            return Err("the worker never answered".into());
        }
        match KeepAliveClient::closing(address).get("/").await {
            Ok(answer) if answer.status == 200 => break answer.pid(),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    // Let the start-up settle (heartbeats, logging) before the fault.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = KeepAliveClient::closing(address)
        .get("/panic")
        .await
        .map_err(|e| format!("the panicking request: {e}"))?;
    let t_500 = monotonic_ns();
    if answer.status != 500 {
        return Err(format!("the panicking request got {}", answer.status));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let probe = tokio::time::timeout(
            Duration::from_secs(2),
            KeepAliveClient::closing(address).get("/"),
        )
        .await;
        if let Ok(Ok(answer)) = probe {
            if answer.status == 200 && answer.pid() != old {
                return Ok((t_500, monotonic_ns()));
            }
        }
    }
    Err("no replacement answered within 10 s".into())
}

/// `(phase, id, t_ns)` of every `cluster_timing` line of the master's log.
fn read_phases(log: &std::path::Path) -> std::io::Result<Vec<(String, u32, u64)>> {
    let file = std::fs::File::open(log)?;
    let mut phases = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if !line.contains(cluster_ipc::timing::TARGET) {
            continue;
        }
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .map(|v| v.trim_matches('"').to_string())
        };
        let (Some(phase), Some(id), Some(t)) = (field("phase="), field("id="), field("t_ns="))
        else {
            continue;
        };
        if let (Ok(id), Ok(t)) = (id.parse(), t.parse()) {
            phases.push((phase, id, t));
        }
    }
    Ok(phases)
}
