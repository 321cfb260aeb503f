//! A binary that forgets the worker branch: master and workers all call `setup_master`.
//! Prints `forked PID` for each worker and the error `setup_master` returns, then exits 2.
//!
//! In case `setup_master` ever succeeds in a worker again, a generation counter in the
//! environment keeps the test's process tree bounded (no fork past generation 2).

use cluster_core::{Respawn, Settings, setup_master};

const GENERATION: &str = "SETUP_MASTER_TEST_GENERATION";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let generation: u32 = std::env::var(GENERATION)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    // Manual: the test counts the first two workers' refusals; with the default respawn
    // their boot failures would be replaced until `max_boot_failures` stops the master.
    let cluster = match setup_master(Settings::new().respawn(Respawn::Manual)) {
        Ok(cluster) => cluster,
        Err(e) => {
            // One write, so the line does not interleave with the master's.
            let line = format!("generation {generation}: {e}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return std::process::ExitCode::from(2);
        }
    };
    if generation >= 2 {
        eprintln!("generation {generation}: not forking further");
        return std::process::ExitCode::from(3);
    }
    cluster.on_fork(|_, worker| println!("forked {}", worker.pid()));
    cluster.on_exit(|_, worker, exit| println!("exit {} {exit}", worker.pid()));
    let next = (generation + 1).to_string();
    for _ in 0..2 {
        if let Err(e) = cluster.fork(&[(GENERATION, &next)]) {
            eprintln!("fork: {e}");
            return std::process::ExitCode::from(1);
        }
    }
    match cluster.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}
