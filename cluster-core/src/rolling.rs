//! Rolling reload of a plain [`Cluster`] (SIGHUP): every worker is replaced, one at a time,
//! and each old worker is asked to disconnect only once its replacement is ready.
//!
//! The cluster's own dispatch usually forks on `disconnect` or `exit` (the seed does), and
//! the reload has already forked the replacement. So while the callbacks for a replaced
//! worker's `disconnect` or `exit` run, the first [`Cluster::fork`] they make returns that
//! replacement instead of forking another: the cluster keeps its size whatever the dispatch
//! does. (A dispatch that forks from an [`crate::EventStream`] in a task of its own is not
//! covered: it sees events outside `run`.)

use crate::cluster::Cluster;
use crate::events::Event;
use crate::worker::{Worker, WorkerState};

/// Why a reload stopped before replacing every worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// Another reload is running.
    #[error("a reload is already running")]
    AlreadyReloading,
    /// The cluster is stopping.
    #[error("the cluster is stopping")]
    Stopping,
    /// A replacement could not be forked.
    #[error("could not fork a replacement for worker {old}: {reason}")]
    Fork {
        /// The id of the worker that was to be replaced (it keeps serving).
        old: u32,
        /// Why.
        reason: String,
    },
    /// A replacement exited, or was not ready within the ready timeout.
    #[error("the replacement for worker {old} {reason}; worker {old} keeps serving")]
    NotReady {
        /// The id of the worker that was to be replaced (it keeps serving).
        old: u32,
        /// What happened to the replacement.
        reason: String,
    },
}

impl Cluster {
    /// Replaces every worker running now, one at a time: forks the replacement (with the
    /// old worker's fork environment), waits until it is ready (it listens on every address
    /// the old one listened on, or has called `ready()` with
    /// [`crate::Settings::wait_ready`]), then asks the old worker to disconnect (it drains
    /// while the next one is replaced). Returns how many were replaced.
    ///
    /// A replacement that exits or is not ready within [`crate::Settings::ready_timeout`]
    /// stops the reload: the worker it was to replace keeps serving.
    ///
    /// ```no_run
    /// # async fn demo(cluster: cluster_core::Cluster) {
    /// match cluster.reload().await {
    ///     Ok(replaced) => println!("{replaced} workers replaced"),
    ///     Err(e) => eprintln!("reload stopped: {e}"),
    /// }
    /// # }
    /// ```
    pub async fn reload(&self) -> Result<usize, ReloadError> {
        let _guard = self
            .shared
            .begin_reload()
            .ok_or(ReloadError::AlreadyReloading)?;
        let old_workers = self.workers();
        let mut replaced = 0;
        for old in old_workers {
            if self.shared.is_stopping() {
                return Err(ReloadError::Stopping);
            }
            if old.state() >= WorkerState::Disconnecting {
                continue;
            }
            self.replace(&old).await?;
            replaced += 1;
        }
        Ok(replaced)
    }

    pub(crate) async fn replace(&self, old: &Worker) -> Result<(), ReloadError> {
        let mut events = self.events();
        let env = old.fork_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let new = self.fork(&env).map_err(|e| ReloadError::Fork {
            old: old.id(),
            reason: e.to_string(),
        })?;
        let (wait_ready, timeout) = {
            let settings = self.shared.settings();
            (settings.wait_ready, settings.ready_timeout)
        };
        let wanted = old.addresses();
        let is_ready = |new: &Worker| {
            if wait_ready {
                new.is_ready()
            } else if wanted.is_empty() {
                new.state() >= WorkerState::Online
            } else {
                let have = new.addresses();
                wanted.iter().all(|a| have.contains(a))
            }
        };
        let waited = tokio::time::timeout(timeout, async {
            while !is_ready(&new) {
                match events.next().await {
                    Some(Event::Disconnect(w) | Event::Exit(w, _)) if w.id() == new.id() => {
                        return Err("exited before it was ready");
                    }
                    Some(_) => {}
                    None => return Err("was lost: the cluster is gone"),
                }
            }
            Ok(())
        })
        .await;
        let failure = match waited {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason.to_string()),
            Err(_) => Some(format!("was not ready within {timeout:?}")),
        };
        if let Some(reason) = failure {
            new.disconnect();
            return Err(ReloadError::NotReady {
                old: old.id(),
                reason,
            });
        }
        tracing::info!(
            old = old.id(),
            old_pid = old.pid(),
            new = new.id(),
            new_pid = new.pid(),
            "reload: replacement ready; the old worker drains"
        );
        self.shared.credit_replacement(old.id(), new);
        old.set_exit_reason(crate::ExitReason::Reload);
        old.request_disconnect();
        Ok(())
    }
}
