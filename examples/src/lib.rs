//! Shared pieces of the seed examples: the log-line date, the HTTP app, and the seed's
//! graceful log lines.
//!
//! Linux only, as the cluster crates it builds on.

#[cfg(not(target_os = "linux"))]
compile_error!("examples supports Linux only (see the README)");

pub mod app;
mod date;

pub use date::js_date;

/// Library logs (tracing) to stderr, filtered by `RUST_LOG` (default `warn`), with colours
/// only when stderr is a terminal; the examples print the seed's own lines with [`outln!`]
/// and [`errln!`]. A log line that cannot be written is dropped, never fatal.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `println!` that never panics: a line that cannot be written (stdout is a pipe whose
/// reader is gone, a full disk) is dropped. `println!` panics there, and a master that
/// panics takes every worker with it.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics: see [`outln!`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// The exit code of a master's `run()`: 0, or 1 with the error printed.
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            crate::errln!("[master:{}] {e}", std::process::id());
            std::process::ExitCode::FAILURE
        }
    }
}

/// The seed's line for each step of graceful's exit.
pub fn print_graceful_step(step: graceful::Step) {
    let pid = std::process::id();
    match step {
        graceful::Step::ServersClosed(n) => {
            crate::outln!("[{}] [worker:{pid}] close {n} servers!", js_date())
        }
        graceful::Step::WorkerDisconnected => {
            crate::outln!("[{}] [worker:{pid}] worker disconnect!", js_date())
        }
        graceful::Step::KillTimeout => {
            crate::outln!("[{}] [worker:{pid}] kill timeout, exit now.", js_date())
        }
        _ => {}
    }
}
