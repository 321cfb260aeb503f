//! What the worker has served, counted towards the `max_requests` limit the master set:
//! requests when its server counts them (`graceful::serve` does), accepted connections
//! otherwise. At the limit the worker asks the master, once, to recycle it. (The connections
//! open now are `connections.rs`.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cluster_ipc::{Control, Sender};

/// The counter and its limit.
pub(crate) struct Served {
    count: AtomicU64,
    /// 0: no limit.
    limit: u64,
    /// A server counts requests; accepted connections no longer count.
    by_request: AtomicBool,
    asked: AtomicBool,
}

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Request,
    Connection,
}

impl Served {
    pub(crate) fn new(limit: u64) -> Self {
        Served {
            count: AtomicU64::new(0),
            limit,
            by_request: AtomicBool::new(false),
            asked: AtomicBool::new(false),
        }
    }

    /// From now on requests count, and connections do not.
    pub(crate) fn count_requests(&self) {
        self.by_request.store(true, Ordering::Release);
    }

    /// Counts one `unit`; returns the count if it just reached the limit (once).
    pub(crate) fn add(&self, unit: Unit) -> Option<u64> {
        match unit {
            Unit::Request => self.count_requests(),
            Unit::Connection if self.by_request.load(Ordering::Acquire) => return None,
            Unit::Connection => {}
        }
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        let at_limit = self.limit != 0 && count >= self.limit;
        (at_limit && !self.asked.swap(true, Ordering::AcqRel)).then_some(count)
    }

    /// What has been served so far.
    pub(crate) fn served(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// Asks the master to recycle this worker (in the background).
pub(crate) fn ask_recycling(sender: &Sender, served: u64) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            served,
            "request limit reached outside the runtime; not reported"
        );
        return;
    };
    let sender = sender.clone();
    runtime.spawn(async move {
        tracing::info!(
            served,
            "request limit reached; asking the master to recycle us"
        );
        if let Err(e) = sender
            .send_control(&Control::RequestLimit { served }, &[])
            .await
        {
            tracing::debug!("could not ask for recycling: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_once_at_the_limit() {
        let served = Served::new(3);
        assert_eq!(served.add(Unit::Connection), None);
        assert_eq!(served.add(Unit::Connection), None);
        assert_eq!(served.add(Unit::Connection), Some(3));
        assert_eq!(served.add(Unit::Connection), None);
    }

    #[test]
    fn requests_replace_connections_once_counted() {
        let served = Served::new(2);
        served.count_requests();
        for _ in 0..10 {
            assert_eq!(served.add(Unit::Connection), None);
        }
        assert_eq!(served.add(Unit::Request), None);
        assert_eq!(served.add(Unit::Request), Some(2));
    }

    #[test]
    fn no_limit_counts_nothing() {
        let served = Served::new(0);
        for _ in 0..10 {
            assert_eq!(served.add(Unit::Request), None);
        }
    }
}
