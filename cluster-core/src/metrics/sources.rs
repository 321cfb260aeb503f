//! The sources of a plain cluster and of a pm master, and the tasks that move the counters.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::Source;
use super::families::Families;
use crate::cluster::{Cluster, Phase};
use crate::events::Event;
use crate::pm::{GroupEvent, Master};
use crate::worker::{WorkerLoad, WorkerState};

/// The accept queues of `cluster`'s shared TCP sockets.
fn queues_of(cluster: &Cluster, out: &mut Vec<(String, u32)>) {
    for (address, listener) in cluster.shared.listeners.tcp() {
        match super::sys::accept_queue(listener.as_fd()) {
            Ok((queued, _backlog)) => out.push((address.to_string(), queued)),
            Err(e) => tracing::debug!(%address, "TCP_INFO: {e}"),
        }
    }
}

struct ClusterSource {
    cluster: Cluster,
    group: String,
}

impl Source for ClusterSource {
    fn groups(&self) -> BTreeMap<String, Vec<(WorkerState, bool)>> {
        let wait_ready = self.cluster.shared.settings().wait_ready;
        let workers = self
            .cluster
            .workers()
            .iter()
            .map(|w| {
                let state = w.state();
                let ready = state < WorkerState::Disconnecting
                    && (w.is_ready() || (!wait_ready && state == WorkerState::Listening));
                (state, ready)
            })
            .collect();
        BTreeMap::from([(self.group.clone(), workers)])
    }

    fn queues(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        queues_of(&self.cluster, &mut out);
        out
    }

    fn loads(&self) -> Vec<(String, u32, WorkerLoad)> {
        self.cluster
            .workers()
            .iter()
            .filter_map(|w| Some((self.group.clone(), w.id(), w.load()?)))
            .collect()
    }

    fn phase(&self) -> watch::Receiver<Phase> {
        self.cluster.phase()
    }
}

/// A plain cluster's source; its counters move from its events.
pub(crate) fn cluster_source(
    cluster: &Cluster,
    group: Option<String>,
    families: Arc<Families>,
) -> Arc<dyn Source> {
    let group = group.unwrap_or_else(|| "-".to_string());
    let mut events = cluster.events();
    let (name, phase) = (group.clone(), cluster.phase());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::Exit(worker, exit) = event {
                let stopping = *phase.borrow() != Phase::Running;
                families.exited(&name, &worker, exit, stopping);
            }
        }
    });
    Arc::new(ClusterSource {
        cluster: cluster.clone(),
        group,
    })
}

struct PmSource {
    master: Master,
}

impl Source for PmSource {
    fn groups(&self) -> BTreeMap<String, Vec<(WorkerState, bool)>> {
        self.master
            .group_snapshots()
            .into_iter()
            .map(|(name, _, members)| {
                let workers = members
                    .iter()
                    .map(|m| {
                        let state = m.worker.state();
                        (state, m.ready && state < WorkerState::Disconnecting)
                    })
                    .collect();
                (name, workers)
            })
            .collect()
    }

    fn queues(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for cluster in self.master.group_clusters() {
            queues_of(&cluster, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    fn loads(&self) -> Vec<(String, u32, WorkerLoad)> {
        self.master
            .group_snapshots()
            .into_iter()
            .flat_map(|(name, _, members)| {
                members
                    .into_iter()
                    .filter_map(move |m| Some((name.clone(), m.worker.id(), m.worker.load()?)))
            })
            .collect()
    }

    fn phase(&self) -> watch::Receiver<Phase> {
        self.master.phase()
    }
}

impl Master {
    /// Serves Prometheus metrics (`/metrics`) and health (`/healthz`, `/readyz`) on
    /// `address` until the master stops; returns the bound address (port 0 picks one). Call
    /// it once, inside the runtime. See `docs/CONTROL.md`.
    pub fn metrics_address(
        &self,
        address: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, crate::SettingsError> {
        let families = Arc::new(Families::new());
        let source = pm_source(self, families.clone());
        super::serve(address, source, families).map_err(|reason| crate::SettingsError {
            setting: "metrics_address",
            reason,
        })
    }
}

/// A pm master's source; its counters move from the master's events. A reload's duration
/// runs from the first worker of its new generation to `Reloaded` or `ReloadFailed`.
fn pm_source(master: &Master, families: Arc<Families>) -> Arc<dyn Source> {
    let mut events = master.events();
    let (watched, phase) = (master.clone(), master.phase());
    tokio::spawn(async move {
        let mut generations: HashMap<String, u64> = HashMap::new();
        let mut started: HashMap<String, Instant> = HashMap::new();
        while let Some(event) = events.recv().await {
            match event {
                GroupEvent::Fork { group, worker } => {
                    let generation = watched
                        .group_snapshots()
                        .into_iter()
                        .filter(|(name, _, _)| *name == group)
                        .flat_map(|(_, _, members)| members)
                        .find(|m| m.worker.id() == worker.id())
                        .map(|m| m.generation);
                    if let Some(generation) = generation {
                        let known = generations.entry(group.clone()).or_insert(0);
                        if generation > *known {
                            *known = generation;
                            started.insert(group, Instant::now());
                        }
                    }
                }
                GroupEvent::Quit {
                    group,
                    worker,
                    exit,
                } => {
                    let stopping = *phase.borrow() != Phase::Running;
                    families.exited(&group, &worker, exit, stopping);
                }
                GroupEvent::GiveUp { group, .. } => families.gave_up(&group),
                GroupEvent::Reloaded { group } => {
                    let took = started.remove(&group).map(|t| t.elapsed());
                    families.reloaded(&group, true, took);
                }
                GroupEvent::ReloadFailed { group, .. } => {
                    let took = started.remove(&group).map(|t| t.elapsed());
                    families.reloaded(&group, false, took);
                }
                _ => {}
            }
        }
    });
    Arc::new(PmSource {
        master: master.clone(),
    })
}
