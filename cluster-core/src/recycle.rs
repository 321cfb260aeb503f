//! Recycling policy (gunicorn's `max_requests` + `max_requests_jitter`, pm2's
//! `max_memory_restart`, and an age limit), as plain logic: each worker's request limit,
//! which limit a worker is past, and the queue that recycles one worker at a time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::replace::ReplaceReason;
use crate::settings::{Settings, SettingsError};

/// How long a recycled worker keeps serving while it waits for its replacement to accept;
/// then it is disconnected anyway.
pub(crate) const RELIEF_TIMEOUT: Duration = Duration::from_secs(30);

/// When workers are recycled. Every limit is off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recycling {
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_requests_jitter: u64,
    pub(crate) max_memory: Option<u64>,
    pub(crate) max_age: Option<Duration>,
}

impl Recycling {
    /// True when some limit is set.
    pub(crate) fn is_on(&self) -> bool {
        self.max_requests.is_some() || self.max_memory.is_some() || self.max_age.is_some()
    }

    /// One worker's request limit: `max_requests` plus `random` folded into
    /// `0..=max_requests_jitter` (as gunicorn does), so workers started together are not all
    /// recycled together. 0 (the handoff's "never") when `max_requests` is off.
    pub(crate) fn request_limit(&self, random: u64) -> u64 {
        match self.max_requests {
            Some(max) => {
                let jitter = match self.max_requests_jitter {
                    0 => 0,
                    j => random % j.saturating_add(1),
                };
                max.saturating_add(jitter)
            }
            None => 0,
        }
    }

    /// The limit a worker of this `age` using `rss` bytes is past, if any (the request
    /// limit is the worker's to report).
    pub(crate) fn due(&self, age: Duration, rss: Option<u64>) -> Option<ReplaceReason> {
        if let (Some(limit), Some(rss)) = (self.max_memory, rss) {
            if rss > limit {
                return Some(ReplaceReason::MaxMemory { rss, limit });
            }
        }
        match self.max_age {
            Some(limit) if age >= limit => Some(ReplaceReason::MaxAge { age }),
            _ => None,
        }
    }
}

/// Checks the recycling settings.
pub(crate) fn validate(recycling: &Recycling) -> Result<(), SettingsError> {
    if recycling.max_requests == Some(0) {
        return Err(SettingsError::new("max_requests", "must be at least 1"));
    }
    if recycling.max_requests_jitter > 0 && recycling.max_requests.is_none() {
        return Err(SettingsError::new(
            "max_requests_jitter",
            "has no effect without max_requests",
        ));
    }
    if recycling.max_memory == Some(0) {
        return Err(SettingsError::new("max_memory", "must be more than zero"));
    }
    if recycling.max_age == Some(Duration::ZERO) {
        return Err(SettingsError::new("max_age", "must be more than zero"));
    }
    Ok(())
}

impl Settings {
    /// Recycle a worker after it has served this many requests (gunicorn's
    /// `max_requests`; default off). `graceful::serve` counts requests; a worker serving
    /// otherwise counts the connections its `Acceptor` hands out, or calls
    /// `Worker::request_served`. A recycled worker leaves through the hand-over path: its
    /// replacement is forked first (`Leaving` event), and once that accepts on the
    /// worker's addresses the worker is disconnected and drains (killed if that takes longer
    /// than `stop_timeout`); one worker of a cluster at a time.
    pub fn max_requests(mut self, requests: u64) -> Self {
        self.recycling.max_requests = Some(requests);
        self
    }

    /// Adds a random 0 to `jitter` requests to each worker's `max_requests` (gunicorn's
    /// `max_requests_jitter`; default 0), so workers started together are recycled apart.
    pub fn max_requests_jitter(mut self, jitter: u64) -> Self {
        self.recycling.max_requests_jitter = jitter;
        self
    }

