//! The per-worker cap on listen requests: a worker may make the master bind at most
//! `max_listens_per_worker` distinct addresses (`Settings::max_listens_per_worker`), so a
//! buggy or hostile worker cannot fill the master's descriptor table with listeners.

use std::collections::HashSet;
use std::sync::Mutex;

/// The default of `max_listens_per_worker`.
pub(crate) const DEFAULT_MAX_LISTENS_PER_WORKER: usize = 64;

/// The largest accepted `max_listens_per_worker`.
pub(crate) const MAX_LISTENS_PER_WORKER_LIMIT: usize = 65_536;

/// The distinct addresses one worker was granted.
#[derive(Default)]
pub(crate) struct ListenQuota {
    granted: Mutex<HashSet<String>>,
}

impl ListenQuota {
    /// Whether a request for `address` (in its canonical form) fits the cap: an address
    /// already granted always does. The error is the reply the worker's `listen()` gets.
    pub(crate) fn check(&self, address: &str, max: usize) -> Result<(), String> {
        let granted = self.lock();
        if granted.len() < max || granted.contains(address) {
            Ok(())
        } else {
            Err(format!(
                "listen on {address}: refused, this worker already listens on {} addresses \
                 (the master's max_listens_per_worker setting)",
                granted.len()
            ))
        }
    }

    /// Counts `address` as granted.
    pub(crate) fn record(&self, address: String) {
        self.lock().insert(address);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.granted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The form of a requested socket that the quota counts: `127.0.0.1:80` and
/// `127.0.0.1:080` are one address; a second socket for one address (`index` 1, a second
/// `listen(0)`) is another (`127.0.0.1:0#1`).
pub(crate) fn canonical(address: &str, index: u32) -> String {
    let address = if let Some(Ok(udp)) = cluster_ipc::udp_address(address) {
        format!("{}{udp}", cluster_ipc::UDP_PREFIX)
    } else {
        match address.parse::<std::net::SocketAddr>() {
            Ok(parsed) => parsed.to_string(),
            Err(_) => address.to_string(),
        }
    };
    match index {
        0 => address,
        index => format!("{address}#{index}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_distinct_addresses() {
        let quota = ListenQuota::default();
        for port in 1..=2 {
            let address = canonical(&format!("127.0.0.1:{port}"), 0);
            quota.check(&address, 2).expect("under the cap");
            quota.record(address);
        }
        quota
            .check(&canonical("127.0.0.1:01", 0), 2)
            .expect("already granted");
        // A second socket for a granted address counts as another.
        let second = canonical("127.0.0.1:1", 1);
        assert_eq!(second, "127.0.0.1:1#1");
        assert!(quota.check(&second, 2).is_err());
        let err = quota.check("127.0.0.1:3", 2).expect_err("over the cap");
        assert!(err.contains("max_listens_per_worker"), "{err}");
    }
}
