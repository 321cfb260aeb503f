//! Replacing a worker on purpose: aborting an unresponsive one, and recycling one through
//! the hand-over path. Both emit `Replacing` with the reason, then `Disconnect` at once so
//! the dispatch (or the pm group) forks the replacement.

use std::time::Duration;

use crate::signal::Signal;

use crate::cluster::Shared;
use crate::events::Event;
use crate::supervise::emit_disconnect;
use crate::worker::{Worker, WorkerState};

/// How long an unresponsive worker has after SIGABRT (time to write a core) before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Why the master replaced a worker on purpose. The worker's exit is then never a crash,
/// whatever its status (see [`Worker::replace_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplaceReason {
    /// Its runtime sent no heartbeat for longer than `heartbeat_timeout`: it got SIGABRT,
    /// and SIGKILL if still there 5 s later.
    Unresponsive {
        /// How long it had been silent.
        silent: Duration,
    },
    /// It served its `max_requests` (with jitter).
    MaxRequests {
        /// Requests (or connections) served when it asked.
        served: u64,
    },
    /// Its resident memory went past `max_memory`.
    MaxMemory {
        /// Its RSS, in bytes.
        rss: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// It reached `max_age`.
    MaxAge {
        /// Its age.
        age: Duration,
    },
}

impl ReplaceReason {
    /// True for a recycle (it drains and exits 0), false for an unresponsive worker (killed).
    pub fn is_recycle(&self) -> bool {
        !matches!(self, ReplaceReason::Unresponsive { .. })
    }
}

impl std::fmt::Display for ReplaceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaceReason::Unresponsive { silent } => {
                write!(f, "unresponsive: no heartbeat for {silent:.1?}")
            }
            ReplaceReason::MaxRequests { served } => write!(f, "max_requests: served {served}"),
            ReplaceReason::MaxMemory { rss, limit } => {
                write!(f, "max_memory: RSS {rss} bytes > {limit}")
            }
            ReplaceReason::MaxAge { age } => write!(f, "max_age: running for {age:.1?}"),
        }
    }
}

/// The watchdog's verdict: replace `worker` at once, SIGABRT it, SIGKILL it after a grace.
pub(crate) fn abort_unresponsive(shared: &Shared, worker: &Worker, silent: Duration) {
    let reason = ReplaceReason::Unresponsive { silent };
    if worker
        .replace_with(reason)
        .is_some_and(|previous| !previous.is_recycle())
    {
        return;
    }
    tracing::warn!(
        id = worker.id(),
        pid = worker.pid(),
        "worker {} (pid {}) {reason}; replacing it, SIGABRT now, SIGKILL in {ABORT_GRACE:?}",
        worker.id(),
        worker.pid()
    );
    for dispatcher in shared.dispatchers() {
        dispatcher.stop_sending_to(worker);
    }
    worker.mark_exited_after_disconnect();
    shared.events.emit(Event::Replacing(worker.clone(), reason));
    emit_disconnect(shared, worker);
    worker.signal(Signal::SIGABRT);
    let doomed = worker.clone();
    tokio::spawn(async move {
        tokio::time::sleep(ABORT_GRACE).await;
        doomed.signal(Signal::SIGKILL);
    });
}

/// Recycles `worker`: the replacement is forked first (the `Disconnect` event), and the
/// worker is disconnected (drains, exits 0) once the replacement accepts on each of its
/// addresses. False if it is already leaving.
pub(crate) fn start_recycle(shared: &Shared, worker: &Worker, reason: ReplaceReason) -> bool {
    if worker.state() >= WorkerState::Disconnecting || worker.replace_reason().is_some() {
        return false;
    }
    worker.replace_with(reason);
    tracing::info!(
        id = worker.id(),
        pid = worker.pid(),
        "recycling worker {} (pid {}): {reason}",
        worker.id(),
        worker.pid()
    );
    worker.mark_exited_after_disconnect();
    shared.events.emit(Event::Replacing(worker.clone(), reason));
    emit_disconnect(shared, worker);
    shared.handovers.start_recycle(worker);
    true
}
