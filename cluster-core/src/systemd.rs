//! `Type=notify`: the master tells the service manager where it is (`sd_notify`, through the
//! `NOTIFY_SOCKET` datagram socket; nothing happens when that is unset).
//!
//! Fed by snapshots of the master's state, taken after each of its events; the transitions
//! are a pure function ([`Progress::next`], unit-tested):
//!
//! - `READY=1` once the first generation is ready: a plain cluster when every worker it runs
//!   (not disconnecting) listens, or has called `ready()` with [`crate::Settings::wait_ready`],
//!   and there is at least one; pm when every group has its wanted number of ready workers.
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts (SIGHUP, `clusterctl reload`),
//!   then `READY=1` when it has ended and every worker is ready again.
//! - `STOPPING=1` when a stop begins; nothing after it.
//! - `STATUS=` with the worker counts whenever they change.
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, from a timer of the master's own loop (pm) or
//!   of its event task (plain cluster) on the master's runtime: a stalled runtime stops it.
//!
//! Around a hot upgrade (`upgrade/`; the unit needs `NotifyAccess=all`, since the new master
//! is not the process systemd started):
//!
//! - the old master sends `RELOADING=1` + `MONOTONIC_USEC=` before it starts the new one;
//! - the new master, once ready and before it tells the old one, sends `MAINPID=<its pid>`
//!   then `READY=1` (one datagram, in that order): systemd follows the new main process
//!   before the old one exits, and the reload state ends;
//! - the old master, handed over, then says nothing more: no `STATUS=` while its workers
//!   drain, and no `STOPPING=1`, which systemd would take as the whole service stopping;
//! - if the upgrade fails the old master sends `READY=1` and a `STATUS=` with the reason.
//!
//! Only one master per process talks to the service manager: the first one made claims the
//! notifier (pm's `Master` is made before its groups' clusters).

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

use crate::cluster::{Phase, Shared};
use crate::events::EventStream;
use crate::worker::WorkerState;

/// What the master looks like at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Workers serving or starting (not disconnecting).
    pub(crate) workers: usize,
    /// Of those, the ready ones.
    pub(crate) ready: usize,
    /// Whether the master has all it wants ready.
    pub(crate) all_ready: bool,
    pub(crate) reloading: bool,
    pub(crate) stopping: bool,
    /// This master handed its sockets to a new master (hot upgrade): it is no longer the
    /// service's main process and must stay silent.
    pub(crate) handed_over: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    Ready,
    Reloading,
    Stopping,
    Status(String),
}

/// What has been told so far.
#[derive(Debug, Default)]
struct Progress {
    ready_told: bool,
    reloading: bool,
    stopping: bool,
    status: String,
}

impl Progress {
    /// The notes `now` calls for, in order.
    fn next(&mut self, now: &Snapshot) -> Vec<Note> {
        let mut notes = Vec::new();
        if self.stopping {
            return notes;
        }
        if now.handed_over {
            // The new master speaks for the service now (it sent MAINPID=).
            self.stopping = true;
            return notes;
        }
        if now.stopping {
            self.stopping = true;
            notes.push(Note::Stopping);
            return notes;
        }
        if !self.ready_told {
            if now.all_ready {
                self.ready_told = true;
                notes.push(Note::Ready);
            }
        } else if now.reloading && !self.reloading {
            self.reloading = true;
            notes.push(Note::Reloading);
        } else if !now.reloading && self.reloading && now.all_ready {
            self.reloading = false;
            notes.push(Note::Ready);
        }
        let status = format!("{} workers, {} ready", now.workers, now.ready);
        if status != self.status {
            self.status = status.clone();
            notes.push(Note::Status(status));
        }
        notes
    }
}

static CLAIMED: AtomicBool = AtomicBool::new(false);

/// The process's one link to the service manager.
pub(crate) struct Notifier {
    progress: Progress,
    watchdog: Option<tokio::time::Interval>,
}