    /// Recycle a worker whose resident memory exceeds this many bytes (pm2's
    /// `max_memory_restart`; default off). The master reads each worker's RSS from `/proc`
    /// every second.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.recycling.max_memory = Some(bytes);
        self
    }

    /// Recycle a worker this long after it was forked (default off).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.recycling.max_age = Some(age);
        self
    }
}

/// Recycles one worker at a time: workers past a limit wait here, in the order they got
/// there, until the one being recycled has exited.
#[derive(Debug, Default)]
pub(crate) struct RecycleQueue {
    waiting: VecDeque<(u32, ReplaceReason)>,
    current: Option<Current>,
}

/// The worker being recycled.
#[derive(Debug, Clone, Copy)]
struct Current {
    id: u32,
    started: Instant,
    /// When it was seen draining (disconnected after its replacement came).
    draining_since: Option<Instant>,
}

impl RecycleQueue {
    /// Worker `id` is past a limit. Asking again changes nothing.
    pub(crate) fn request(&mut self, id: u32, reason: ReplaceReason) {
        let known =
            self.current.is_some_and(|c| c.id == id) || self.waiting.iter().any(|(w, _)| *w == id);
        if !known {
            self.waiting.push_back((id, reason));
        }
    }

    /// The next worker to recycle, if none is being recycled; it becomes the current one.
    /// Workers for which `recyclable` is false (gone, or leaving anyway) are dropped.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        recyclable: impl Fn(u32) -> bool,
    ) -> Option<(u32, ReplaceReason)> {
        if self.current.is_some() {
            return None;
        }
        while let Some((id, reason)) = self.waiting.pop_front() {
            if recyclable(id) {
                self.current = Some(Current {
                    id,
                    started: now,
                    draining_since: None,
                });
                return Some((id, reason));
            }
        }
        None
    }

    /// Worker `id` has exited: the next one may go.
    pub(crate) fn exited(&mut self, id: u32) {
        if self.current.is_some_and(|c| c.id == id) {
            self.current = None;
        }
        self.waiting.retain(|(w, _)| *w != id);
    }

    /// The worker being recycled.
    pub(crate) fn current(&self) -> Option<u32> {
        self.current.map(|c| c.id)
    }

    /// The worker being recycled was seen draining at `now` (the first sighting counts).
    pub(crate) fn draining(&mut self, now: Instant) {
        if let Some(current) = &mut self.current {
            current.draining_since.get_or_insert(now);
        }
    }

    /// The worker being recycled, if it has waited for its replacement longer than
    /// `timeout` (it must be disconnected anyway).
    pub(crate) fn overdue(&self, now: Instant, timeout: Duration) -> Option<u32> {
        self.current
            .filter(|c| {
                c.draining_since.is_none() && now.saturating_duration_since(c.started) > timeout
            })
            .map(|c| c.id)
    }

    /// The worker being recycled, if it has been draining longer than `timeout` (the
    /// cluster's `stop_timeout`: it must be killed, as a graceful stop would).
    pub(crate) fn drain_overdue(&self, now: Instant, timeout: Duration) -> Option<u32> {
        self.current
            .filter(|c| {
                c.draining_since
                    .is_some_and(|d| now.saturating_duration_since(d) > timeout)
            })
            .map(|c| c.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(max: u64, jitter: u64) -> Recycling {
        Recycling {
            max_requests: Some(max),
            max_requests_jitter: jitter,
            ..Recycling::default()
        }
    }

    #[test]
    fn the_request_limit_has_its_jitter_within_bounds() {
        assert_eq!(Recycling::default().request_limit(7), 0, "off");
        assert_eq!(requests(1000, 0).request_limit(u64::MAX), 1000);
        let policy = requests(1000, 50);
        let limits: Vec<u64> = (0..500u64)
            .map(|r| policy.request_limit(r.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        assert!(limits.iter().all(|l| (1000..=1050).contains(l)));
        assert!(
            limits.contains(&1000) && limits.contains(&1050),
            "both ends"
        );
        assert_eq!(requests(u64::MAX, 10).request_limit(5), u64::MAX);
    }

    #[test]
    fn memory_and_age_limits() {
        let policy = Recycling {
            max_memory: Some(100),
            max_age: Some(Duration::from_secs(60)),
            ..Recycling::default()
        };
        assert!(policy.is_on());
        assert!(!Recycling::default().is_on());
        let young = Duration::from_secs(1);
        assert_eq!(policy.due(young, Some(100)), None);
        assert_eq!(policy.due(young, None), None, "RSS unknown");
        assert_eq!(
            policy.due(young, Some(101)),
            Some(ReplaceReason::MaxMemory {
                rss: 101,
                limit: 100
            })
        );
        let old = Duration::from_secs(61);
        assert_eq!(
            policy.due(old, Some(1)),
            Some(ReplaceReason::MaxAge { age: old })
        );
        assert_eq!(Recycling::default().due(old, Some(u64::MAX)), None);
    }

    #[test]
    fn one_worker_at_a_time_in_request_order() {
        let now = Instant::now();
        let reason = ReplaceReason::MaxRequests { served: 10 };
        let mut queue = RecycleQueue::default();
        queue.request(3, reason);
        queue.request(1, reason);
        queue.request(3, reason);
        assert_eq!(queue.next(now, |_| true), Some((3, reason)));
        assert_eq!(queue.next(now, |_| true), None, "3 is still being recycled");
        queue.request(3, reason);
        queue.exited(3);
        assert_eq!(queue.next(now, |_| true), Some((1, reason)));
        queue.exited(1);
        assert_eq!(
            queue.next(now, |_| true),
            None,
            "3 asked while current: not again"
        );
    }

    #[test]
    fn gone_workers_are_skipped_and_the_wait_is_bounded() {
        let now = Instant::now();
        let reason = ReplaceReason::MaxAge {
            age: Duration::from_secs(1),
        };
        let mut queue = RecycleQueue::default();
        queue.request(1, reason);
        queue.request(2, reason);
        queue.request(4, reason);
        queue.exited(2);
        assert_eq!(queue.next(now, |id| id != 1), Some((4, reason)));
        let timeout = Duration::from_secs(30);
        assert_eq!(queue.current(), Some(4));
        assert_eq!(queue.overdue(now + timeout, timeout), None);
        assert_eq!(queue.overdue(now + timeout * 2, timeout), Some(4));
    }

    #[test]
    fn a_drain_is_bounded_from_when_it_was_first_seen() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut queue = RecycleQueue::default();
        queue.request(7, ReplaceReason::MaxRequests { served: 1 });
        assert_eq!(queue.next(now, |_| true).map(|(id, _)| id), Some(7));
        assert_eq!(
            queue.drain_overdue(now + second * 100, second),
            None,
            "not draining"
        );
        queue.draining(now + second * 5);
        queue.draining(now + second * 6);
        assert_eq!(
            queue.overdue(now + second * 100, second),
            None,
            "draining already"
        );
        assert_eq!(queue.drain_overdue(now + second * 6, second), None);
        assert_eq!(queue.drain_overdue(now + second * 7, second), Some(7));
        queue.exited(7);
        assert_eq!(queue.current(), None);
        assert_eq!(queue.drain_overdue(now + second * 100, second), None);
    }

    #[test]
    fn bad_limits_are_refused_by_name() {
        let cases = [
            (requests(0, 0), "max_requests"),
            (
                Recycling {
                    max_requests_jitter: 5,
                    ..Recycling::default()
                },
                "max_requests_jitter",
            ),
            (
                Recycling {
                    max_memory: Some(0),
                    ..Recycling::default()
                },
                "max_memory",
            ),
            (
                Recycling {
                    max_age: Some(Duration::ZERO),
                    ..Recycling::default()
                },
                "max_age",
            ),
        ];
        for (recycling, name) in cases {
            assert_eq!(validate(&recycling).expect_err(name).setting, name);
        }
        assert!(validate(&requests(1, 5)).is_ok());
    }
}
