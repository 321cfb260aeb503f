//! The restart policy of a group, as plain logic over timestamps: which exits count against
//! the group, how long to wait before the next fork, when to give up for a while.
//!
//! An exit counts only when it is *unstable* (pm2's rule): the worker ended by itself before
//! it was ready, or less than `min_uptime` after it became ready. A worker the master ended on
//! purpose ([`Purpose`]) never counts, nor one that handed over after it was ready (its
//! replacement was started first), nor one that served past `min_uptime`. Exits are counted
//! along chains of replacements ([`Slot`]), as pm2 counts them per process.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::settings::SettingsError;

/// No setting makes restarts after unstable exits come faster than this (from the second
/// consecutive one on), and `min_uptime` may not be shorter: a worker that dies at boot, or
/// right after it became ready, never becomes a fork storm.
pub const MIN_RESTART_DELAY: Duration = Duration::from_millis(100);

/// How a group replaces workers that die.
///
/// Unstable exits are counted per worker slot, as pm2 counts them per process: a replacement
/// takes the place of the worker that ended, with its history. A crash loop is a chain of
/// replacements that each end unstably; young workers ended here and there (a reload's, a
/// scale-up's, killed by an operator) do not add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Unstable exits in one chain of replacements within `pause_after_fatal`, with no stable
    /// exit between them, that make the group give up (pm's `max_fatal_restart`, default 5;
    /// at least 1).
    pub max_fatal_restart: usize,
    /// The window for counting unstable exits, and how long to wait after giving up (pm's
    /// `pause_after_fatal`, default 60 s).
    pub pause_after_fatal: Duration,
    /// The first unstable exit of a chain is replaced at once; the second waits this long
    /// (default 100 ms, never less) and each further consecutive one 1.5 times longer, up to
    /// `max_restart_delay` (pm2's `exp_backoff_restart_delay`).
    pub restart_delay: Duration,
    /// The largest backoff delay (default 15 s).
    pub max_restart_delay: Duration,
    /// A worker that exits less than this long after it became ready (or before) exited
    /// unstably (pm2's `min_uptime`, default 1 s, at least [`MIN_RESTART_DELAY`]). An exit
    /// after it is stable: replaced at once, and it ends the run of unstable exits (backoff
    /// and give-up count start again from zero).
    pub min_uptime: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_fatal_restart: 5,
            pause_after_fatal: Duration::from_secs(60),
            restart_delay: MIN_RESTART_DELAY,
            max_restart_delay: Duration::from_secs(15),
            min_uptime: Duration::from_secs(1),
        }
    }
}

impl RestartPolicy {
    /// Checks the settings; the error names the bad one.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_fatal_restart == 0 {
            return Err(SettingsError {
                setting: "max_fatal_restart",
                reason: "must be at least 1".into(),
            });
        }
        if self.min_uptime < MIN_RESTART_DELAY {
            return Err(SettingsError {
                setting: "min_uptime",
                reason: format!(
                    "{:?} is shorter than {MIN_RESTART_DELAY:?}: a worker crashing right after it \
                     became ready would be restarted at once, again and again",
                    self.min_uptime
                ),
            });
        }
        Ok(())
    }
}

/// Why the master ended a worker on purpose. Such an exit never counts against the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Retired by the group: scale-down, the old generation of a reload, or the new
    /// generation of a failed one.
    Retired,
    /// The master is stopping (its kill at `stop_timeout` included).
    Stopping,
    /// The master replaced it: hung (watchdog) or recycled (requests, memory, age).
    Replaced,
}

/// How a worker ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The master ended it.
    OnPurpose(Purpose),
    /// It said it was going (graceful's hand-over after a panic, its own `disconnect()`)
    /// after it had been ready: the group replaced it at once, and it left in order.
    HandedOver,
    /// It ended by itself (crash, exit, a panic's hand-over) or someone else killed it.
    Unexpected {
        /// How long it had been ready; `None` if it never was.
        ready_for: Option<Duration>,
    },
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fork the replacement at this instant.
    RestartAt(Instant),
    /// Too many unstable exits: emit `giveup` and fork nothing before this instant.
    GiveUp {
        /// Unstable exits counted in the window.
        fatals: usize,
        /// Until when.
        until: Instant,
    },
}

/// The history a worker inherits from the workers it replaces: pm2 counts unstable restarts
/// per process, and a replacement takes the place of the worker that ended. Only a chain of
/// replacements that each end unstably is a crash loop; young workers killed here and there
/// (a reload's or a scale-up's, by an operator) are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Unstable exits in this chain within the window (cleared by a stable one).
    unstable: VecDeque<Instant>,
    /// Consecutive unstable exits in this chain (the backoff's exponent).
    consecutive: u32,
}

/// The policy's memory for one group: the slots of ended workers waiting for their
/// replacement.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    vacant: VecDeque<Slot>,
}

