//! The seed's `dispatch.js`: a master that forks two workers, forks a replacement on every
//! `disconnect`, and logs every `exit`.

use std::process::ExitCode;

use cluster_core::{Scheduling, Settings, Stdio, setup_master};
use examples::js_date;

#[tokio::main]
async fn main() -> ExitCode {
    examples::init_logging();
    examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut worker = std::env::current_exe()?;
    worker.set_file_name("connect_with_cluster_worker");
    // SCHEDULING=round-robin makes the master hand connections out (default: shared socket);
    // SCHEDULING=sticky too, each client address always to the same worker.
    let scheduling = match std::env::var("SCHEDULING").as_deref() {
        Ok("round-robin") => Scheduling::RoundRobin,
        Ok("sticky") => Scheduling::Sticky,
        _ => Scheduling::Shared,
    };
    // WORKER_OUTPUT=forward: the master captures the workers' output and forwards it line by
    // line as `[web:ID:PID] ...` (default: the workers write to the master's stdout/stderr).
    let stdio = match std::env::var("WORKER_OUTPUT").as_deref() {
        Ok("forward") => Stdio::Forward,
        _ => Stdio::Inherit,
    };
    let settings = Settings::new()
        .exec(worker)
        .scheduling(scheduling)
        .stdio(stdio)
        .name("web");
    let cluster = setup_master(settings)?;

    cluster.fork(&[])?;
    cluster.fork(&[])?;

    cluster.on_disconnect(|cluster, worker| {
        if let Ok(new) = cluster.fork(&[]) {
            examples::errln!(
                "[{}] [master:{}] wroker:{} disconnect! new worker:{} fork",
                js_date(),
                std::process::id(),
                worker.pid(),
                new.pid()
            );
        }
    });

    cluster.on_exit(|_, worker, _| {
        examples::errln!(
            "[{}] [master:{}] wroker:{} exit!",
            js_date(),
            std::process::id(),
            worker.pid()
        );
    });

    cluster.run().await?;
    Ok(())
}
