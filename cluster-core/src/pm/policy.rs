//! The restart policy of a group, as plain logic over timestamps: which exits are fatal,
//! how long to wait before the next fork, when to give up for a while.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// No setting makes fatal restarts come faster than this: a worker that dies at boot never
/// becomes a fork storm.
pub const MIN_RESTART_DELAY: Duration = Duration::from_millis(100);

/// How a group replaces workers that die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Fatal exits within `pause_after_fatal` that make the group give up (pm's
    /// `max_fatal_restart`, default 5).
    pub max_fatal_restart: usize,
    /// The window for counting fatal exits, and how long to wait after giving up (pm's
    /// `pause_after_fatal`, default 60 s).
    pub pause_after_fatal: Duration,
    /// The delay before the first restart after a fatal exit (default 100 ms, never less);
    /// each further consecutive fatal exit multiplies it by 1.5, up to `max_restart_delay`
    /// (pm2's `exp_backoff_restart_delay`).
    pub restart_delay: Duration,
    /// The largest backoff delay (default 15 s).
    pub max_restart_delay: Duration,
    /// A worker that ran this long resets the backoff (default 30 s).
    pub stable_uptime: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_fatal_restart: 5,
            pause_after_fatal: Duration::from_secs(60),
            restart_delay: MIN_RESTART_DELAY,
            max_restart_delay: Duration::from_secs(15),
            stable_uptime: Duration::from_secs(30),
        }
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fork the replacement at this instant.
    RestartAt(Instant),
    /// Too many fatal exits: emit `giveup` and fork nothing before this instant.
    GiveUp {
        /// Fatal exits counted in the window.
        fatals: usize,
        /// Until when.
        until: Instant,
    },
}

/// The policy's memory for one group.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    fatal_times: VecDeque<Instant>,
    consecutive_fatals: u32,
}

impl PolicyState {
    /// Records an exit at `now` of a worker that ran for `uptime`, and decides.
    pub(crate) fn on_exit(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        fatal: bool,
        uptime: Duration,
    ) -> Decision {
        if uptime >= policy.stable_uptime {
            self.consecutive_fatals = 0;
        }
        if !fatal {
            return Decision::RestartAt(now);
        }
        self.consecutive_fatals += 1;
        while self
            .fatal_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.pause_after_fatal)
        {
            self.fatal_times.pop_front();
        }
        self.fatal_times.push_back(now);
        if self.fatal_times.len() >= policy.max_fatal_restart.max(1) {
            let fatals = self.fatal_times.len();
            self.fatal_times.clear();
            self.consecutive_fatals = 0;
            return Decision::GiveUp {
                fatals,
                until: now + policy.pause_after_fatal.max(MIN_RESTART_DELAY),
            };
        }
        Decision::RestartAt(now + self.backoff(policy))
    }

    /// The delay for the current run of consecutive fatal exits.
    fn backoff(&self, policy: &RestartPolicy) -> Duration {
        let base = policy.restart_delay.max(MIN_RESTART_DELAY);
        let exponent = self.consecutive_fatals.saturating_sub(1).min(64) as i32;
        let delay = base.as_secs_f64() * 1.5f64.powi(exponent);
        Duration::from_secs_f64(delay.min(policy.max_restart_delay.max(base).as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_fatal_restart: 5,
            pause_after_fatal: Duration::from_secs(60),
            restart_delay: Duration::from_millis(200),
            max_restart_delay: Duration::from_secs(1),
            stable_uptime: Duration::from_secs(30),
        }
    }

    fn delay(decision: Decision, now: Instant) -> Duration {
        match decision {
            Decision::RestartAt(at) => at - now,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn fatal_exits_back_off_exponentially_up_to_the_cap() {
        let policy = RestartPolicy {
            max_fatal_restart: 100,
            ..policy()
        };
        let mut state = PolicyState::default();
        let now = Instant::now();
        let delays: Vec<u128> = (0..6)
            .map(|_| delay(state.on_exit(&policy, now, true, Duration::ZERO), now).as_millis())
            .collect();
        assert_eq!(delays, [200, 300, 450, 675, 1000, 1000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff_and_clean_exits_restart_at_once() {
        let mut state = PolicyState::default();
        let now = Instant::now();
        state.on_exit(&policy(), now, true, Duration::ZERO);
        state.on_exit(&policy(), now, true, Duration::ZERO);
        let after_stable = state.on_exit(&policy(), now, true, Duration::from_secs(31));
        assert_eq!(delay(after_stable, now), Duration::from_millis(200));
        assert_eq!(
            state.on_exit(&policy(), now, false, Duration::ZERO),
            Decision::RestartAt(now)
        );
    }

    #[test]
    fn five_fatal_exits_in_the_window_give_up_for_the_pause() {
        let mut state = PolicyState::default();
        let start = Instant::now();
        for i in 0..4 {
            let now = start + Duration::from_secs(i);
            assert!(matches!(
                state.on_exit(&policy(), now, true, Duration::ZERO),
                Decision::RestartAt(_)
            ));
        }
        let now = start + Duration::from_secs(4);
        assert_eq!(
            state.on_exit(&policy(), now, true, Duration::ZERO),
            Decision::GiveUp {
                fatals: 5,
                until: now + Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn fatal_exits_outside_the_window_do_not_count() {
        let mut state = PolicyState::default();
        let start = Instant::now();
        for i in 0..10 {
            let now = start + Duration::from_secs(61 * i);
            assert!(matches!(
                state.on_exit(&policy(), now, true, Duration::ZERO),
                Decision::RestartAt(_)
            ));
        }
    }

    #[test]
    fn no_setting_restarts_faster_than_the_floor() {
        let reckless = RestartPolicy {
            max_fatal_restart: usize::MAX,
            restart_delay: Duration::ZERO,
            max_restart_delay: Duration::ZERO,
            ..policy()
        };
        let mut state = PolicyState::default();
        let now = Instant::now();
        for _ in 0..10 {
            let d = delay(state.on_exit(&reckless, now, true, Duration::ZERO), now);
            assert!(d >= MIN_RESTART_DELAY, "{d:?}");
        }
    }
}
