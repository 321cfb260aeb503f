//! Hot upgrade of the master (SIGUSR2, as nginx and unicorn do it).
//!
//! The old master starts the program it was started as (the path and arguments read at
//! start-up: `/proc/self/exe` would be the old file once a package manager replaced it) in a
//! session of its own, with no `PR_SET_PDEATHSIG`, handing it every listening socket: the
//! same descriptors, open across exec at their numbers, named in [`ENV_INHERITED`]. It also
//! hands it one end of a socketpair ([`ENV_READY_FD`]). The new master's listener tables
//! take an inherited socket for an address instead of binding it, so both masters' workers
//! accept from the same queues and no connection is refused. Once the new master's workers
//! are all ready it writes one byte on the socketpair; the old master then retires its own
//! workers through the graceful stop and exits 0. If the new master exits, closes the
//! socketpair, or says nothing within the upgrade timeout, the old one kills it, logs why,
//! and goes on serving. One upgrade at a time. The control socket and the metrics endpoint
//! are handed over the same way (the old master then leaves the control socket's file).
//!
//! "Ready" for pm's `Master`: every group has as many ready workers as it wants. For a plain
//! `Cluster`: at least one worker, and every worker that is not disconnecting listens
//! (or, with `wait_ready`, has called `ready()`): the reload's rule, for all at once.

mod cluster;
mod extra;
mod inherit;
mod notify;
mod pidfile;
mod sys;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

pub(crate) use extra::hand_over_too;
pub use inherit::ENV_INHERITED;
pub(crate) use inherit::{Address, take_tcp, take_udp, take_unix};
pub use notify::ENV_READY_FD;
pub(crate) use notify::ReadyNotifier;

/// Why an upgrade did not happen; the old master keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Another upgrade is under way.
    #[error("an upgrade is already under way")]
    AlreadyUpgrading,
    /// The master is stopping.
    #[error("the master is stopping")]
    Stopping,
    /// This master is PID 1 of its PID namespace (a container's init): when it exits the
    /// kernel kills every process in the namespace, the new master with them.
    #[error(
        "this master is PID 1 (a container's init): its exit would kill the new master; \
         replace the container instead"
    )]
    PidOne,
    /// The new master could not be started.
    #[error("could not start the new master: {0}")]
    Start(String),
    /// The new master exited before it was ready.
    #[error("the new master (pid {pid}) exited before it was ready: {status}")]
    Exited {
        /// The new master's pid.
        pid: u32,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// The new master closed the readiness socket without saying it was ready.
    #[error("the new master (pid {pid}) closed the readiness socket before it was ready")]
    Closed {
        /// The new master's pid.
        pid: u32,
    },
    /// The new master's workers were not ready within the upgrade timeout.
    #[error("the new master (pid {pid}) was not ready within {timeout:?}; killed")]
    NotReady {
        /// The new master's pid.
        pid: u32,
        /// The upgrade timeout.
        timeout: Duration,
    },
}

/// The program and arguments this master was started with.
struct StartCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

/// How long to wait for the exit status of a new master that closed the readiness socket.
const EXIT_AFTER_CLOSE: Duration = Duration::from_secs(1);

static START: OnceLock<Result<StartCommand, String>> = OnceLock::new();
static UPGRADING: AtomicBool = AtomicBool::new(false);
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// How long the old master waits, after the hand-over, for its round-robin dispatchers to
/// place the connections they accepted (`round_robin::hand_off`).
pub(crate) const HAND_OFF_WITHIN: Duration = Duration::from_secs(2);

/// Called when a master is made, before its first fork: remembers how this process was
/// started, and adopts what an old master handed over (its sockets and the readiness
/// socket). Runs once per process.
pub(crate) fn start() {
    START.get_or_init(|| {
        inherit::adopt_from_env();
        notify::adopt_from_env();
        let program = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        Ok(StartCommand {
            program,
            args: std::env::args_os().skip(1).collect(),
        })
    });
}

/// True if an old master started this process through a hot upgrade.
pub fn started_by_upgrade() -> bool {
    std::env::var_os(ENV_READY_FD).is_some()
}

/// True once this master has handed its sockets over to a ready new master: it no longer
/// refuses connections while its own workers retire (the new master's workers serve them).
pub(crate) fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Acquire)
}

/// The readiness notifier, to the first master that asks.
pub(crate) fn take_notifier() -> Option<ReadyNotifier> {
    notify::take()
}

/// Starts the new master with `sockets` and waits until it is ready (then returns its pid,
/// and this master must retire), or has failed (it is killed, and the error says why).
/// With a `pidfile`, it is moved to `PIDFILE.oldbin` meanwhile and moved back on failure.
pub(crate) async fn hand_over(
    sockets: Vec<(std::os::fd::RawFd, Address)>,
    timeout: Duration,
    pidfile: Option<&Path>,
) -> Result<u32, UpgradeError> {
    if crate::init::is_pid_one() {
        return Err(UpgradeError::PidOne);
    }
    if UPGRADING.swap(true, Ordering::AcqRel) {
        return Err(UpgradeError::AlreadyUpgrading);
    }
    let mut sockets = sockets;
    sockets.extend(extra::sockets());
    let moved = pidfile.map(pidfile::move_to_oldbin);
    crate::systemd::tell_upgrade_starting();
    let outcome = start_and_wait(&sockets, timeout).await;
    match &outcome {
        Ok(_) => HANDED_OVER.store(true, Ordering::Release),
        Err(e) => {
            if let (Some(path), Some(true)) = (pidfile, moved) {
                pidfile::move_back(path);
            }
            crate::systemd::tell_upgrade_failed(&e.to_string());
        }
    }
    UPGRADING.store(false, Ordering::Release);
    outcome
}

