//! One group's state machine: members by generation, converging to the wanted count under
//! the restart policy, and reloads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::events::Event;
use crate::exit_reason::ExitReason;
use crate::pm::events::GroupEvent;
use crate::pm::options::GroupOptions;
use crate::pm::policy::{Decision, Ending, PolicyState, Purpose, Slot};
use crate::worker::{Worker, WorkerState};

/// A backoff at least this long refuses connections meanwhile; a shorter one lets them wait in
/// the queue for the next worker (pm's default backoff stays below it until the group gives
/// up: 0, 100, 150, 225, 337 ms).
const REFUSE_WHEN_NEXT_FORK_IN: Duration = Duration::from_secs(1);

struct Member {
    worker: Worker,
    generation: u64,
    /// Its place in a chain of replacements, until its ending has been judged.
    slot: Option<Slot>,
    /// When it became ready, once it has.
    ready_at: Option<Instant>,
    /// Ended by the master on purpose: no longer active, and its exit never counts against
    /// the group. `Retired` ones (scale-down, reload) are not replaced.
    ended_on_purpose: Option<Purpose>,
}

enum ReloadPhase {
    /// New workers are starting; all must be ready by the deadline.
    Starting { deadline: Instant },
    /// All ready; they must stay up until then.
    Stabilising { until: Instant },
    /// Old workers are being retired one at a time.
    Retiring,
}

struct Reload {
    old_generation: u64,
    phase: ReloadPhase,
}

/// A live member as the control socket shows it.
pub(crate) struct MemberSnapshot {
    pub(crate) worker: Worker,
    pub(crate) generation: u64,
    pub(crate) ready: bool,
}

pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) cluster: Cluster,
    pub(crate) options: GroupOptions,
    pub(crate) wanted: usize,
    /// The master is stopping: events are reported, nothing is forked or retired.
    pub(crate) stopping: bool,
    generation: u64,
    members: BTreeMap<u32, Member>,
    policy: PolicyState,
    next_fork_at: Option<Instant>,
    paused_until: Option<Instant>,
    reload: Option<Reload>,
}

impl Group {
    pub(crate) fn new(name: String, cluster: Cluster, options: GroupOptions) -> Self {
        Group {
            name,
            cluster,
            wanted: options.children,
            stopping: false,
            options,
            generation: 0,
            members: BTreeMap::new(),
            policy: PolicyState::default(),
            next_fork_at: None,
            paused_until: None,
            reload: None,
        }
    }

    /// Workers that count towards `wanted`: current generation, not retiring, not handing
    /// over, not being replaced by the master (watchdog, recycling). A crashed worker counts
    /// until it is reaped, so its restart goes through the policy.
    fn active(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(move |m| {
            m.generation == self.generation
                && m.ended_on_purpose.is_none()
                && m.worker.replace_reason().is_none()
                && !(m.worker.exited_after_disconnect()
                    && m.worker.state() >= WorkerState::Disconnecting)
        })
    }

    /// The newest live worker.
    pub(crate) fn newest(&self) -> Option<Worker> {
        self.members.values().last().map(|m| m.worker.clone())
    }

    pub(crate) fn workers(&self) -> Vec<Worker> {
        self.members.values().map(|m| m.worker.clone()).collect()
    }

    /// Every live worker with its generation and whether the group counts it as ready.
    pub(crate) fn members(&self) -> Vec<MemberSnapshot> {
        self.members
            .values()
            .map(|m| MemberSnapshot {
                worker: m.worker.clone(),
                generation: m.generation,
                ready: m.ready_at.is_some(),
            })
            .collect()
    }

    /// Workers not disconnecting, ready workers of the current generation, and whether a
    /// reload runs (for the service manager, `systemd.rs`).
    pub(crate) fn readiness(&self) -> (usize, usize, bool) {
        let workers = self
            .members
            .values()
            .filter(|m| m.worker.state() < WorkerState::Disconnecting)
            .count();
        let ready = self.active().filter(|m| m.ready_at.is_some()).count();
        (workers, ready, self.reload.is_some())
    }

    /// Replaces worker `id`: it is retired (it drains) and its replacement forked at once.
    /// False if the group has no such live worker.
    pub(crate) fn restart(&mut self, id: u32, now: Instant) -> bool {
        let live = self.members.get(&id).is_some_and(|m| {
            m.ended_on_purpose.is_none() && m.worker.state() < WorkerState::Disconnecting
        });
        if live {
            self.retire(id, ExitReason::Reload);
            self.converge(now);
        }
        live
    }

    /// Forks or retires workers until the count is right, unless the policy says wait; then
    /// refuses connections if nobody can serve them.
    pub(crate) fn converge(&mut self, now: Instant) {
        self.fork_or_retire(now);
        self.refuse_while_nobody_serves(now);
    }

