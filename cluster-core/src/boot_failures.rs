//! The start-up failure guard of a plain cluster: workers that die before they are ready
//! (their port is taken, their configuration is broken) are reported later and later, so a
//! dispatch that forks a replacement for each one backs off; past
//! [`Settings::max_boot_failures`] in a row the master stops with an error instead of
//! forking for ever. pm groups have their own policy (`pm/policy.rs`) and turn this off.
//!
//! The delays are pm's backoff (`pm::policy::backoff`): the first failure at once, then
//! 100 ms growing 1.5 times per consecutive failure, at most [`MAX_BOOT_BACKOFF`].

use std::sync::Mutex;
use std::time::Duration;

use crate::pm::policy::{RestartPolicy, backoff};
use crate::settings::{Settings, SettingsError};
use crate::worker::{Worker, WorkerState};

/// Workers that die before they are ready, in a row, after which the master stops.
pub const DEFAULT_MAX_BOOT_FAILURES: u32 = 5;

/// The longest a failed worker's events are held back.
pub const MAX_BOOT_BACKOFF: Duration = Duration::from_secs(1);

impl Settings {
    /// After this many workers in a row died before they were ready (exited with a non-zero
    /// code before their first `listening` or `ready`, and not ended by the master), the master stops its workers and
    /// [`crate::Cluster::run`] returns [`crate::RunError::BootFailures`] (default 5; `None`
    /// turns the guard off; pm groups have their own policy and ignore it). Before that, each
    /// such worker's `disconnect` and `exit` come after a growing delay (none for the first,
    /// then 100 ms, 150 ms, … up to 1 s), so a dispatch that forks a replacement for each
    /// does not fork as fast as the workers die. A worker that becomes ready starts the
    /// count again.
    pub fn max_boot_failures(mut self, failures: Option<u32>) -> Self {
        self.max_boot_failures = failures;
        self
    }
}

/// Checks `max_boot_failures`.
pub(crate) fn validate(failures: Option<u32>) -> Result<(), SettingsError> {
    if failures == Some(0) {
        return Err(SettingsError::new(
            "max_boot_failures",
            "must be at least 1 (None turns the guard off)",
        ));
    }
    Ok(())
}

/// What to do with the events of a worker that died before it was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Report its `disconnect` and `exit` after this delay.
    ReportAfter(Duration),
    /// Too many in a row: stop the cluster.
    GiveUp {
        /// Failures in a row.
        failures: u32,
    },
}

/// Consecutive start-up failures, as plain logic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BootFailures {
    consecutive: u32,
}

impl BootFailures {
    /// A worker became ready: the count starts again.
    pub(crate) fn on_ready(&mut self) {
        self.consecutive = 0;
    }

    /// A worker died before it was ready; `limit` is `max_boot_failures`.
    pub(crate) fn on_failure(&mut self, limit: u32) -> Verdict {
        self.consecutive = self.consecutive.saturating_add(1);
        if self.consecutive >= limit.max(1) {
            return Verdict::GiveUp {
                failures: self.consecutive,
            };
        }
        let policy = RestartPolicy {
            max_restart_delay: MAX_BOOT_BACKOFF,
            ..RestartPolicy::default()
        };
        Verdict::ReportAfter(backoff(&policy, self.consecutive))
    }
}

/// The cluster's guard: the count, and the error once it gave up.
#[derive(Debug, Default)]
pub(crate) struct BootGuard {
    failures: Mutex<BootFailures>,
    gave_up: Mutex<Option<String>>,
}

impl BootGuard {
    /// A worker became ready (`listening` or `ready`).
    pub(crate) fn ready(&self) {
        lock(&self.failures).on_ready();
    }

    /// A worker died before it was ready with `exit` (a description).
    pub(crate) fn failed(&self, limit: u32, worker: &Worker, exit: &str) -> Verdict {
        let verdict = lock(&self.failures).on_failure(limit);
        match verdict {
            Verdict::GiveUp { failures } => {
                let error = format!(
                    "{failures} workers in a row died before they were ready (the last, pid {}, \
                     with {exit}); stopping instead of forking more (Settings::max_boot_failures)",
                    worker.pid()
                );
                tracing::error!("{error}");
                lock(&self.gave_up).get_or_insert(error);
            }
            Verdict::ReportAfter(delay) => tracing::warn!(
                id = worker.id(),
                pid = worker.pid(),
                ?delay,
                "worker died before it was ready ({exit}); its events come after {delay:?}"
            ),
        }
        verdict
    }

    /// Why the cluster gave up, once it has.
    pub(crate) fn gave_up(&self) -> Option<String> {
        lock(&self.gave_up).clone()
    }
}

/// True while `worker` counts as starting: not ready, not listening, and not asked to go by
/// the master (stop, reload, replacement).
pub(crate) fn booting(worker: &Worker) -> bool {
    !worker.is_ready()
        && worker.state() < WorkerState::Listening
        && !worker.exit_reason().is_some_and(|r| r.is_planned())
        && worker.replace_reason().is_none()
}

/// True when `worker`, which ended with `exit`, died before it was ready: it was still
/// starting and exited by itself with a non-zero code. Code 0 is a one-off job done; a
/// signal is someone's kill (the dispatch's `Worker::kill`, an operator) as often as a crash.
pub(crate) fn died_booting(worker: &Worker, exit: &crate::worker::Exit) -> bool {
    booting(worker) && exit.code.is_some_and(|code| code != 0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_then_give_up_at_the_limit() {
        let mut failures = BootFailures::default();
        let delays: Vec<Verdict> = (0..4).map(|_| failures.on_failure(5)).collect();
        assert_eq!(
            delays,
            [
                Verdict::ReportAfter(Duration::ZERO),
                Verdict::ReportAfter(Duration::from_millis(100)),
                Verdict::ReportAfter(Duration::from_millis(150)),
                Verdict::ReportAfter(Duration::from_millis(225)),
            ]
        );
        assert_eq!(failures.on_failure(5), Verdict::GiveUp { failures: 5 });
    }

    #[test]
    fn a_ready_worker_starts_the_count_again() {
        let mut failures = BootFailures::default();
        for _ in 0..4 {
            failures.on_failure(5);
        }
        failures.on_ready();
        assert_eq!(failures.on_failure(5), Verdict::ReportAfter(Duration::ZERO));
        assert_eq!(
            failures.on_failure(5),
            Verdict::ReportAfter(Duration::from_millis(100))
        );
    }

    #[test]
    fn the_delay_is_capped() {
        let mut failures = BootFailures::default();
        let last = (0..40).map(|_| failures.on_failure(100)).last();
        assert_eq!(last, Some(Verdict::ReportAfter(MAX_BOOT_BACKOFF)));
    }

    #[test]
    fn a_limit_of_zero_is_refused_naming_the_setting() {
        let error = validate(Some(0)).expect_err("refused");
        assert_eq!(error.setting, "max_boot_failures");
        assert!(validate(None).is_ok() && validate(Some(1)).is_ok());
    }
}
