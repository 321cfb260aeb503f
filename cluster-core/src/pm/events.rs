//! What happens to a master's groups.

use std::time::Duration;

use cluster_ipc::Message;

use crate::worker::{Exit, Worker};

/// One thing that happened to a group (pm's events, plus reloads and messages).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum GroupEvent {
    /// A worker was started (pm's `fork(name, pid)`).
    Fork {
        /// The group.
        group: String,
        /// The worker.
        worker: Worker,
    },
    /// A worker is ready: it called `ready()` or its server listens (pm's `ready`).
    Ready {
        /// The group.
        group: String,
        /// The worker.
        worker: Worker,
    },
    /// A worker is going away (pm's `disconnect(name, pid)`; the cluster's `Leaving`, so
    /// its replacement can start before it drained).
    Disconnect {
        /// The group.
        group: String,
        /// The worker.
        worker: Worker,
    },
    /// The master replaces a worker on purpose (unresponsive, or recycled); its replacement
    /// is forked at once and its exit never counts as fatal.
    Replacing {
        /// The group.
        group: String,
        /// The worker.
        worker: Worker,
        /// Why.
        reason: crate::ReplaceReason,
    },
    /// A worker exited (pm's `quit(name, pid, code, signal)`).
    Quit {
        /// The group.
        group: String,
        /// The worker.
        worker: Worker,
        /// How it ended.
        exit: Exit,
    },
    /// Too many unstable exits in a chain of replacements (see `RestartPolicy`): no restart
    /// for `pause`, and connections to the group's addresses are refused meanwhile if no
    /// worker is left (pm's `giveup(name, fatals, pause)`).
    GiveUp {
        /// The group.
        group: String,
        /// Unstable exits counted.
        fatals: usize,
        /// How long the group waits before trying again.
        pause: Duration,
    },
    /// A reload finished: every worker now runs the new generation.
    Reloaded {
        /// The group.
        group: String,
    },
    /// A reload was abandoned; the old workers keep serving.
    ReloadFailed {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// A worker's code sent a message to the master.
    Message {
        /// The group.
        group: String,
        /// The sender.
        worker: Worker,
        /// The message.
        message: Message,
    },
}

impl GroupEvent {
    /// Logs the event through `tracing` with structured fields (group, worker id, pid, exit,
    /// reason), at INFO: the examples' console (WARN by default) keeps the seed's lines only.
    pub(crate) fn log(&self) {
        match self {
            GroupEvent::Fork { group, worker } => {
                tracing::info!(group, id = worker.id(), pid = worker.pid(), "worker forked")
            }
            GroupEvent::Ready { group, worker } => {
                tracing::info!(group, id = worker.id(), pid = worker.pid(), "worker ready")
            }
            GroupEvent::Disconnect { group, worker } => tracing::info!(
                group,
                id = worker.id(),
                pid = worker.pid(),
                reason = worker.exit_reason().map(|r| r.to_string()),
                "worker disconnecting"
            ),
            GroupEvent::Quit {
                group,
                worker,
                exit,
            } => tracing::info!(
                group,
                id = worker.id(),
                pid = worker.pid(),
                %exit,
                reason = worker.exit_reason().map(|r| r.to_string()),
                "worker exited"
            ),
            GroupEvent::GiveUp {
                group,
                fatals,
                pause,
            } => tracing::info!(group, fatals, ?pause, "giving up restarting for a while"),
            GroupEvent::Reloaded { group } => tracing::info!(group, "reloaded"),
            GroupEvent::ReloadFailed { group, reason } => {
                tracing::info!(group, reason, "reload failed")
            }
            GroupEvent::Replacing {
                group,
                worker,
                reason,
            } => tracing::info!(
                group,
                id = worker.id(),
                pid = worker.pid(),
                %reason,
                "replacing worker"
            ),
            GroupEvent::Message { .. } => {}
        }
    }
}
