//! Prometheus metrics and health endpoints on one TCP address: `/metrics` (text exposition
//! from `prometheus-client`), `/healthz` (the master answers and can read its worker table),
//! `/readyz` (every group has a ready worker and no stop has begun).
//!
//! A plain [`crate::Cluster`] serves them when [`crate::Settings::metrics_address`] is set,
//! a pm [`crate::pm::Master`] when [`crate::pm::Master::metrics_address`] is called.
//! Counters move on lifecycle events (a task reads the event stream); gauges are read from
//! the worker table and the shared sockets only when scraped.

mod families;
mod server;
mod sources;
mod sys;

use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::cluster::Phase;
use crate::worker::{WorkerLoad, WorkerState};

pub(crate) use families::Families;
pub(crate) use server::serve;
pub(crate) use sources::cluster_source;

/// What the endpoints read when asked.
pub(crate) trait Source: Send + Sync + 'static {
    /// Live workers per group: state, and whether the group counts it as ready.
    fn groups(&self) -> BTreeMap<String, Vec<(WorkerState, bool)>>;
    /// The shared TCP sockets: (address, connections waiting to be accepted).
    fn queues(&self) -> Vec<(String, u32)>;
    /// Each live worker's last reported load: (group, worker id, load).
    fn loads(&self) -> Vec<(String, u32, WorkerLoad)>;
    /// Where the master is in its life.
    fn phase(&self) -> watch::Receiver<Phase>;
}

/// Why the master is not ready, if it is not.
fn not_ready(source: &dyn Source) -> Option<String> {
    if *source.phase().borrow() != Phase::Running {
        return Some("stopping".into());
    }
    let groups = source.groups();
    if groups.is_empty() {
        return Some("no group".into());
    }
    let waiting: Vec<&str> = groups
        .iter()
        .filter(|(_, workers)| !workers.iter().any(|(_, ready)| *ready))
        .map(|(name, _)| name.as_str())
        .collect();
    (!waiting.is_empty()).then(|| format!("no ready worker in {}", waiting.join(", ")))
}
