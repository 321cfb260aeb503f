//! The master's own replacement recipe ([`Respawn`], on by default): a worker that hands over
//! (a panic under `graceful`, its own `disconnect()`), crashes, or is killed from outside is
//! replaced by [`crate::Cluster::run`], under pm's restart policy (`pm/policy.rs`: unstable
//! exits back off and a crash loop pauses), so the dispatch code writes no replacement
//! callback.
//!
//! Not replaced: workers the master's code ended ([`crate::Worker::disconnect`],
//! [`crate::Worker::kill`]), those a reload, a scale-down or a stop retired, and every worker
//! once the cluster stops. Replaced at once: those the master replaces itself (watchdog,
//! recycling). A callback that forks while a worker's `disconnect` or `exit` callbacks run
//! has replaced that worker: the master then forks nothing more for it, so the seed's
//! `on_disconnect` dispatch keeps working without double replacements (a fork from an
//! [`crate::EventStream`] task is not seen: use [`Respawn::Manual`] there).
//!
//! The decision is plain logic over what the master knows of the worker ([`Ending`] of
//! `pm/policy.rs`); this file maps a worker to it and keeps the chains of replacements.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::pm::policy::{Decision, Ending, PolicyState, Purpose, RestartPolicy, Slot};
use crate::settings::{Settings, SettingsError};
use crate::worker::WorkerState;

/// Who replaces workers that go away.
///
/// ```
/// use cluster_core::{Respawn, Settings};
/// use cluster_core::pm::RestartPolicy;
///
/// // The default: the master replaces workers, with pm's crash-loop rules.
/// let settings = Settings::new();
/// // The same with a shorter pause after a crash loop.
/// let settings = Settings::new().respawn(Respawn::Replace(RestartPolicy {
///     pause_after_fatal: std::time::Duration::from_secs(10),
///     ..RestartPolicy::default()
/// }));
/// // Node's way: the dispatch forks in its callbacks, the master never does.
/// let settings = Settings::new().respawn(Respawn::Manual);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Respawn {
    /// [`crate::Cluster::run`] replaces a worker that hands over, crashes or is killed from
    /// outside, with the old worker's fork environment, under this policy: at once, unless
    /// it continues a chain of unstable exits (before ready, or less than `min_uptime`
    /// after), which back off (100 ms, ×1.5, at most `max_restart_delay`); after
    /// `max_fatal_restart` of them within `pause_after_fatal`, nothing is forked for that
    /// long (an error is logged, and connections are refused if no worker is left). Workers
    /// that die before they are ready also count against
    /// [`Settings::max_boot_failures`], which stops the master.
    Replace(RestartPolicy),
    /// The master forks nothing by itself: the dispatch does, in its callbacks (Node's
    /// `cluster`), or from an [`crate::EventStream`].
    Manual,
}

impl Default for Respawn {
    fn default() -> Self {
        Respawn::Replace(RestartPolicy::default())
    }
}

impl Settings {
    /// Who replaces workers that go away (default [`Respawn::Replace`] with pm's policy:
    /// the master does, in [`crate::Cluster::run`]). pm groups ignore it (their own policy
    /// replaces their workers).
    pub fn respawn(mut self, respawn: Respawn) -> Self {
        self.respawn = respawn;
        self
    }
}

/// Checks the policy of `respawn`.
pub(crate) fn validate(respawn: &Respawn) -> Result<(), SettingsError> {
    match respawn {
        Respawn::Replace(policy) => policy.validate(),
        Respawn::Manual => Ok(()),
    }
}

/// What the master knows of a worker that is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Going {
    /// The cluster is stopping.
    pub(crate) stopping: bool,
    /// The master replaces it on purpose (watchdog, recycling).
    pub(crate) replaced_by_master: bool,
    /// The master's code or the master ended it (disconnect, kill, reload, scale-down,
    /// stop).
    pub(crate) ended_on_purpose: bool,
    /// It said it was going (a hand-over, its own disconnect).
    pub(crate) announced: bool,
    /// It exited (else only its channel is closed).
    pub(crate) exited: bool,
    /// How long it had been ready; `None` if it never was.
    pub(crate) ready_for: Option<Duration>,
}

