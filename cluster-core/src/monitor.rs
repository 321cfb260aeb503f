//! The master's monitor: one task per cluster that ticks, feeds the watchdog and the
//! recycling policy with what it reads (heartbeats recorded by the supervise tasks, the
//! master's own lateness, each worker's age and RSS), and carries out their verdicts.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use crate::cluster::{Phase, Shared};
use crate::recycle::{RELIEF_TIMEOUT, RecycleQueue, Recycling};
use crate::replace::{self, ReplaceReason};
use crate::watchdog::{self, DEFAULT_TIMEOUT, Watchdog};
use crate::worker::{Worker, WorkerState};

/// The monitor's shared part: the recycle queue and the bell that wakes the task.
#[derive(Default)]
pub(crate) struct Monitor {
    recycles: Mutex<RecycleQueue>,
    wake: Arc<Notify>,
}

impl Monitor {
    /// `worker` is past a recycling limit; it goes when its turn comes.
    pub(crate) fn request_recycle(&self, worker: &Worker, reason: ReplaceReason) {
        self.queue().request(worker.id(), reason);
        self.wake.notify_one();
    }

    /// `worker` has exited: the next recycle may start.
    pub(crate) fn exited(&self, worker: &Worker) {
        self.queue().exited(worker.id());
        self.wake.notify_one();
    }

    pub(crate) fn bell(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, RecycleQueue> {
        self.recycles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs until the cluster is stopped or dropped.
pub(crate) async fn run(cluster: Weak<Shared>, wake: Arc<Notify>) {
    let mut dog = Watchdog::new(DEFAULT_TIMEOUT);
    let mut due = Instant::now();
    loop {
        let ticked = tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => true,
            _ = wake.notified() => false,
        };
        let now = Instant::now();
        let Some(shared) = cluster.upgrade() else {
            return;
        };
        let phase = shared.phase();
        if phase == Phase::Stopped {
            return;
        }
        let (timeout, recycling) = {
            let settings = shared.settings();
            (settings.heartbeat_timeout, settings.recycling)
        };
        if ticked {
            if let Some(timeout) = timeout {
                dog.set_timeout(timeout);
                if let Some(late) = dog.tick(due, now) {
                    tracing::warn!(
                        "the master ran {late:.1?} late (stopped or starved); heartbeat silence \
                         counts from now"
                    );
                }
            }
            due = now + watchdog::tick_interval(timeout);
            let running = phase == Phase::Running;
            for worker in shared.workers() {
                look_at(
                    &shared,
                    &worker,
                    timeout.map(|_| &dog),
                    running,
                    &recycling,
                    now,
                );
            }
        }
        if phase == Phase::Running {
            recycle_next(&shared, now);
        }
    }
}

/// Applies the watchdog, then the recycling limits, to one worker.
fn look_at(
    shared: &Shared,
    worker: &Worker,
    dog: Option<&Watchdog>,
    running: bool,
    recycling: &Recycling,
    now: Instant,
) {
    let state = worker.state();
    if state >= WorkerState::Disconnected {
        return;
    }
    let aborted = worker.replace_reason().is_some_and(|r| !r.is_recycle());
    if let (Some(dog), Some(last_beat), false) = (dog, worker.last_beat(), aborted) {
        if let Some(silent) = dog.unresponsive(last_beat, now) {
            replace::abort_unresponsive(shared, worker, silent);
            return;
        }
    }
    let recyclable = running
        && recycling.is_on()
        && worker.replace_reason().is_none()
        && (WorkerState::Online..WorkerState::Disconnecting).contains(&state);
    if recyclable {
        let rss = recycling.max_memory.and_then(|_| rss_bytes(worker.pid()));
        let age = now.saturating_duration_since(worker.forked_at());
        if let Some(reason) = recycling.due(age, rss) {
            shared.monitor.request_recycle(worker, reason);
        }
    }
}

/// Starts the next recycle if none is under way; disconnects a recycled worker whose
/// replacement never came, and kills one that drains longer than `stop_timeout`.
fn recycle_next(shared: &Shared, now: Instant) {
    let stop_timeout = shared.settings().stop_timeout;
    let (next, overdue, drain_overdue) = {
        let mut queue = shared.monitor.queue();
        let draining = queue
            .current()
            .and_then(|id| shared.worker(id))
            .is_some_and(|w| w.state() >= WorkerState::Disconnecting);
        if draining {
            queue.draining(now);
        }
        let next = queue.next(now, |id| {
            shared.worker(id).is_some_and(|w| {
                w.replace_reason().is_none() && w.state() < WorkerState::Disconnecting
            })
        });
        (
            next,
            queue.overdue(now, RELIEF_TIMEOUT),
            queue.drain_overdue(now, stop_timeout),
        )
    };
    if let Some((id, reason)) = next {
        if let Some(worker) = shared.worker(id) {
            replace::start_recycle(shared, &worker, reason);
        }
    }
    if let Some(worker) = overdue.and_then(|id| shared.worker(id)) {
        tracing::warn!(
            id = worker.id(),
            pid = worker.pid(),
            "no replacement accepts after {RELIEF_TIMEOUT:?}; disconnecting the recycled \
             worker anyway"
        );
        worker.request_disconnect();
    }
    if let Some(worker) = drain_overdue.and_then(|id| shared.worker(id)) {
        if !worker.is_dead() {
            tracing::warn!(
                id = worker.id(),
                pid = worker.pid(),
                "recycled worker still draining after {stop_timeout:?} (stop_timeout); killing it"
            );
            worker.signal(crate::Signal::SIGKILL);
        }
    }
}

/// A process's resident memory in bytes, from `/proc/PID/status` (`None` once it is gone).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_rss() {
        let rss = super::rss_bytes(std::process::id()).expect("own RSS");
        assert!(rss > 1024 * 1024, "{rss}");
        assert_eq!(super::rss_bytes(u32::MAX), None);
    }
}
