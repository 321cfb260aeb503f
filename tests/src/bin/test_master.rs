//! A master process for the tests that signal or kill the master itself. Forks
//! `TEST_WORKERS` (default 2) test workers listening on `TEST_LISTEN`, prints one line per
//! event to stdout, and runs until stopped. `TEST_STDIO=forward` captures the workers'
//! output and forwards it.
//!
//! Options for the tests of hostile workers: `TEST_SERIALIZATION` (`json`, `binary`),
//! `TEST_MAX_LISTENS` (`max_listens_per_worker`), `TEST_SCHEDULING=rr` (round-robin), `TEST_REFORK=1` (fork a replacement for
//! every worker that exits, in the `exit` callback), `TEST_RESPAWN=manual`
//! (`Respawn::Manual`: no replacement unless `TEST_REFORK`; default: the master's own), `TEST_PRINT_MESSAGES=1` (a line per user message, decoded as
//! `TestMsg`), `TEST_LOG=1` (the master's log lines on stdout too), `TEST_NOFILE`
//! (`Settings::nofile_limit`), `TEST_HEARTBEAT_MS` (the heartbeat timeout).
//!
//! For the hot upgrade tests: `TEST_WORKER_EXE` (a sibling binary to run as the worker
//! instead of `test_worker`), `TEST_WAIT_READY=1` (`Settings::wait_ready`),
//! `TEST_UPGRADE_TIMEOUT_MS` (`Settings::upgrade_timeout`), and for a new master started by
//! an upgrade only: `TEST_FAIL_AS_UPGRADE=1` (exit 1 at once), `TEST_HANG_AS_UPGRADE=1`
//! (fork workers with `READY_DELAY_MS=600000`: with `TEST_WAIT_READY` they never get ready).

use cluster_core::{Event, Respawn, Settings, Stdio, setup_master};
use cluster_tests::TestMsg;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let upgraded = cluster_core::upgrade::started_by_upgrade();
    if upgraded && std::env::var_os("TEST_FAIL_AS_UPGRADE").is_some() {
        eprintln!("started by an upgrade with TEST_FAIL_AS_UPGRADE: exit 1");
        return std::process::ExitCode::FAILURE;
    }
    let mut worker_exe = std::env::current_exe().expect("current_exe");
    worker_exe.set_file_name(std::env::var_os("TEST_WORKER_EXE").unwrap_or("test_worker".into()));
    let stop_ms: u64 = std::env::var("TEST_STOP_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let stdio = match std::env::var("TEST_STDIO").as_deref() {
        Ok("forward") => Stdio::Forward,
        _ => Stdio::Inherit,
    };
    if std::env::var_os("TEST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .init();
    }
    let mut settings = Settings::new()
        .exec(worker_exe)
        .stdio(stdio)
        .stop_timeout(std::time::Duration::from_millis(stop_ms));
    if let Some(serialization) = env_parsed("TEST_SERIALIZATION") {
        settings = settings.serialization(serialization);
    }
    if std::env::var("TEST_SCHEDULING").as_deref() == Ok("rr") {
        settings = settings.scheduling(cluster_core::Scheduling::RoundRobin);
    }
    if let Some(max) = env_parsed("TEST_MAX_LISTENS") {
        settings = settings.max_listens_per_worker(max);
    }
    let refork = std::env::var_os("TEST_REFORK").is_some();
    let print_messages = std::env::var_os("TEST_PRINT_MESSAGES").is_some();
    if let Some(limit) = std::env::var("TEST_NOFILE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings = settings.nofile_limit(limit);
    }
    if let Some(ms) = std::env::var("TEST_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings = settings.heartbeat_timeout(Some(std::time::Duration::from_millis(ms)));
    }
    if std::env::var("TEST_RESPAWN").as_deref() == Ok("manual") {
        settings = settings.respawn(Respawn::Manual);
    }
    if std::env::var_os("TEST_WAIT_READY").is_some() {
        settings = settings.wait_ready(true);
    }
    if let Some(ms) = env_parsed("TEST_UPGRADE_TIMEOUT_MS") {
        settings = settings.upgrade_timeout(std::time::Duration::from_millis(ms));
    }
    let fork_env: &[(&str, &str)] =
        if upgraded && std::env::var_os("TEST_HANG_AS_UPGRADE").is_some() {
            &[("READY_DELAY_MS", "600000")]
        } else {
            &[]
        };
    let cluster = match setup_master(settings) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!("master {}", std::process::id());
    cluster.on(move |cluster, event| match event {
        Event::Fork(w) => println!("fork {} {}", w.id(), w.pid()),
        Event::Online(w) => println!("online {} {}", w.id(), w.pid()),
        Event::Listening(w, address) => println!("listening {} {} {address}", w.id(), w.pid()),
        Event::ListeningUdp(w, address) => {
            println!("listening-udp {} {} {address}", w.id(), w.pid())
        }
        Event::Disconnect(w) => println!("disconnect {} {}", w.id(), w.pid()),
        Event::Exit(w, exit) => {
            println!(
                "exit {} {} {exit} after_disconnect={}",
                w.id(),
                w.pid(),
                w.exited_after_disconnect()
            );
            if refork {
                if let Err(e) = cluster.fork(fork_env) {
                    println!("refork failed: {e}");
                }
            }
        }
        Event::Message(w, message) if print_messages => match message.decode::<TestMsg>() {
            Ok(msg) => println!("message {} {} {}", w.id(), msg.kind, msg.data),
            Err(e) => println!("unreadable message {}: {e}", w.id()),
        },
        Event::Replacing(w, reason) => println!("replacing {} {} {reason}", w.id(), w.pid()),
        _ => {}
    });
    let workers: usize = std::env::var("TEST_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for _ in 0..workers {
        cluster.fork(fork_env).expect("fork");
    }
    match cluster.run().await {
        Ok(()) => {
            println!("master stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The environment variable `name`, parsed; `None` if unset, exits 2 if it does not parse.
fn env_parsed<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            eprintln!("{name}={value:?} does not parse");
            std::process::exit(2);
        }
    }
}