/// Removes `PIDFILE.oldbin` at the old master's exit.
pub(crate) fn remove_oldbin(pidfile: &Path) {
    pidfile::remove_oldbin(pidfile);
}

async fn start_and_wait(
    sockets: &[(std::os::fd::RawFd, Address)],
    timeout: Duration,
) -> Result<u32, UpgradeError> {
    let start = |e: String| UpgradeError::Start(e);
    let command = match START.get() {
        Some(Ok(command)) => command,
        Some(Err(e)) => return Err(start(e.clone())),
        None => return Err(start("the master was not set up".into())),
    };
    let inherited = inherit::encode(sockets).map_err(start)?;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| start(format!("socketpair: {e}")))?;
    let mut keep: Vec<_> = sockets.iter().map(|(fd, _)| *fd).collect();
    keep.push(theirs.as_raw_fd());
    let mut new_master = tokio::process::Command::new(&command.program);
    new_master
        .args(&command.args)
        .env(ENV_INHERITED, &inherited)
        .env(ENV_READY_FD, theirs.as_raw_fd().to_string())
        // systemd's WATCHDOG_PID names the main process, this one: left as it is, the new
        // master (the main process once ready, `MAINPID=`) would think the watchdog is
        // not its own and stop petting it.
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(false);
    sys::prepare_new_master(&mut new_master, keep);
    let mut child = new_master
        .spawn()
        .map_err(|e| start(format!("{}: {e}", command.program.display())))?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    tracing::info!(pid, program = %command.program.display(), sockets = %inherited, "upgrade: new master started");
    let mut ours = ours
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(ours))
        .map_err(|e| start(format!("readiness socket: {e}")))?;
    let mut byte = [0u8; 1];
    let outcome = tokio::select! {
        read = ours.read(&mut byte) => match read {
            Ok(1) => Ok(pid),
            // Closed: most often it is exiting; say how it ended if it does so at once.
            _ => match tokio::time::timeout(EXIT_AFTER_CLOSE, child.wait()).await {
                Ok(Ok(status)) => Err(UpgradeError::Exited { pid, status }),
                _ => Err(UpgradeError::Closed { pid }),
            },
        },
        status = child.wait() => match status {
            Ok(status) => Err(UpgradeError::Exited { pid, status }),
            Err(_) => Err(UpgradeError::Closed { pid }),
        },
        _ = tokio::time::sleep(timeout) => Err(UpgradeError::NotReady { pid, timeout }),
    };
    if outcome.is_err() {
        // Its workers get SIGTERM from their PR_SET_PDEATHSIG and drain what they took.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    outcome
}

/// Every listening socket of `listeners`, for the new master.
pub(crate) fn sockets_of(
    listeners: &crate::listeners::Listeners,
) -> Vec<(std::os::fd::RawFd, Address)> {
    let mut sockets: Vec<_> = listeners
        .tcp()
        .iter()
        .map(|(address, l)| inherit::entry(l.as_ref(), Address::Tcp(*address)))
        .collect();
    sockets.extend(
        listeners
            .unix()
            .iter()
            .map(|(path, l)| inherit::entry(l.as_ref(), Address::Unix(path.clone()))),
    );
    sockets.extend(
        listeners
            .udp()
            .iter()
            .map(|(address, s)| inherit::entry(s.as_ref(), Address::Udp(*address))),
    );
    sockets
}

/// In a plain cluster started by an upgrade: tells the old master once every worker is
/// ready (see the module's rule); gives up silently if the cluster stops first.
pub(crate) async fn notify_when_cluster_ready(cluster: crate::Cluster, notifier: ReadyNotifier) {
    use crate::events::Event;
    let mut events = cluster.events();
    let wait_ready = cluster.shared.settings().wait_ready;
    while let Some(event) = events.next().await {
        let relevant = matches!(
            event,
            Event::Listening(..)
                | Event::ListeningUnix(..)
                | Event::ListeningUdp(..)
                | Event::Ready(_)
        );
        if relevant && cluster_ready(&cluster.workers(), wait_ready) {
            notifier.notify();
            return;
        }
    }
}

fn cluster_ready(workers: &[crate::Worker], wait_ready: bool) -> bool {
    use crate::WorkerState;
    let serving: Vec<_> = workers
        .iter()
        .filter(|w| w.state() < WorkerState::Disconnecting)
        .collect();
    !serving.is_empty()
        && serving.iter().all(|w| {
            if wait_ready {
                w.is_ready()
            } else {
                w.state() == WorkerState::Listening
            }
        })
}
