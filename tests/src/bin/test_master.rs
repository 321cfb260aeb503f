//! A master process for the tests that signal or kill the master itself. Forks
//! `TEST_WORKERS` (default 2) test workers listening on `TEST_LISTEN`, prints one line per
//! event to stdout, and runs until stopped. `TEST_HEARTBEAT_MS` sets the heartbeat timeout;
//! `TEST_LOG=1` writes the master's log to stdout too.

use cluster_core::{Event, Settings, setup_master};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut worker_exe = std::env::current_exe().expect("current_exe");
    worker_exe.set_file_name("test_worker");
    let stop_ms: u64 = std::env::var("TEST_STOP_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    if std::env::var("TEST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .init();
    }
    let mut settings = Settings::new()
        .exec(worker_exe)
        .stop_timeout(std::time::Duration::from_millis(stop_ms));
    if let Some(ms) = std::env::var("TEST_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings = settings.heartbeat_timeout(Some(std::time::Duration::from_millis(ms)));
    }
    let cluster = match setup_master(settings) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!("master {}", std::process::id());
    cluster.on(|_, event| match event {
        Event::Fork(w) => println!("fork {} {}", w.id(), w.pid()),
        Event::Online(w) => println!("online {} {}", w.id(), w.pid()),
        Event::Listening(w, address) => println!("listening {} {} {address}", w.id(), w.pid()),
        Event::Disconnect(w) => println!("disconnect {} {}", w.id(), w.pid()),
        Event::Replacing(w, reason) => println!("replacing {} {} {reason}", w.id(), w.pid()),
        Event::Exit(w, exit) => println!(
            "exit {} {} {exit} after_disconnect={}",
            w.id(),
            w.pid(),
            w.exited_after_disconnect()
        ),
        _ => {}
    });
    let workers: usize = std::env::var("TEST_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for _ in 0..workers {
        cluster.fork(&[]).expect("fork");
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
