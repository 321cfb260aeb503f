//! `cluster`: runs N workers of a program that knows nothing of this project on sockets the
//! master binds and passes with systemd's protocol (descriptors from 3, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`, `LISTEN_PID`), under the pm engine of `cluster-core` (restart policy,
//! rolling reload on SIGHUP gated on readiness, SIGTTIN/SIGTTOU, graceful stop on SIGTERM,
//! pidfile, control socket for `clusterctl`, output captured with `[name:id:pid]`).
//!
//! ```text
//! cluster run -w 4 -l 127.0.0.1:8080 [-l unix:/run/app.sock] -- ./server --its --args
//! cluster start cluster.toml     # several groups from a file
//! cluster check cluster.toml     # validate the file, start nothing
//! ```
//!
//! It owns the command line and the configuration file only; the supervision is
//! `cluster_core::pm` with `cluster_core::foreign` workers. See `docs/CLUSTER_CLI.md`.

#[cfg(not(target_os = "linux"))]
compile_error!("cluster-cli supports Linux only (see the README)");

mod config;
mod plan;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cluster_core::foreign::Readiness;

use crate::plan::{GroupPlan, Plan};

/// Runs N workers of an unmodified server program on shared sockets.
#[derive(Parser)]
#[command(name = "cluster", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one group of workers of PROGRAM.
    Run(RunArgs),
    /// Runs every group of a configuration file.
    Start {
        /// The TOML file (see docs/CLUSTER_CLI.md).
        file: PathBuf,
    },
    /// Checks a configuration file without starting anything; exits 1 on an error.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// How many workers (default: one per CPU).
    #[arg(short = 'w', long = "workers")]
    workers: Option<usize>,
    /// A socket to pass, `[NAME=]HOST:PORT` or `[NAME=]unix:PATH`; repeat for more
    /// (descriptors 3, 4, … in this order; NAME goes to LISTEN_FDNAMES, default: the group
    /// name).
    #[arg(short = 'l', long = "listen", value_name = "[NAME=]ADDRESS")]
    listen: Vec<String>,
    /// The program tells it is ready with sd_notify READY=1 on its NOTIFY_SOCKET.
    #[arg(long, conflicts_with = "ready_after")]
    notify: bool,
    /// Otherwise a worker is ready once alive this long (milliseconds; default 1000).
    #[arg(long, value_name = "MS")]
    ready_after: Option<u64>,
    /// How long a reload waits for the new workers to be ready (milliseconds).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    ready_timeout: u64,
    /// After SIGTERM, a worker still running this long is killed (milliseconds).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    stop_timeout: u64,
    /// Exits before this much uptime count towards giving up (milliseconds).
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    min_uptime: u64,
    /// Heartbeat timeout: a worker that sent WATCHDOG=1 and then is silent this long is
    /// aborted and replaced (milliseconds; needs sd_notify in the program).
    #[arg(long, value_name = "MS")]
    watchdog: Option<u64>,
    /// The group's name, in output prefixes and `clusterctl status`.
    #[arg(long, default_value = "app")]
    name: String,
    /// Write the master's pid here.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// Serve `clusterctl` on this Unix socket.
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]")]
    program: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = match cli.command {
        Command::Run(args) => run_plan(args),
        Command::Start { file } => config::load(&file).map_err(|e| e.to_string()),
        Command::Check { file } => {
            return match config::load(&file) {
                Ok(plan) => {
                    let groups: Vec<String> = plan
                        .groups
                        .iter()
                        .map(|g| format!("{} ({} x {})", g.name, g.instances, g.exec.display()))
                        .collect();
                    say(&format!("{}: ok: {}", file.display(), groups.join(", ")));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say(&e.to_string());
                    ExitCode::FAILURE
                }
            };
        }
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            say(&format!("cluster: {e}"));
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(&format!("cluster: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(plan::run(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("cluster: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The plan of `cluster run`'s flags.
fn run_plan(args: RunArgs) -> Result<Plan, String> {
    let (program, rest) = args
        .program
        .split_first()
        .ok_or("no program given after --")?;
    let exec = plan::resolve_program(std::path::Path::new(program))?;
    let mut group = GroupPlan::new(args.name.clone(), exec);
    group.args = rest.to_vec();
    if let Some(workers) = args.workers {
        if workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        group.instances = workers;
    }
    for spec in &args.listen {
        group
            .listen
            .push(plan::parse_listen(spec, &args.name).map_err(|e| format!("--listen {e}"))?);
    }
    group.ready = if args.notify {
        Readiness::Notify
    } else {
        Readiness::After(Duration::from_millis(args.ready_after.unwrap_or(1_000)))
    };
    group.ready_timeout = Duration::from_millis(args.ready_timeout.max(1));
    group.stop_timeout = Duration::from_millis(args.stop_timeout.max(1));
    group.policy.min_uptime = Duration::from_millis(args.min_uptime);
    group.watchdog = args.watchdog.map(Duration::from_millis);
    Ok(Plan {
        groups: vec![group],
        pidfile: args.pidfile,
        control_socket: args.control_socket,
    })
}

/// The master's own log lines (`RUST_LOG`, default: info for this project's crates).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,cluster_core=info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// One line on stderr; a closed stderr is no reason to fail.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
