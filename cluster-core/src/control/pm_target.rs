//! The control socket of a pm [`Master`]: its groups, reload and scale per group, restart
//! of one worker (retired while its replacement starts).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use cluster_control::{ErrorKind, GroupStatus, StatusReport};
use tokio::sync::watch;

use super::history::History;
use super::{BoxFuture, Outcome, Target, error, worker_status};
use crate::cluster::Phase;
use crate::pm::{GroupEvent, Master};
use crate::settings::SettingsError;

pub(crate) struct PmTarget {
    master: Master,
    history: Arc<History>,
}

impl Master {
    /// Serves `clusterctl` on a Unix socket at `path` until the master stops (mode 0600;
    /// only this process's uid and root may talk to it; a stale socket file is replaced,
    /// one a live master listens on is an error). Call it once, inside the runtime, before
    /// [`Master::run`]. `cluster_core::control::default_socket_path(name)` gives the
    /// conventional place. See `docs/CONTROL.md`.
    pub fn control_socket(&self, path: impl AsRef<Path>) -> Result<(), SettingsError> {
        let target = PmTarget::start(self);
        super::serve(path.as_ref(), target).map_err(|reason| SettingsError {
            setting: "control_socket",
            reason,
        })
    }
}

impl PmTarget {
    fn start(master: &Master) -> Arc<PmTarget> {
        let history = Arc::new(History::default());
        let mut events = master.events();
        let (recorder, phase) = (history.clone(), master.phase());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let GroupEvent::Quit {
                    group,
                    worker,
                    exit,
                } = event
                {
                    let stopping = *phase.borrow() != Phase::Running;
                    recorder.record(&group, &worker, exit, stopping);
                }
            }
        });
        Arc::new(PmTarget {
            master: master.clone(),
            history,
        })
    }

    fn check_running(&self) -> Result<(), cluster_control::ControlError> {
        if *self.master.phase().borrow() != Phase::Running {
            return Err(error(ErrorKind::Stopping, "the master is stopping"));
        }
        Ok(())
    }

    fn check_group(&self, group: &str) -> Result<(), cluster_control::ControlError> {
        if self.master.has_group(group) {
            Ok(())
        } else {
            Err(error(
                ErrorKind::UnknownGroup,
                format!("unknown group {group:?}"),
            ))
        }
    }
}

impl Target for PmTarget {
    fn status(&self) -> StatusReport {
        let snapshots = self.master.group_snapshots();
        let mut groups = Vec::new();
        let mut workers = Vec::new();
        for (name, wanted, members) in snapshots {
            groups.push(GroupStatus {
                restarts: self.history.restarts(&name),
                name: name.clone(),
                wanted: Some(wanted),
            });
            for m in members {
                workers.push(worker_status(&name, &m.worker, Some(m.generation), m.ready));
            }
        }
        workers.extend(self.history.exited());
        StatusReport {
            master_pid: std::process::id(),
            kind: "pm".into(),
            stopping: *self.master.phase().borrow() != Phase::Running,
            groups,
            workers,
        }
    }

    fn upgrade(&self) -> BoxFuture<Outcome> {
        let master = self.master.clone();
        Box::pin(async move { super::upgrade_outcome(master.upgrade().await) })
    }

    fn reload(&self, group: Option<String>) -> BoxFuture<Outcome> {
        let master = self.master.clone();
        let checked = self.check_running().and_then(|()| match &group {
            Some(name) => self.check_group(name).map(|()| vec![name.clone()]),
            None => Ok(self
                .master
                .group_snapshots()
                .into_iter()
                .map(|(name, _, _)| name)
                .collect()),
        });
        Box::pin(async move {
            let names = checked?;
            // Listen before starting, so no outcome is missed.
            let mut events = master.events();
            let mut waiting = BTreeSet::new();
            for name in &names {
                if !master.reload(name) {
                    return Err(error(
                        ErrorKind::Busy,
                        format!("a reload of {name:?} is already running"),
                    ));
                }
                waiting.insert(name.clone());
            }
            let mut phase = master.phase();
            let mut failures = Vec::new();
            while !waiting.is_empty() {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(GroupEvent::Reloaded { group }) => {
                            waiting.remove(&group);
                        }
                        Some(GroupEvent::ReloadFailed { group, reason }) => {
                            if waiting.remove(&group) {
                                failures.push(format!("{group}: {reason}"));
                            }
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = async { phase.wait_for(|p| *p != Phase::Running).await.map(drop) } => {
                        return Err(error(ErrorKind::Stopping, "the master began stopping during the reload"));
                    }
                }
            }
            if failures.is_empty() {
                Ok(format!("reloaded {}", names.join(", ")))
            } else {
                Err(error(
                    ErrorKind::Failed,
                    format!(
                        "reload failed, the old workers keep serving: {}",
                        failures.join("; ")
                    ),
                ))
            }
        })
    }

    fn scale(&self, group: &str, workers: usize) -> Outcome {
        self.check_running()?;
        self.check_group(group)?;
        self.master.scale(group, workers);
        Ok(format!("{group}: {workers} workers wanted"))
    }

    fn stop(&self, fast: bool) {
        let mode = super::stop_mode(fast);
        let master = self.master.clone();
        tokio::spawn(async move { master.stop(mode).await });
    }

    fn restart(&self, group: Option<String>, id: u32) -> BoxFuture<Outcome> {
        let found = self.check_running().and_then(|()| {
            let holders: Vec<(String, u32)> = self
                .master
                .group_snapshots()
                .into_iter()
                .filter(|(name, _, _)| group.as_ref().is_none_or(|g| g == name))
                .flat_map(|(name, _, members)| {
                    members
                        .into_iter()
                        .filter(|m| m.worker.id() == id)
                        .map(move |m| (name.clone(), m.worker.pid()))
                })
                .collect();
            match (holders.as_slice(), &group) {
                ([one], _) => Ok(one.clone()),
                ([], Some(g)) => {
                    self.check_group(g)?;
                    Err(error(
                        ErrorKind::UnknownWorker,
                        format!("no live worker {g}:{id}"),
                    ))
                }
                ([], None) => Err(error(
                    ErrorKind::UnknownWorker,
                    format!("no live worker {id}"),
                )),
                (many, _) => {
                    let names: Vec<String> =
                        many.iter().map(|(g, _)| format!("{g}:{id}")).collect();
                    Err(error(
                        ErrorKind::BadRequest,
                        format!(
                            "worker id {id} is ambiguous: say which of {}",
                            names.join(", ")
                        ),
                    ))
                }
            }
        });
        let master = self.master.clone();
        Box::pin(async move {
            let (group, pid) = found?;
            if !master.restart_worker(&group, id) {
                return Err(error(
                    ErrorKind::UnknownWorker,
                    format!("worker {group}:{id} is already leaving"),
                ));
            }
            Ok(format!(
                "worker {group}:{id} (pid {pid}) retired; its replacement starts"
            ))
        })
    }

    fn phase(&self) -> watch::Receiver<Phase> {
        self.master.phase()
    }
}