/// How the policy sees the ending; `None`: not to be replaced, or not yet (it is still
/// running and did not announce it was going).
pub(crate) fn ending(going: &Going) -> Option<Ending> {
    if going.stopping {
        return None;
    }
    if going.replaced_by_master {
        return Some(Ending::OnPurpose(Purpose::Replaced));
    }
    if going.ended_on_purpose {
        return None;
    }
    match (going.announced, going.ready_for) {
        (true, Some(_)) => Some(Ending::HandedOver),
        (true, None) => Some(Ending::Unexpected { ready_for: None }),
        (false, ready_for) if going.exited => Some(Ending::Unexpected { ready_for }),
        (false, _) => None,
    }
}

/// A replacement to fork later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) at: Instant,
    /// The worker it replaces.
    pub(crate) old: u32,
    pub(crate) env: Vec<(String, String)>,
}

/// What to do now for a worker that is going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing: not to be replaced, replaced already, or not yet judged.
    Nothing,
    /// Fork the replacement now.
    ForkNow,
    /// Fork it at `Due::at` (a backoff).
    Later,
    /// A crash loop: nothing before `until` (the replacement is due then).
    GiveUp {
        /// Unstable exits counted.
        fatals: usize,
        /// Until when.
        until: Instant,
    },
}

/// The respawn's memory: chains of replacements, workers already judged, forks to come.
#[derive(Debug, Default)]
pub(crate) struct Respawner {
    policy: PolicyState,
    /// The chain each replacement continues (workers forked by the dispatch have none yet).
    slots: HashMap<u32, Slot>,
    /// Workers judged (or replaced by a callback): never again.
    settled: HashSet<u32>,
    due: Vec<Due>,
}

impl Respawner {
    /// A callback forked while `old`'s `disconnect` or `exit` callbacks ran: that fork is
    /// its replacement.
    pub(crate) fn replaced_by_callback(&mut self, old: u32) {
        self.settled.insert(old);
    }

    /// Judges worker `id`, once; `env` is its fork environment, for a later fork.
    pub(crate) fn judge(
        &mut self,
        policy: &RestartPolicy,
        id: u32,
        going: &Going,
        env: Vec<(String, String)>,
        now: Instant,
    ) -> Verdict {
        if self.settled.contains(&id) {
            return Verdict::Nothing;
        }
        let Some(ending) = ending(going) else {
            if going.exited || going.stopping || going.ended_on_purpose {
                self.settled.insert(id);
                self.slots.remove(&id);
            }
            return Verdict::Nothing;
        };
        self.settled.insert(id);
        let slot = self.slots.remove(&id).unwrap_or_default();
        match self.policy.on_exit(policy, now, ending, slot) {
            Decision::RestartAt(at) if at <= now => Verdict::ForkNow,
            Decision::RestartAt(at) => {
                self.due.push(Due { at, old: id, env });
                Verdict::Later
            }
            Decision::GiveUp { fatals, until } => {
                self.due.push(Due {
                    at: until,
                    old: id,
                    env,
                });
                Verdict::GiveUp { fatals, until }
            }
        }
    }

    /// `new` was forked by the respawn: it continues the chain of the worker it replaces.
    pub(crate) fn forked(&mut self, new: u32) {
        let slot = self.policy.fill_slot();
        self.slots.insert(new, slot);
    }

    /// Worker `id` was reaped: forget it.
    pub(crate) fn reaped(&mut self, id: u32) {
        self.settled.remove(&id);
        self.slots.remove(&id);
    }

