//! The signals an operator may send a master, and what each one asks for.
//!
//! Both masters ([`crate::Cluster::run`] and [`crate::pm::Master::run`]) install the same
//! set when they are made, before the first fork: from then on none of these signals can end
//! the master by its default action (a closed terminal's SIGHUP, a stray `kill -USR2`, a
//! `systemctl reload` were outages before). The table of meanings is `docs/SIGNALS.md`.
//!
//! Handlers only record the signal (tokio's handler writes a byte to a pipe); the master's
//! loop receives it as a [`SignalRequest`] and does the work.
//!
//! SIGPIPE is not in the set: the Rust runtime ignores it already (a broken pipe is an
//! `EPIPE` error), and a handler would turn every write to a broken log pipe into a wake-up.
//!
//! Signals that report a fault of the master itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//! SIGABRT, SIGTRAP, SIGSYS) keep their default action: a master that faulted must not go on.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal to the master asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalRequest {
    /// SIGTERM: stop gracefully (workers drain, then the master exits 0).
    StopGraceful,
    /// SIGINT, SIGQUIT: stop fast (workers are killed).
    StopFast,
    /// SIGHUP: replace every worker, one at a time, each only after its replacement is ready.
    Reload,
    /// SIGUSR1: reopen log files; passed on to every worker.
    ReopenLogs,
    /// SIGUSR2: the hot upgrade of the master (see [`crate::Cluster::upgrade`]).
    Upgrade,
    /// SIGTTIN: one worker more.
    ScaleUp,
    /// SIGTTOU: one worker less.
    ScaleDown,
    /// Any other signal whose default action would end the master: logged and ignored.
    Ignored(&'static str),
}

/// Every signal with a meaning for the master, in the order they are looked at.
const HANDLED: &[(&str, i32, SignalRequest)] = {
    use SignalRequest::*;
    use nix::libc;
    &[
        ("SIGTERM", libc::SIGTERM, StopGraceful),
        ("SIGINT", libc::SIGINT, StopFast),
        ("SIGQUIT", libc::SIGQUIT, StopFast),
        ("SIGHUP", libc::SIGHUP, Reload),
        ("SIGUSR1", libc::SIGUSR1, ReopenLogs),
        ("SIGUSR2", libc::SIGUSR2, Upgrade),
        ("SIGTTIN", libc::SIGTTIN, ScaleUp),
        ("SIGTTOU", libc::SIGTTOU, ScaleDown),
        ("SIGWINCH", libc::SIGWINCH, Ignored("SIGWINCH")),
        ("SIGALRM", libc::SIGALRM, Ignored("SIGALRM")),
        ("SIGVTALRM", libc::SIGVTALRM, Ignored("SIGVTALRM")),
        ("SIGPROF", libc::SIGPROF, Ignored("SIGPROF")),
        ("SIGIO", libc::SIGIO, Ignored("SIGIO")),
        ("SIGPWR", libc::SIGPWR, Ignored("SIGPWR")),
        ("SIGSTKFLT", libc::SIGSTKFLT, Ignored("SIGSTKFLT")),
        ("SIGXCPU", libc::SIGXCPU, Ignored("SIGXCPU")),
        ("SIGXFSZ", libc::SIGXFSZ, Ignored("SIGXFSZ")),
    ]
};

/// The master's signal handlers, installed together.
pub(crate) struct MasterSignals {
    streams: Vec<(Signal, SignalRequest)>,
}

impl MasterSignals {
    /// Installs a handler for every signal in the table. Must run inside a tokio runtime
    /// with its I/O driver enabled.
    pub(crate) fn install() -> std::io::Result<MasterSignals> {
        let streams = HANDLED
            .iter()
            .map(|&(name, number, request)| {
                signal(SignalKind::from_raw(number))
                    .map(|stream| (stream, request))
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{name}: {e}")))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(MasterSignals { streams })
    }

    /// The next signal's request, in table order when several are pending (a stop is seen
    /// before a reload that arrived with it).
    pub(crate) async fn recv(&mut self) -> SignalRequest {
        std::future::poll_fn(|cx| {
            for (stream, request) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*request);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Logs a signal the master does nothing with.
pub(crate) fn log_ignored(request: SignalRequest) {
    match request {
        SignalRequest::Ignored(name) => tracing::warn!("{name}: ignored"),
        other => tracing::warn!("{other:?}: ignored"),
    }
}

/// Passes SIGUSR1 on to every worker that is online: a worker's runtime catches it before it
/// reports online, while a program that never spoke to the master might die of it.
pub(crate) fn pass_reopen_logs(workers: impl IntoIterator<Item = crate::Worker>) {
    tracing::info!("SIGUSR1: passed on to every online worker (reopen log files)");
    for worker in workers {
        if (crate::WorkerState::Online..crate::WorkerState::Dead).contains(&worker.state()) {
            worker.signal(crate::Signal::SIGUSR1);
        }
    }
}