impl PolicyState {
    /// The slot for a worker about to be forked: a vacant one if a replacement is due, else
    /// a fresh one.
    pub(crate) fn fill_slot(&mut self) -> Slot {
        self.vacant.pop_front().unwrap_or_default()
    }

    /// Nothing is missing in the group: slots left vacant (their workers were replaced by a
    /// reload or are no longer wanted) are forgotten.
    pub(crate) fn forget_vacant(&mut self) {
        self.vacant.clear();
    }

    /// Records that the worker holding `slot` ended at `now`, and decides. The slot stays
    /// vacant for the replacement, unless the master ended the worker on purpose.
    pub(crate) fn on_exit(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        ending: Ending,
        mut slot: Slot,
    ) -> Decision {
        let ready_for = match ending {
            Ending::OnPurpose(_) => return Decision::RestartAt(now),
            Ending::HandedOver => {
                self.vacant.push_back(slot);
                return Decision::RestartAt(now);
            }
            Ending::Unexpected { ready_for } => ready_for,
        };
        if ready_for.is_some_and(|up| up >= policy.min_uptime) {
            self.vacant.push_back(Slot::default());
            return Decision::RestartAt(now);
        }
        slot.consecutive += 1;
        while slot
            .unstable
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.pause_after_fatal)
        {
            slot.unstable.pop_front();
        }
        slot.unstable.push_back(now);
        if slot.unstable.len() >= policy.max_fatal_restart.max(1) {
            // After the pause, a fresh start.
            self.vacant.push_back(Slot::default());
            return Decision::GiveUp {
                fatals: slot.unstable.len(),
                until: now + policy.pause_after_fatal.max(MIN_RESTART_DELAY),
            };
        }
        let delay = backoff(policy, slot.consecutive);
        self.vacant.push_back(slot);
        Decision::RestartAt(now + delay)
    }
}