    /// When the next replacement is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.iter().map(|d| d.at).min()
    }

    /// The replacements due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let (ready, later) = std::mem::take(&mut self.due)
            .into_iter()
            .partition(|d| d.at <= now);
        self.due = later;
        ready
    }

    /// The cluster stops: nothing more is forked.
    pub(crate) fn clear(&mut self) {
        self.due.clear();
        self.policy.forget_vacant();
    }
}

impl crate::Cluster {
    /// After the callbacks of `event` ran: replaces the worker it is about, if it must be.
    pub(crate) fn respawn_after(&self, event: &crate::Event) {
        let (worker, exited) = match event {
            crate::Event::Disconnect(worker) => (worker, false),
            crate::Event::Exit(worker, _) => (worker, true),
            _ => return,
        };
        let (policy, wait_ready) = {
            let settings = self.shared.settings();
            match settings.respawn {
                Respawn::Replace(policy) => (policy, settings.wait_ready),
                Respawn::Manual => return,
            }
        };
        let now = Instant::now();
        let going = Going {
            stopping: self.shared.is_stopping(),
            replaced_by_master: worker.replace_reason().is_some(),
            ended_on_purpose: worker.ended_by_master()
                || worker.exit_reason().is_some_and(|r| r.is_planned()),
            announced: worker.exited_after_disconnect(),
            exited,
            ready_for: worker
                .ready_at(wait_ready)
                .map(|at| now.saturating_duration_since(at)),
        };
        let env = worker.fork_env().to_vec();
        let verdict = lock(&self.shared.respawner).judge(&policy, worker.id(), &going, env, now);
        match verdict {
            Verdict::Nothing | Verdict::Later => {}
            Verdict::ForkNow => self.fork_replacement(worker.id(), worker.fork_env()),
            Verdict::GiveUp { fatals, until } => {
                let pause = until.saturating_duration_since(now);
                tracing::error!(
                    fatals,
                    "{fatals} workers in a row ended unstably (each before it was ready or \
                     less than min_uptime after); no replacement for {pause:?} (Respawn policy)"
                );
                let nobody_serves = self
                    .workers()
                    .iter()
                    .all(|w| w.id() == worker.id() || w.state() >= WorkerState::Disconnecting);
                if nobody_serves {
                    self.refuse_connections(true);
                }
            }
        }
        if exited {
            lock(&self.shared.respawner).reaped(worker.id());
        }
    }

    /// Forks the replacements whose backoff or pause is over.
    pub(crate) fn fork_due_replacements(&self) {
        let due = lock(&self.shared.respawner).take_due(Instant::now());
        if !due.is_empty() {
            self.refuse_connections(false);
        }
        for due in due {
            self.fork_replacement(due.old, &due.env);
        }
    }

    /// When the next replacement is due, if one is.
    pub(crate) fn next_replacement_due(&self) -> Option<Instant> {
        lock(&self.shared.respawner).next_due()
    }

