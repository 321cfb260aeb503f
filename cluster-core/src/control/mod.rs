//! The control socket: `clusterctl` asks a running master for its status, or to reload,
//! scale, stop or restart a worker (protocol: the `cluster-control` crate and
//! `docs/CONTROL.md`).
//!
//! A plain [`crate::Cluster`] serves it when [`crate::Settings::control_socket`] is set; a
//! pm [`crate::pm::Master`] when [`crate::pm::Master::control_socket`] is called. The
//! server is one task that accepts connections; each connection's task checks the peer's
//! uid (`SO_PEERCRED`), then reads the worker table only when a request asks for it: the
//! master's loop and the workers' channels never wait for it.

mod cluster_target;
mod history;
mod pm_target;
mod proc_stats;
mod server;
mod socket;

use std::future::Future;
use std::pin::Pin;

pub use cluster_control::default_socket_path;
use cluster_control::{ControlError, ExitInfo, StatusReport, WorkerStatus};
use tokio::sync::watch;

use crate::cluster::Phase;
use crate::worker::{Exit, Worker, WorkerState};

pub(crate) use cluster_target::ClusterTarget;
pub(crate) use server::serve;

/// What a command did (one line for the operator), or why it could not.
pub(crate) type Outcome = Result<String, ControlError>;

/// A future the server awaits.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A master the control socket drives: a plain cluster or a pm master.
pub(crate) trait Target: Send + Sync + 'static {
    /// Every worker, the recently exited ones, every group.
    fn status(&self) -> StatusReport;
    /// Replaces the workers of `group` (all if `None`); resolves when the reload has ended.
    fn reload(&self, group: Option<String>) -> BoxFuture<Outcome>;
    /// Sets a group's size.
    fn scale(&self, group: &str, workers: usize) -> Outcome;
    /// Begins a stop.
    fn stop(&self, fast: bool);
    /// Hot upgrade of the master; resolves when the new master is ready or has failed.
    fn upgrade(&self) -> BoxFuture<Outcome>;
    /// Replaces one worker.
    fn restart(&self, group: Option<String>, id: u32) -> BoxFuture<Outcome>;
    /// Where the master is in its life: the server ends once it is stopped.
    fn phase(&self) -> watch::Receiver<Phase>;
}

/// The answer to an upgrade.
pub(crate) fn upgrade_outcome(result: Result<u32, crate::UpgradeError>) -> Outcome {
    match result {
        Ok(pid) => Ok(format!(
            "upgraded: new master {pid} serves; this one retires"
        )),
        Err(e) => {
            let kind = match e {
                crate::UpgradeError::AlreadyUpgrading => cluster_control::ErrorKind::Busy,
                crate::UpgradeError::Stopping => cluster_control::ErrorKind::Stopping,
                _ => cluster_control::ErrorKind::Failed,
            };
            Err(error(kind, format!("{e}; this master keeps serving")))
        }
    }
}

/// The protocol's name for a state.
pub(crate) fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::None => "starting",
        WorkerState::Online => "online",
        WorkerState::Listening => "listening",
        WorkerState::Disconnecting => "disconnecting",
        WorkerState::Disconnected => "disconnected",
        WorkerState::Dead => "dead",
    }
}

/// What the master knows of how `worker` ended (`exit`), or why it is leaving.
fn exit_info(worker: &Worker, exit: Option<Exit>) -> Option<ExitInfo> {
    let reason = worker.exit_reason();
    if exit.is_none() && reason.is_none() {
        return None;
    }
    let mut info = ExitInfo {
        code: exit.and_then(|e| e.code),
        signal: exit.and_then(|e| e.signal).map(|s| s.to_string()),
        ..ExitInfo::default()
    };
    if let Some(reason) = reason {
        match reason {
            crate::ExitReason::Panic { message, location } => {
                info.reason = Some("panic".into());
                info.message = Some(message);
                info.location = location;
            }
            other => info.reason = Some(other.to_string()),
        }
    }
    Some(info)
}

/// One row of the status: the worker as the master sees it, with `/proc`'s figures.
fn worker_status(
    group: &str,
    worker: &Worker,
    generation: Option<u64>,
    ready: bool,
) -> WorkerStatus {
    let uptime = worker.uptime();
    let state = worker.state();
    let stats = if state == WorkerState::Dead {
        None
    } else {
        proc_stats::read(worker.pid())
    };
    WorkerStatus {
        group: group.to_string(),
        id: worker.id(),
        pid: worker.pid(),
        state: state_name(state).to_string(),
        generation,
        ready: ready && state < WorkerState::Disconnecting,
        uptime_ms: uptime.as_millis() as u64,
        rss_bytes: stats.map(|s| s.rss_bytes),
        cpu_percent: stats.map(|s| s.cpu_percent(uptime)),
        // A dead worker holds none; what it served stays as its last heartbeat said.
        open_connections: worker
            .load()
            .filter(|_| state != WorkerState::Dead)
            .map(|l| l.open_connections),
        requests_served: worker.load().map(|l| l.served),
        exit: exit_info(worker, worker.exit_status()),
    }
}

/// The stop a control request asks for, logged.
fn stop_mode(fast: bool) -> crate::StopMode {
    let mode = if fast {
        crate::StopMode::Fast
    } else {
        crate::StopMode::Graceful
    };
    tracing::info!(?mode, "stop requested on the control socket");
    mode
}

fn error(kind: cluster_control::ErrorKind, message: impl Into<String>) -> ControlError {
    ControlError {
        kind,
        message: message.into(),
    }
}