/// The delay after the `consecutive`-th unstable exit in a row: none for the first.
pub(crate) fn backoff(policy: &RestartPolicy, consecutive: u32) -> Duration {
    if consecutive <= 1 {
        return Duration::ZERO;
    }
    let base = policy.restart_delay.max(MIN_RESTART_DELAY);
    let exponent = (consecutive - 2).min(64) as i32;
    let delay = base.as_secs_f64() * 1.5f64.powi(exponent);
    Duration::from_secs_f64(delay.min(policy.max_restart_delay.max(base).as_secs_f64()))
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
            min_uptime: Duration::from_secs(1),
        }
    }

    /// Ended by itself after being ready for `ms` milliseconds.
    fn ready_for(ms: u64) -> Ending {
        Ending::Unexpected {
            ready_for: Some(Duration::from_millis(ms)),
        }
    }

    const BOOT_CRASH: Ending = Ending::Unexpected { ready_for: None };

    /// One chain: each exit's replacement takes the slot it left.
    fn exit(
        state: &mut PolicyState,
        policy: &RestartPolicy,
        now: Instant,
        ending: Ending,
    ) -> Decision {
        let slot = state.fill_slot();
        state.on_exit(policy, now, ending, slot)
    }

    fn delay(decision: Decision, now: Instant) -> Duration {
        match decision {
            Decision::RestartAt(at) => at - now,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn the_first_unstable_exit_restarts_at_once_then_backoff_grows_up_to_the_cap() {
        let policy = RestartPolicy {
            max_fatal_restart: 100,
            ..policy()
        };
        let mut state = PolicyState::default();
        let now = Instant::now();
        let delays: Vec<u128> = (0..7)
            .map(|_| delay(exit(&mut state, &policy, now, BOOT_CRASH), now).as_millis())
            .collect();
        assert_eq!(delays, [0, 200, 300, 450, 675, 1000, 1000]);
    }

    #[test]
    fn min_uptime_after_ready_is_the_line_between_unstable_and_stable() {
        let policy = RestartPolicy {
            max_fatal_restart: 100,
            ..policy()
        };
        let mut state = PolicyState::default();
        let now = Instant::now();
        // Just short of min_uptime: unstable, so the second one backs off.
        exit(&mut state, &policy, now, ready_for(999));
        assert_eq!(
            delay(exit(&mut state, &policy, now, ready_for(999)), now),
            Duration::from_millis(200)
        );
        // At min_uptime: stable, at once, and the run is over.
        assert_eq!(
            delay(exit(&mut state, &policy, now, ready_for(1000)), now),
            Duration::ZERO
        );
        assert_eq!(
            delay(exit(&mut state, &policy, now, BOOT_CRASH), now),
            Duration::ZERO
        );
        assert_eq!(
            delay(exit(&mut state, &policy, now, BOOT_CRASH), now),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn workers_killed_after_min_uptime_never_give_the_group_up() {
        // The case: healthy workers SIGKILLed every 1.5 s, each after 1.5 s of serving.
        let mut state = PolicyState::default();
        let start = Instant::now();
        for i in 0..50 {
            let now = start + Duration::from_millis(1500 * i);
            assert_eq!(
                exit(&mut state, &policy(), now, ready_for(1500)),
                Decision::RestartAt(now)
            );
        }
    }

    #[test]
    fn exits_the_master_caused_and_hand_overs_never_count() {
        let mut state = PolicyState::default();
        let now = Instant::now();
        let orderly = [
            Ending::OnPurpose(Purpose::Retired),
            Ending::OnPurpose(Purpose::Stopping),
            Ending::OnPurpose(Purpose::Replaced),
            Ending::HandedOver,
        ];
        for ending in orderly.repeat(10) {
            assert_eq!(
                exit(&mut state, &policy(), now, ending),
                Decision::RestartAt(now)
            );
        }
        // A hand-over passes its slot on as it was: the run goes on.
        exit(&mut state, &policy(), now, BOOT_CRASH);
        exit(&mut state, &policy(), now, Ending::HandedOver);
        assert_eq!(
            delay(exit(&mut state, &policy(), now, BOOT_CRASH), now),
            Duration::from_millis(200)
        );
        // A worker the master retires leaves no slot: nothing replaces it.
        exit(
            &mut state,
            &policy(),
            now,
            Ending::OnPurpose(Purpose::Retired),
        );
        assert_eq!(state.fill_slot(), Slot::default());
    }

    #[test]
    fn five_unstable_exits_in_the_window_give_up_for_the_pause() {
        let mut state = PolicyState::default();
        let start = Instant::now();
        for i in 0..4 {
            let now = start + Duration::from_secs(i);
            assert!(matches!(
                exit(&mut state, &policy(), now, ready_for(500)),
                Decision::RestartAt(_)
            ));
        }
        let now = start + Duration::from_secs(4);
        assert_eq!(
            exit(&mut state, &policy(), now, BOOT_CRASH),
            Decision::GiveUp {
                fatals: 5,
                until: now + Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn unstable_exits_in_different_chains_do_not_add_up() {
        // Young workers of a reload or a scale-up killed one after the other: none of them
        // replaced another that had ended unstably.
        let mut state = PolicyState::default();
        let now = Instant::now();
        for _ in 0..20 {
            assert_eq!(
                state.on_exit(&policy(), now, ready_for(300), Slot::default()),
                Decision::RestartAt(now)
            );
            state.forget_vacant();
        }
        // Two chains at once (a group of two crashing at boot): each counts its own.
        let (mut a, mut b) = (state.fill_slot(), state.fill_slot());
        for _ in 0..4 {
            assert!(matches!(
                state.on_exit(&policy(), now, BOOT_CRASH, a),
                Decision::RestartAt(_)
            ));
            assert!(matches!(
                state.on_exit(&policy(), now, BOOT_CRASH, b),
                Decision::RestartAt(_)
            ));
            (a, b) = (state.fill_slot(), state.fill_slot());
        }
        assert!(matches!(
            state.on_exit(&policy(), now, BOOT_CRASH, a),
            Decision::GiveUp { fatals: 5, .. }
        ));
    }

    #[test]
    fn a_stable_exit_starts_the_count_again() {
        let mut state = PolicyState::default();
        let now = Instant::now();
        for _ in 0..3 {
            for _ in 0..4 {
                exit(&mut state, &policy(), now, BOOT_CRASH);
            }
            assert_eq!(
                exit(&mut state, &policy(), now, ready_for(5000)),
                Decision::RestartAt(now)
            );
        }
    }

    #[test]
    fn unstable_exits_outside_the_window_do_not_count() {
        let mut state = PolicyState::default();
        let start = Instant::now();
        for i in 0..10 {
            let now = start + Duration::from_secs(61 * i);
            assert!(matches!(
                exit(&mut state, &policy(), now, BOOT_CRASH),
                Decision::RestartAt(_)
            ));
        }
    }

    #[test]
    fn no_setting_restarts_a_run_of_unstable_exits_faster_than_the_floor() {
        let reckless = RestartPolicy {
            max_fatal_restart: usize::MAX,
            restart_delay: Duration::ZERO,
            max_restart_delay: Duration::ZERO,
            ..policy()
        };
        let mut state = PolicyState::default();
        let now = Instant::now();
        exit(&mut state, &reckless, now, BOOT_CRASH);
        for _ in 0..10 {
            let d = delay(exit(&mut state, &reckless, now, BOOT_CRASH), now);
            assert!(d >= MIN_RESTART_DELAY, "{d:?}");
        }
    }

    #[test]
    fn bad_settings_are_errors_naming_them() {
        let short = RestartPolicy {
            min_uptime: Duration::from_millis(99),
            ..policy()
        };
        assert_eq!(short.validate().map_err(|e| e.setting), Err("min_uptime"));
        let never = RestartPolicy {
            max_fatal_restart: 0,
            ..policy()
        };
        assert_eq!(
            never.validate().map_err(|e| e.setting),
            Err("max_fatal_restart")
        );
        assert!(RestartPolicy::default().validate().is_ok());
    }
}