    fn fork_replacement(&self, old: u32, env: &[(String, String)]) {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match self.fork(&env) {
            Ok(new) => {
                tracing::info!(old, new = new.id(), pid = new.pid(), "replacement forked");
                lock(&self.shared.respawner).forked(new.id());
            }
            Err(crate::ForkError::Stopping) => lock(&self.shared.respawner).clear(),
            Err(e) => tracing::error!(old, "could not fork a replacement: {e}"),
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crashed(ready_for: Option<u64>) -> Going {
        Going {
            exited: true,
            ready_for: ready_for.map(Duration::from_millis),
            ..Going::default()
        }
    }

    fn handed_over() -> Going {
        Going {
            announced: true,
            ready_for: Some(Duration::from_millis(10)),
            ..Going::default()
        }
    }

    #[test]
    fn what_is_replaced_and_what_is_not() {
        assert_eq!(ending(&handed_over()), Some(Ending::HandedOver));
        assert_eq!(
            ending(&crashed(Some(5))),
            Some(Ending::Unexpected {
                ready_for: Some(Duration::from_millis(5))
            })
        );
        // Its channel closed but it has not exited, and it said nothing: wait for the exit.
        assert_eq!(
            ending(&Going {
                exited: false,
                ..crashed(None)
            }),
            None
        );
        let replaced = Going {
            replaced_by_master: true,
            ..handed_over()
        };
        assert_eq!(
            ending(&replaced),
            Some(Ending::OnPurpose(Purpose::Replaced))
        );
        let stopped_by_the_user = Going {
            ended_on_purpose: true,
            ..crashed(Some(5000))
        };
        assert_eq!(ending(&stopped_by_the_user), None);
        let stopping = Going {
            stopping: true,
            ..replaced
        };
        assert_eq!(ending(&stopping), None);
    }

    #[test]
    fn hand_overs_are_replaced_at_once_however_many() {
        let mut respawner = Respawner::default();
        let now = Instant::now();
        for id in 1..=20 {
            let verdict =
                respawner.judge(&RestartPolicy::default(), id, &handed_over(), vec![], now);
            assert_eq!(verdict, Verdict::ForkNow);
            respawner.forked(id + 100);
        }
        assert_eq!(respawner.next_due(), None);
    }

    #[test]
    fn each_worker_is_judged_once() {
        let mut respawner = Respawner::default();
        let now = Instant::now();
        let policy = RestartPolicy::default();
        assert_eq!(
            respawner.judge(&policy, 1, &handed_over(), vec![], now),
            Verdict::ForkNow
        );
        assert_eq!(
            respawner.judge(&policy, 1, &crashed(Some(10)), vec![], now),
            Verdict::Nothing
        );
        respawner.replaced_by_callback(2);
        assert_eq!(
            respawner.judge(&policy, 2, &crashed(None), vec![], now),
            Verdict::Nothing
        );
    }

    #[test]
    fn a_crash_loop_backs_off_then_pauses() {
        let mut respawner = Respawner::default();
        let policy = RestartPolicy::default();
        let now = Instant::now();
        let env = vec![("ROLE".to_string(), "a".to_string())];
        let mut verdicts = Vec::new();
        for id in 1..=5 {
            verdicts.push(respawner.judge(&policy, id, &crashed(None), env.clone(), now));
            respawner.forked(id + 1);
        }
        assert_eq!(verdicts[0], Verdict::ForkNow);
        assert!(verdicts[1..4].iter().all(|v| *v == Verdict::Later));
        assert_eq!(
            verdicts[4],
            Verdict::GiveUp {
                fatals: 5,
                until: now + policy.pause_after_fatal
            }
        );
        assert_eq!(respawner.next_due(), Some(now + Duration::from_millis(100)));
        let due = respawner.take_due(now + Duration::from_millis(400));
        assert_eq!(due.len(), 3, "{due:?}");
        assert_eq!(due[0].env, env);
        assert_eq!(respawner.next_due(), Some(now + policy.pause_after_fatal));
        respawner.clear();
        assert_eq!(respawner.next_due(), None);
    }

    #[test]
    fn workers_that_served_past_min_uptime_never_pause_the_cluster() {
        let mut respawner = Respawner::default();
        let policy = RestartPolicy::default();
        let now = Instant::now();
        for id in 1..=50 {
            assert_eq!(
                respawner.judge(&policy, id, &crashed(Some(1500)), vec![], now),
                Verdict::ForkNow
            );
            respawner.forked(id + 1);
        }
    }

    #[test]
    fn a_bad_policy_is_refused_naming_the_setting() {
        let bad = Respawn::Replace(RestartPolicy {
            max_fatal_restart: 0,
            ..RestartPolicy::default()
        });
        assert_eq!(
            validate(&bad).map_err(|e| e.setting),
            Err("max_fatal_restart")
        );
        assert!(validate(&Respawn::Manual).is_ok());
    }
}
