//! The control socket of a plain [`Cluster`]: one group (its settings' name, or `-`), reload
//! = [`Cluster::reload`], restart = the same readiness-gated replacement for one worker; no
//! scaling (a plain cluster's size is its dispatch's).

use std::sync::Arc;

use cluster_control::{ErrorKind, GroupStatus, StatusReport};
use tokio::sync::watch;

use super::history::History;
use super::{BoxFuture, Outcome, Target, error, worker_status};
use crate::cluster::{Cluster, Phase};
use crate::events::Event;
use crate::rolling::ReloadError;
use crate::worker::WorkerState;

pub(crate) struct ClusterTarget {
    cluster: Cluster,
    group: String,
    history: Arc<History>,
}

impl ClusterTarget {
    /// The target, and the task that keeps its history of exits.
    pub(crate) fn start(cluster: &Cluster, group: Option<String>) -> Arc<ClusterTarget> {
        let group = group.unwrap_or_else(|| "-".to_string());
        let history = Arc::new(History::default());
        let mut events = cluster.events();
        let (recorder, name, phase) = (history.clone(), group.clone(), cluster.phase());
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::Exit(worker, exit) = event {
                    let stopping = *phase.borrow() != Phase::Running;
                    recorder.record(&name, &worker, exit, stopping);
                }
            }
        });
        Arc::new(ClusterTarget {
            cluster: cluster.clone(),
            group,
            history,
        })
    }

    fn check_group(&self, group: Option<&str>) -> Result<(), cluster_control::ControlError> {
        match group {
            Some(name) if name != self.group => Err(error(
                ErrorKind::UnknownGroup,
                format!("unknown group {name:?}: this cluster is {:?}", self.group),
            )),
            _ => Ok(()),
        }
    }
}

fn reload_error(e: ReloadError) -> cluster_control::ControlError {
    let kind = match e {
        ReloadError::AlreadyReloading => ErrorKind::Busy,
        ReloadError::Stopping => ErrorKind::Stopping,
        _ => ErrorKind::Failed,
    };
    error(kind, e.to_string())
}

impl Target for ClusterTarget {
    fn status(&self) -> StatusReport {
        let wait_ready = self.cluster.shared.settings().wait_ready;
        let mut workers: Vec<_> = self
            .cluster
            .workers()
            .iter()
            .map(|w| {
                let ready = w.is_ready() || (!wait_ready && w.state() == WorkerState::Listening);
                worker_status(&self.group, w, None, ready)
            })
            .collect();
        workers.extend(self.history.exited());
        StatusReport {
            master_pid: std::process::id(),
            kind: "cluster".into(),
            stopping: *self.cluster.phase().borrow() != Phase::Running,
            groups: vec![GroupStatus {
                name: self.group.clone(),
                wanted: None,
                restarts: self.history.restarts(&self.group),
            }],
            workers,
        }
    }

    fn upgrade(&self) -> BoxFuture<Outcome> {
        let cluster = self.cluster.clone();
        Box::pin(async move { super::upgrade_outcome(cluster.upgrade().await) })
    }

    fn reload(&self, group: Option<String>) -> BoxFuture<Outcome> {
        let checked = self.check_group(group.as_deref());
        let cluster = self.cluster.clone();
        Box::pin(async move {
            checked?;
            let replaced = cluster.reload().await.map_err(reload_error)?;
            Ok(format!("reloaded: {replaced} workers replaced"))
        })
    }

    fn scale(&self, _group: &str, _workers: usize) -> Outcome {
        Err(error(
            ErrorKind::Unsupported,
            "a plain cluster's size is its dispatch's: scale is for pm groups",
        ))
    }

    fn stop(&self, fast: bool) {
        self.cluster.begin_stop(super::stop_mode(fast));
    }

    fn restart(&self, group: Option<String>, id: u32) -> BoxFuture<Outcome> {
        let checked = self.check_group(group.as_deref());
        let cluster = self.cluster.clone();
        Box::pin(async move {
            checked?;
            let worker = cluster
                .worker(id)
                .filter(|w| w.state() < WorkerState::Disconnecting)
                .ok_or_else(|| error(ErrorKind::UnknownWorker, format!("no live worker {id}")))?;
            let _reloading = cluster
                .shared
                .begin_reload()
                .ok_or_else(|| reload_error(ReloadError::AlreadyReloading))?;
            cluster.replace(&worker).await.map_err(reload_error)?;
            Ok(format!(
                "worker {id} (pid {}) replaced; it drains",
                worker.pid()
            ))
        })
    }

    fn phase(&self) -> watch::Receiver<Phase> {
        self.cluster.phase()
    }
}
