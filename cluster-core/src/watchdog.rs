//! The hang watchdog (gunicorn's `timeout`), as plain logic over timestamps: when a worker
//! that stopped sending heartbeats is unresponsive, and how the master forgives itself for
//! having been stopped.
//!
//! A worker's runtime sends `Heartbeat` from a task on its event loop, so a loop blocked by a
//! `std::thread::sleep`, an endless loop or a deadlock stops beating, while a loop that is
//! busy but still runs its tasks keeps beating. The master's monitor ticks every
//! [`tick_interval`]; a tick that fires much later than it was due means the master itself
//! was not running (SIGSTOP, a VM pause, starvation): the heartbeats that came meanwhile are
//! still unread, so silence is counted again from the moment it woke up.

use std::time::{Duration, Instant};

use crate::settings::{Settings, SettingsError};

/// The default `heartbeat_timeout` (gunicorn's `timeout`).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest accepted `heartbeat_timeout`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest the monitor waits between two ticks.
const MAX_TICK: Duration = Duration::from_secs(1);

/// How often a worker beats: five beats per timeout, so one late beat is never a verdict.
pub(crate) fn heartbeat_interval(timeout: Duration) -> Duration {
    timeout / 5
}

/// How often the master's monitor looks at its workers.
pub(crate) fn tick_interval(timeout: Option<Duration>) -> Duration {
    timeout.map_or(MAX_TICK, |t| (t / 4).min(MAX_TICK))
}

/// The watchdog's memory: the timeout and since when silence counts.
#[derive(Debug)]
pub(crate) struct Watchdog {
    timeout: Duration,
    /// The master woke up late at this instant: no silence before it counts.
    counting_from: Option<Instant>,
}

impl Watchdog {
    pub(crate) fn new(timeout: Duration) -> Self {
        Watchdog {
            timeout,
            counting_from: None,
        }
    }

    /// Follows a settings change.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A tick due at `due` runs at `now`. If it is later than one tick interval, the master
    /// itself was not running: silence counts again from `now`. Returns how late it was
    /// when that happened.
    pub(crate) fn tick(&mut self, due: Instant, now: Instant) -> Option<Duration> {
        let late = now.saturating_duration_since(due);
        if late > tick_interval(Some(self.timeout)) {
            self.counting_from = Some(now);
            return Some(late);
        }
        None
    }

    /// A worker whose last heartbeat came at `last_beat` is unresponsive at `now` if it has
    /// been silent longer than the timeout, counting only time the master was awake.
    /// Returns how long it has been silent.
    pub(crate) fn unresponsive(&self, last_beat: Instant, now: Instant) -> Option<Duration> {
        let from = self.counting_from.map_or(last_beat, |c| c.max(last_beat));
        (now.saturating_duration_since(from) > self.timeout)
            .then(|| now.saturating_duration_since(last_beat))
    }
}

impl Settings {
    /// A worker whose runtime sends no heartbeat for this long is unresponsive (gunicorn's
    /// `timeout`; default 30 s, at least 100 ms; `None` turns the watchdog off): the master
    /// emits [`crate::Event::Replacing`] with [`crate::ReplaceReason::Unresponsive`] and
    /// `Leaving` (so the dispatch forks its replacement at once), sends it SIGABRT (a core
    /// or backtrace for the post-mortem) and SIGKILL 5 s later. The worker's runtime beats
    /// five times per timeout from a task on its event loop, so a blocked loop stops beating
    /// and a busy one does not. Watched from its first heartbeat (sent when the worker
    /// first uses `Worker::current()`) until its channel closes: run long synchronous
    /// start-up work before that, or in `spawn_blocking`. A master that was itself stopped
    /// counts no silence from before it woke up.
    pub fn heartbeat_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }
}

/// Checks `heartbeat_timeout`.
pub(crate) fn validate(timeout: Option<Duration>) -> Result<(), SettingsError> {
    match timeout {
        Some(t) if t < MIN_TIMEOUT => Err(SettingsError::new(
            "heartbeat_timeout",
            format!("{t:?} is shorter than {MIN_TIMEOUT:?}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn silence_longer_than_the_timeout_is_unresponsive() {
        let dog = Watchdog::new(SECOND);
        let beat = Instant::now();
        assert_eq!(dog.unresponsive(beat, beat + SECOND), None);
        assert_eq!(
            dog.unresponsive(beat, beat + SECOND + Duration::from_millis(1)),
            Some(SECOND + Duration::from_millis(1))
        );
    }

    #[test]
    fn a_beat_every_interval_is_never_unresponsive() {
        let dog = Watchdog::new(SECOND);
        let start = Instant::now();
        let interval = heartbeat_interval(SECOND);
        // Beats at every interval, each arriving up to a whole interval late.
        for n in 0..100u32 {
            let beat = start + interval * n;
            assert_eq!(dog.unresponsive(beat, beat + interval * 2), None);
        }
    }

    #[test]
    fn a_late_master_grants_a_whole_timeout_from_when_it_woke() {
        let mut dog = Watchdog::new(SECOND);
        let start = Instant::now();
        let tick = tick_interval(Some(SECOND));
        // On time: nothing forgiven.
        assert_eq!(dog.tick(start + tick, start + tick), None);
        // Stopped for 10 s: the tick due at 2 ticks fires 10 s later.
        let due = start + tick * 2;
        let woke = due + Duration::from_secs(10);
        assert_eq!(dog.tick(due, woke), Some(Duration::from_secs(10)));
        // Every worker's last beat read so far is from before the stop: none is unresponsive
        // until a whole timeout after the wake-up.
        assert_eq!(dog.unresponsive(start, woke), None);
        assert_eq!(dog.unresponsive(start, woke + SECOND), None);
        // A worker that stays silent after the wake-up is caught, with its real silence.
        let later = woke + SECOND + Duration::from_millis(1);
        assert_eq!(dog.unresponsive(start, later), Some(later - start));
        // A beat after the wake-up counts from the beat.
        let beat = woke + Duration::from_millis(500);
        assert_eq!(dog.unresponsive(beat, later), None);
    }

    #[test]
    fn a_slightly_late_tick_forgives_nothing() {
        let mut dog = Watchdog::new(SECOND);
        let due = Instant::now();
        assert_eq!(dog.tick(due, due + Duration::from_millis(50)), None);
        assert_eq!(
            dog.unresponsive(due, due + SECOND * 2),
            Some(SECOND * 2),
            "no grace was granted"
        );
    }

    #[test]
    fn intervals_scale_with_the_timeout() {
        assert_eq!(heartbeat_interval(SECOND), Duration::from_millis(200));
        assert_eq!(tick_interval(Some(SECOND)), Duration::from_millis(250));
        assert_eq!(tick_interval(Some(Duration::from_secs(30))), MAX_TICK);
        assert_eq!(tick_interval(None), MAX_TICK);
    }

    #[test]
    fn a_too_short_timeout_is_refused_by_name() {
        let err = validate(Some(Duration::from_millis(10))).expect_err("10 ms");
        assert_eq!(err.setting, "heartbeat_timeout");
        assert!(validate(None).is_ok());
        assert!(validate(Some(DEFAULT_TIMEOUT)).is_ok());
    }
}
