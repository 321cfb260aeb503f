//! The master as PID 1 (a container started without an init): reaping adopted orphans.
//!
//! The kernel re-parents every orphan of a PID namespace to its PID 1. A worker's grandchild
//! whose parent exited (a shell's background job, a daemon that double-forks) becomes the
//! master's child, and when it exits it stays a zombie until the master waits for it: in a
//! container whose PID 1 never reaps, zombies pile up until the pid space is exhausted.
//!
//! So when [`start`] sees that the master is PID 1 it runs one task that reaps them, on
//! every SIGCHLD and once a second. It must not steal what tokio waits for: each worker's
//! `tokio::process::Child` is waited for by its supervise task, and the exit status is the
//! worker's `exit` event (a reaper calling `waitpid(-1)` would take it, and the event would
//! say "unknown status"). The reaper therefore only *peeks* at the next exited child
//! (`waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)` leaves it waitable) and reaps it by pid only
//! if it is not one of the children cluster-core started ([`spawn_tracked`] records each
//! pid under the same lock as the fork, so a worker that dies at once is never mistaken for
//! an orphan; [`untrack`] forgets it once tokio has reaped it). A tracked child at the head
//! of the queue is tokio's to reap: the reaper looks again shortly after.
//!
//! Caveat: as PID 1 every other child of the master process is taken for an orphan too. A
//! program that also starts processes of its own from the master process and waits for
//! them should run under an init (`docker run --init`, tini). Not PID 1 (the usual case,
//! and under systemd) nothing here runs.
//!
//! Signals: PID 1 has no default signal actions (the kernel drops a signal to it that it
//! does not handle). The master's handlers (`signals.rs`) are installed when it is made, so
//! SIGTERM still drains and exits 0, and SIGINT/SIGQUIT still stop fast.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

/// Pids of the children cluster-core started and tokio waits for.
static TRACKED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static STARTED: AtomicBool = AtomicBool::new(false);

/// How often the reaper looks even without a SIGCHLD (a signal can be merged with
/// another one, or arrive before the task listens).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How soon to look again when a tracked child was first in the queue.
const RETRY_BEHIND_TRACKED: Duration = Duration::from_millis(50);

fn tracked() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    TRACKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `spawn` (a fork) and records the child's pid (read by `pid_of`) before anything
/// else can look at the children: the reaper never takes that child for an orphan.
pub(crate) fn spawn_tracked<T, E>(
    spawn: impl FnOnce() -> Result<T, E>,
    pid_of: impl FnOnce(&T) -> Option<u32>,
) -> Result<T, E> {
    let mut tracked = tracked();
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        tracked.insert(pid);
    }
    Ok(child)
}

/// Forgets `pid` once its owner has reaped it.
pub(crate) fn untrack(pid: u32) {
    tracked().remove(&pid);
}

/// What to do with the child that `waitid` peeked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No exited child.
    Nothing,
    /// An orphan: reap it.
    Reap(u32),
    /// A child of ours, tokio's to reap: look again soon.
    LeaveToOwner(u32),
}

/// The pure decision: an exited child is reaped here unless cluster-core tracks it.
fn verdict(peeked: Option<u32>, tracked: &BTreeSet<u32>) -> Verdict {
    match peeked {
        None | Some(0) => Verdict::Nothing,
        Some(pid) if tracked.contains(&pid) => Verdict::LeaveToOwner(pid),
        Some(pid) => Verdict::Reap(pid),
    }
}

/// True if this process is PID 1 of its namespace.
pub(crate) fn is_pid_one() -> bool {
    std::process::id() == 1
}

/// Starts the orphan reaper if this process is PID 1 (once per process). Must run inside
/// the tokio runtime.
pub(crate) fn start() {
    if !is_pid_one() || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    let sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::error!("PID 1: no SIGCHLD handler, orphans are not reaped: {e}");
            return;
        }
    };
    tracing::info!("running as PID 1: this master reaps orphaned processes");
    tokio::spawn(reap_forever(sigchld));
}

async fn reap_forever(mut sigchld: tokio::signal::unix::Signal) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = sweep.tick() => {}
        }
        while reap_orphans() {
            tokio::time::sleep(RETRY_BEHIND_TRACKED).await;
        }
    }
}

/// Reaps every exited orphan at the head of the queue; true if a tracked child stands in
/// front of the rest (look again once tokio has reaped it).
fn reap_orphans() -> bool {
    loop {
        // The lock is held from the peek to the reap: a fork recording its pid waits.
        let tracked = tracked();
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let peeked = match waitid(Id::All, flags) {
            Ok(status) => status.pid().map(|pid| pid.as_raw() as u32),
            // ECHILD: no children at all.
            Err(_) => None,
        };
        match verdict(peeked, &tracked) {
            Verdict::Nothing => return false,
            Verdict::LeaveToOwner(_) => return true,
            Verdict::Reap(pid) => {
                match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                    Ok(status) => log_reaped(pid, status),
                    Err(e) => {
                        tracing::warn!(pid, "PID 1: could not reap an orphan: {e}");
                        return false;
                    }
                }
            }
        }
    }
}

fn log_reaped(pid: u32, status: WaitStatus) {
    match status {
        WaitStatus::Exited(_, code) => tracing::debug!(pid, code, "PID 1: reaped an orphan"),
        WaitStatus::Signaled(_, signal, _) => {
            tracing::debug!(pid, ?signal, "PID 1: reaped an orphan")
        }
        other => tracing::debug!(pid, ?other, "PID 1: reaped an orphan"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untracked_exited_child_is_reaped() {
        let tracked = BTreeSet::from([10, 11]);
        assert_eq!(verdict(Some(42), &tracked), Verdict::Reap(42));
    }

    #[test]
    fn a_tracked_child_is_left_to_its_owner() {
        let tracked = BTreeSet::from([10, 11]);
        assert_eq!(verdict(Some(11), &tracked), Verdict::LeaveToOwner(11));
    }

    #[test]
    fn nothing_exited_is_nothing_to_do() {
        assert_eq!(verdict(None, &BTreeSet::new()), Verdict::Nothing);
        // waitid with WNOHANG reports "none yet" as pid 0.
        assert_eq!(verdict(Some(0), &BTreeSet::new()), Verdict::Nothing);
    }

    #[test]
    fn a_spawn_is_tracked_until_untracked() {
        let child = spawn_tracked(|| Ok::<_, ()>(4_000_000), |pid| Some(*pid)).expect("spawn");
        assert_eq!(
            verdict(Some(child), &tracked()),
            Verdict::LeaveToOwner(child)
        );
        untrack(child);
        assert_eq!(verdict(Some(child), &tracked()), Verdict::Reap(child));
    }

    #[test]
    fn a_failed_spawn_tracks_nothing() {
        let mut asked = false;
        let failed = spawn_tracked(
            || Err::<u32, _>("no"),
            |pid| {
                asked = true;
                Some(*pid)
            },
        );
        assert!(failed.is_err());
        assert!(!asked, "a failed spawn has no pid to record");
    }
}