    /// Connections are refused while no worker of the group is alive (booting or serving)
    /// and none is on its way: given up, backing off for [`REFUSE_WHEN_NEXT_FORK_IN`] or
    /// more, scaled to zero, or stopping. Never while a worker boots (at start-up, after a
    /// replaced exit, during a reload) nor during a shorter backoff: what queues then is
    /// served as soon as the worker is up. The queue, when refusing starts, holds what no
    /// worker took before the last one ended, and none would take it before the backoff or
    /// pause ends: it is refused too, so those clients learn at once instead of hanging.
    fn refuse_while_nobody_serves(&self, now: Instant) {
        let someone_serves = self
            .members
            .values()
            .any(|m| m.worker.state() < WorkerState::Disconnecting);
        let nobody_coming = self.stopping
            || self.wanted == 0
            || self.paused_until.is_some_and(|t| now < t)
            || self
                .next_fork_at
                .is_some_and(|t| t.saturating_duration_since(now) >= REFUSE_WHEN_NEXT_FORK_IN);
        self.cluster
            .refuse_connections(!someone_serves && nobody_coming);
    }

    fn fork_or_retire(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        if self.paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.paused_until = None;
        let active = self.active().count();
        if active >= self.wanted {
            self.policy.forget_vacant();
        }
        if active < self.wanted {
            if self.next_fork_at.is_some_and(|t| now < t) {
                return;
            }
            self.next_fork_at = None;
            for _ in active..self.wanted {
                match self.cluster.fork(&[]) {
                    Ok(worker) => {
                        self.members.insert(
                            worker.id(),
                            Member {
                                worker,
                                generation: self.generation,
                                slot: Some(self.policy.fill_slot()),
                                ready_at: None,
                                ended_on_purpose: None,
                            },
                        );
                    }
                    Err(crate::ForkError::Stopping) => break,
                    Err(e) => {
                        tracing::error!(group = %self.name, "fork failed: {e}");
                        self.next_fork_at = Some(now + crate::pm::policy::MIN_RESTART_DELAY);
                        break;
                    }
                }
            }
        } else if active > self.wanted && self.reload.is_none() {
            // The oldest go first (as gunicorn does): the newest may still be booting.
            let extra: Vec<u32> = self
                .active()
                .map(|m| m.worker.id())
                .take(active - self.wanted)
                .collect();
            for id in extra {
                self.retire(id, ExitReason::ScaleDown);
            }
        }
    }

    fn retire(&mut self, id: u32, reason: ExitReason) {
        self.end_on_purpose(id, Purpose::Retired);
        if let Some(member) = self.members.get_mut(&id) {
            member.worker.set_exit_reason(reason);
            member.worker.request_disconnect();
        }
    }

    /// Records that the master ends this member on purpose (the caller disconnects or kills
    /// it): it stops counting towards `wanted`, and its exit never counts against the group.
    fn end_on_purpose(&mut self, id: u32, purpose: Purpose) {
        if let Some(member) = self.members.get_mut(&id) {
            member.ended_on_purpose.get_or_insert(purpose);
        }
    }