impl Notifier {
    /// The notifier, for the first master of the process made under a service manager
    /// (`NOTIFY_SOCKET` set); `None` otherwise. Must run inside the tokio runtime.
    pub(crate) fn claim() -> Option<Notifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        if CLAIMED.swap(true, Ordering::AcqRel) {
            return None;
        }
        let watchdog = sd_notify::watchdog_enabled().map(|timeout| {
            tracing::info!(?timeout, "systemd watchdog: WATCHDOG=1 every half timeout");
            let mut interval = tokio::time::interval(timeout / 2);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        // Started by a hot upgrade: the first READY=1 goes with MAINPID= when the old master
        // is told (`told_ready_as_new_master`), not before.
        let progress = Progress {
            ready_told: crate::upgrade::started_by_upgrade(),
            ..Progress::default()
        };
        Some(Notifier { progress, watchdog })
    }

    /// Tells the service manager what changed since the last snapshot.
    pub(crate) fn observe(&mut self, now: &Snapshot) {
        for note in self.progress.next(now) {
            let sent = match &note {
                Note::Ready => sd_notify::notify(&[NotifyState::Ready]),
                Note::Stopping => sd_notify::notify(&[NotifyState::Stopping]),
                Note::Status(status) => sd_notify::notify(&[NotifyState::Status(status)]),
                Note::Reloading => NotifyState::monotonic_usec_now()
                    .and_then(|monotonic| sd_notify::notify(&[NotifyState::Reloading, monotonic])),
            };
            match sent {
                Ok(()) => tracing::debug!(?note, "told the service manager"),
                Err(e) => tracing::warn!(?note, "sd_notify failed: {e}"),
            }
        }
    }

    /// Resolves when the next `WATCHDOG=1` is due; never without a watchdog.
    pub(crate) async fn watchdog_due(&mut self) {
        match &mut self.watchdog {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends `WATCHDOG=1`.
    pub(crate) fn pet_watchdog(&self) {
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            tracing::warn!("sd_notify WATCHDOG=1 failed: {e}");
        }
    }
}

/// Sends `state` if this process talks to the service manager (it claimed the notifier).
fn tell(what: &str, state: &[NotifyState]) {
    if !CLAIMED.load(Ordering::Acquire) {
        return;
    }
    match sd_notify::notify(state) {
        Ok(()) => tracing::debug!("told the service manager: {what}"),
        Err(e) => tracing::warn!("sd_notify ({what}) failed: {e}"),
    }
}

/// The old master, before it starts the new one: `RELOADING=1` + `MONOTONIC_USEC=`.
pub(crate) fn tell_upgrade_starting() {
    match NotifyState::monotonic_usec_now() {
        Ok(monotonic) => tell(
            "upgrade starting",
            &[
                NotifyState::Reloading,
                monotonic,
                NotifyState::Status("upgrading the master"),
            ],
        ),
        Err(e) => tracing::warn!("sd_notify: no monotonic clock: {e}"),
    }
}

/// The old master, when the upgrade failed: `READY=1` again, and why.
pub(crate) fn tell_upgrade_failed(why: &str) {
    let status = format!("upgrade failed, this master keeps serving: {why}");
    tell(
        "upgrade failed",
        &[NotifyState::Ready, NotifyState::Status(&status)],
    );
}

/// The new master, once ready and before it tells the old one: `MAINPID=` (this process)
/// then `READY=1`.
pub(crate) fn told_ready_as_new_master() {
    let pid = nix::unistd::getpid().as_raw() as u32;
    tell(
        "MAINPID= and READY=1",
        &[NotifyState::MainPid(pid), NotifyState::Ready],
    );
}

/// Resolves when `notifier`'s next `WATCHDOG=1` is due, after sending it; never without one.
pub(crate) async fn watchdog_due(notifier: &mut Option<Notifier>) {
    match notifier {
        Some(notifier) => {
            notifier.watchdog_due().await;
            notifier.pet_watchdog();
        }
        None => std::future::pending().await,
    }
}

/// A plain cluster's notifier task: a snapshot after each event, phase change and reload end.
pub(crate) async fn follow_cluster(
    shared: Weak<Shared>,
    mut events: EventStream,
    mut phase: tokio::sync::watch::Receiver<Phase>,
    reload_ended: std::sync::Arc<tokio::sync::Notify>,
    mut notifier: Notifier,
) {
    loop {
        tokio::select! {
            event = events.next() => if event.is_none() { break },
            changed = phase.changed() => if changed.is_err() { break },
            _ = reload_ended.notified() => {}
            _ = notifier.watchdog_due() => {
                notifier.pet_watchdog();
                continue;
            }
        }
        let Some(shared) = shared.upgrade() else {
            break;
        };
        notifier.observe(&cluster_snapshot(&shared));
        if shared.phase() == Phase::Stopped {
            break;
        }
    }
}

fn cluster_snapshot(shared: &Shared) -> Snapshot {
    let wait_ready = shared.settings().wait_ready;
    let serving: Vec<_> = shared
        .workers()
        .into_iter()
        .filter(|w| w.state() < WorkerState::Disconnecting && w.replace_reason().is_none())
        .collect();
    let ready = serving
        .iter()
        .filter(|w| {
            if wait_ready {
                w.is_ready()
            } else {
                w.state() >= WorkerState::Listening
            }
        })
        .count();
    Snapshot {
        workers: serving.len(),
        ready,
        all_ready: !serving.is_empty() && ready == serving.len(),
        reloading: shared.is_reloading(),
        stopping: shared.phase() != Phase::Running,
        handed_over: crate::upgrade::handed_over(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(workers: usize, ready: usize) -> Snapshot {
        Snapshot {
            workers,
            ready,
            all_ready: workers > 0 && ready == workers,
            ..Snapshot::default()
        }
    }

    fn states(notes: Vec<Note>) -> Vec<Note> {
        notes
            .into_iter()
            .filter(|n| !matches!(n, Note::Status(_)))
            .collect()
    }

    #[test]
    fn ready_once_every_worker_of_the_first_generation_is() {
        let mut progress = Progress::default();
        assert!(states(progress.next(&snapshot(2, 1))).is_empty());
        assert_eq!(states(progress.next(&snapshot(2, 2))), vec![Note::Ready]);
        // A crash and its replacement do not make the service un-ready or ready again.
        assert!(states(progress.next(&snapshot(2, 1))).is_empty());
        assert!(states(progress.next(&snapshot(2, 2))).is_empty());
    }

    #[test]
    fn reload_is_reloading_then_ready_when_it_ended_and_all_are_ready() {
        let mut progress = Progress::default();
        progress.next(&snapshot(2, 2));
        let reloading = Snapshot {
            reloading: true,
            ..snapshot(3, 2)
        };
        assert_eq!(states(progress.next(&reloading)), vec![Note::Reloading]);
        assert!(states(progress.next(&reloading)).is_empty());
        assert!(states(progress.next(&snapshot(2, 1))).is_empty());
        assert_eq!(states(progress.next(&snapshot(2, 2))), vec![Note::Ready]);
    }

    #[test]
    fn stopping_is_the_last_note() {
        let mut progress = Progress::default();
        let stopping = Snapshot {
            stopping: true,
            ..snapshot(2, 2)
        };
        assert_eq!(progress.next(&stopping), vec![Note::Stopping]);
        assert!(progress.next(&snapshot(1, 1)).is_empty());
    }

    #[test]
    fn a_master_that_handed_over_says_nothing_more_not_even_stopping() {
        let mut progress = Progress::default();
        progress.next(&snapshot(2, 2));
        let handed_over = Snapshot {
            handed_over: true,
            stopping: true,
            ..snapshot(2, 2)
        };
        assert!(progress.next(&handed_over).is_empty());
        // Its workers drain: no STATUS= either.
        assert!(progress.next(&snapshot(1, 1)).is_empty());
    }

    #[test]
    fn a_new_master_sends_no_ready_of_its_own() {
        // Started by an upgrade: READY=1 went with MAINPID=; a reload later works as usual.
        let mut progress = Progress {
            ready_told: true,
            ..Progress::default()
        };
        assert!(states(progress.next(&snapshot(2, 2))).is_empty());
        let reloading = Snapshot {
            reloading: true,
            ..snapshot(3, 2)
        };
        assert_eq!(states(progress.next(&reloading)), vec![Note::Reloading]);
        assert_eq!(states(progress.next(&snapshot(2, 2))), vec![Note::Ready]);
    }

    #[test]
    fn status_tells_the_counts_when_they_change() {
        let mut progress = Progress::default();
        assert_eq!(
            progress.next(&snapshot(2, 0)),
            vec![Note::Status("2 workers, 0 ready".into())]
        );
        assert!(progress.next(&snapshot(2, 0)).is_empty());
    }
}
