//! What the status remembers of workers that are gone: the latest exits, and how many
//! exits per group were restarts (crash, panic, kill) rather than the master's doing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use cluster_control::WorkerStatus;

use crate::worker::{Exit, Worker};

/// How many exited workers a status shows, newest first (over all groups).
const KEPT_EXITS: usize = 16;

#[derive(Default)]
pub(crate) struct History {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    exited: VecDeque<WorkerStatus>,
    restarts: BTreeMap<String, u64>,
}

impl History {
    /// Records `worker`'s exit; it counts as a restart unless the master asked it to go
    /// or was `stopping`.
    pub(crate) fn record(&self, group: &str, worker: &Worker, exit: Exit, stopping: bool) {
        let mut row = super::worker_status(group, worker, None, false);
        row.exit = super::exit_info(worker, Some(exit));
        let planned = worker.exit_reason().is_some_and(|r| r.is_planned());
        let mut inner = self.lock();
        if !planned && !stopping {
            *inner.restarts.entry(group.to_string()).or_default() += 1;
        }
        inner.exited.push_front(row);
        inner.exited.truncate(KEPT_EXITS);
    }

    /// The latest exits, newest first.
    pub(crate) fn exited(&self) -> Vec<WorkerStatus> {
        self.lock().exited.iter().cloned().collect()
    }

    /// How many of `group`'s workers exited without being asked to.
    pub(crate) fn restarts(&self, group: &str) -> u64 {
        self.lock().restarts.get(group).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data, no panics while held.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