    /// The next instant this group needs attention without any event.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let reload = self.reload.as_ref().and_then(|r| match r.phase {
            ReloadPhase::Starting { deadline } => Some(deadline),
            ReloadPhase::Stabilising { until } => Some(until),
            ReloadPhase::Retiring => None,
        });
        [self.paused_until, self.next_fork_at, reload]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles one event of the group's cluster; returns what to tell the user.
    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Vec<GroupEvent> {
        let group = self.name.clone();
        let mut out = Vec::new();
        match event {
            Event::Fork(worker) => out.push(GroupEvent::Fork { group, worker }),
            // Only `ready()` makes it ready then.
            Event::Listening(..) | Event::ListeningUnix(..) | Event::ListeningUdp(..)
                if self.options.settings.wait_ready => {}
            Event::Ready(worker)
            | Event::Listening(worker, _)
            | Event::ListeningUnix(worker, _)
            | Event::ListeningUdp(worker, _) => {
                if let Some(member) = self.members.get_mut(&worker.id()) {
                    if member.ready_at.is_none() {
                        member.ready_at = Some(now);
                        out.push(GroupEvent::Ready { group, worker });
                    }
                }
            }
            Event::Disconnect(worker) => {
                // A worker that said it is going (a panic's hand-over, its own disconnect)
                // is replaced now: judge its ending now, so the replacement takes its slot
                // (and waits out a backoff if it never got ready).
                if worker.exited_after_disconnect() {
                    out.extend(self.judge(worker.id(), now));
                }
                out.push(GroupEvent::Disconnect { group, worker });
            }
            Event::Replacing(worker, reason) => out.push(GroupEvent::Replacing {
                group,
                worker,
                reason,
            }),
            Event::Exit(worker, exit) => {
                out.push(GroupEvent::Quit {
                    group: group.clone(),
                    worker: worker.clone(),
                    exit,
                });
                out.extend(self.judge(worker.id(), now));
                self.members.remove(&worker.id());
            }
            Event::Message(worker, message) => out.push(GroupEvent::Message {
                group,
                worker,
                message,
            }),
            _ => {}
        }
        out.extend(self.step_reload(now));
        self.converge(now);
        out
    }

    /// Applies the restart policy, once, to the ending of a member (whatever its exit code or
    /// signal: what counts is whether the master ended it, whether it handed over, and how
    /// long it had been ready).
    fn judge(&mut self, id: u32, now: Instant) -> Option<GroupEvent> {
        let stopping = self.stopping;
        let member = self.members.get_mut(&id)?;
        let slot = member.slot.take()?;
        // Replaced by the master's watchdog or recycling: on purpose too.
        let replaced = member.worker.replace_reason().map(|_| Purpose::Replaced);
        let purpose = member
            .ended_on_purpose
            .or(replaced)
            .or(stopping.then_some(Purpose::Stopping));
        let ending = match (purpose, member.ready_at) {
            (Some(purpose), _) => Ending::OnPurpose(purpose),
            (None, Some(_)) if member.worker.exited_after_disconnect() => Ending::HandedOver,
            (None, ready_at) => Ending::Unexpected {
                ready_for: ready_at.map(|at| now.duration_since(at)),
            },
        };
        match self.policy.on_exit(&self.options.policy, now, ending, slot) {
            Decision::RestartAt(at) => {
                if at > now {
                    self.next_fork_at = Some(self.next_fork_at.map_or(at, |t| t.max(at)));
                }
                None
            }
            Decision::GiveUp { fatals, until } => {
                self.paused_until = Some(until);
                Some(GroupEvent::GiveUp {
                    group: self.name.clone(),
                    fatals,
                    pause: until - now,
                })
            }
        }
    }

    /// Starts a reload: a new generation is forked; the old one is retired once the new one
    /// is ready and stable. False if one is already running.
    pub(crate) fn start_reload(&mut self, now: Instant) -> bool {
        if self.reload.is_some() {
            return false;
        }
        self.reload = Some(Reload {
            old_generation: self.generation,
            phase: ReloadPhase::Starting {
                deadline: now + self.options.ready_timeout,
            },
        });
        self.generation += 1;
        // A reload is deliberate: do not wait out a backoff or a pause.
        self.next_fork_at = None;
        self.paused_until = None;
        self.converge(now);
        true
    }

    /// Moves the reload along; returns its outcome once it ends.
    pub(crate) fn step_reload(&mut self, now: Instant) -> Option<GroupEvent> {
        let reload = self.reload.as_ref()?;
        let old_generation = reload.old_generation;
        let new: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.generation == self.generation)
            .collect();
        let lost = new.len() < self.wanted
            || new
                .iter()
                .any(|m| m.worker.state() >= WorkerState::Disconnecting);
        match reload.phase {
            ReloadPhase::Starting { deadline } => {
                if lost {
                    return Some(self.fail_reload("a new worker exited before it was ready"));
                }
                if new.iter().all(|m| m.ready_at.is_some()) {
                    let until = now + self.options.reload_stable;
                    self.set_phase(ReloadPhase::Stabilising { until });
                } else if now >= deadline {
                    return Some(self.fail_reload(&format!(
                        "new workers not ready within {:?}",
                        self.options.ready_timeout
                    )));
                }
            }
            ReloadPhase::Stabilising { until } => {
                if lost {
                    return Some(self.fail_reload("a new worker exited right after starting"));
                }
                if now >= until {
                    self.set_phase(ReloadPhase::Retiring);
                }
            }
            ReloadPhase::Retiring => {}
        }
        if let Some(Reload {
            phase: ReloadPhase::Retiring,
            ..
        }) = self.reload
        {
            let old: Vec<(u32, bool)> = self
                .members
                .values()
                .filter(|m| m.generation == old_generation)
                .map(|m| (m.worker.id(), m.ended_on_purpose.is_some()))
                .collect();
            if old.is_empty() {
                self.reload = None;
                return Some(GroupEvent::Reloaded {
                    group: self.name.clone(),
                });
            }
            // One at a time: the next old worker goes once the previous one has exited.
            if !old.iter().any(|(_, retiring)| *retiring) {
                self.retire(old[0].0, ExitReason::Reload);
            }
        }
        None
    }

    fn set_phase(&mut self, phase: ReloadPhase) {
        if let Some(reload) = &mut self.reload {
            reload.phase = phase;
        }
    }

    fn fail_reload(&mut self, reason: &str) -> GroupEvent {
        let failed_generation = self.generation;
        if let Some(reload) = self.reload.take() {
            self.generation = reload.old_generation;
        }
        let doomed: Vec<u32> = self
            .members
            .values()
            .filter(|m| m.generation == failed_generation)
            .map(|m| m.worker.id())
            .collect();
        for id in doomed {
            self.retire(id, ExitReason::Reload);
        }
        tracing::warn!(group = %self.name, "reload failed: {reason}; the old workers keep serving");
        GroupEvent::ReloadFailed {
            group: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}
