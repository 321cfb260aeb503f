//! Shared pieces of the seed examples: the log-line date, the HTTP app, and the seed's
//! graceful log lines.

pub mod app;
mod date;

pub use date::js_date;

/// Library warnings (tracing) to stderr; the examples print the seed's own lines.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
}

/// The exit code of a master's `run()`: 0, or 1 with the error printed.
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[master:{}] {e}", std::process::id());
            std::process::ExitCode::FAILURE
        }
    }
}

/// The seed's line for each step of graceful's exit.
pub fn print_graceful_step(step: graceful::Step) {
    let pid = std::process::id();
    match step {
        graceful::Step::ServersClosed(n) => {
            println!("[{}] [worker:{pid}] close {n} servers!", js_date())
        }
        graceful::Step::WorkerDisconnected => {
            println!("[{}] [worker:{pid}] worker disconnect!", js_date())
        }
        graceful::Step::KillTimeout => {
            println!("[{}] [worker:{pid}] kill timeout, exit now.", js_date())
        }
        _ => {}
    }
}
