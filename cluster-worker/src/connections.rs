//! The connections this worker holds now: reported with each heartbeat, and written to the
//! load table the workers share (`cluster_ipc::load_table`), where every accept loop of the
//! cluster reads them to balance live connections (issue 13).
//!
//! A connection counts from its accept ([`Connections::accepted`], so a burst is counted
//! before the server has seen it) until its server's guard drops
//! ([`crate::Worker::connection_opened`]). A worker takes part in the balance only while
//! one of its accept loops runs and its server counts connections (it said so with
//! [`crate::Worker::count_connections`], or opened a guard): without the guards the count
//! would only grow.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use cluster_ipc::LoadTable;

/// This worker's live connections and its slot in the shared table.
pub(crate) struct Connections {
    /// Counted by the server (a guard each).
    open: AtomicU64,
    /// Accepted, not counted by the server yet.
    pending: AtomicU64,
    /// The server counts its connections (it opened a guard once).
    counted: AtomicBool,
    /// Accept loops running (an `Acceptor` each).
    accepting: AtomicU32,
    table: Option<(LoadTable, usize)>,
    /// Serialises writes to the slot, so the last write holds the last count.
    publishing: Mutex<()>,
}

impl Connections {
    pub(crate) fn new(table: Option<(LoadTable, usize)>) -> Self {
        Connections {
            open: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            counted: AtomicBool::new(false),
            accepting: AtomicU32::new(0),
            table,
            publishing: Mutex::new(()),
        }
    }

    /// An accept loop starts (`true`) or stops (`false`).
    pub(crate) fn accepting(&self, started: bool) {
        if started {
            self.accepting.fetch_add(1, Ordering::AcqRel);
        } else {
            let _ = self
                .accepting
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        self.publish();
    }

    /// The server counts its connections from now on (before its first one, so that an
    /// idle worker shows in the balance at once).
    pub(crate) fn counted_by_server(&self) {
        self.counted.store(true, Ordering::Release);
        self.publish();
    }

    /// A connection was accepted (or taken from the master).
    pub(crate) fn accepted(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.publish();
    }

    /// The server counts a connection from now on (`true`), or it closed (`false`).
    pub(crate) fn opened(&self, opened: bool) {
        if opened {
            // The connection its acceptor counted, if it came through one.
            let _ = self
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            self.open.fetch_add(1, Ordering::AcqRel);
            self.counted.store(true, Ordering::Release);
        } else {
            let _ = self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        self.publish();
    }

    /// Connections the server holds open now.
    pub(crate) fn open(&self) -> u64 {
        self.open.load(Ordering::Acquire)
    }

    /// Whether this worker holds clearly more connections than the other accepting workers
    /// and should let them accept first (`cluster_ipc::load_table::crowded`). Never for a
    /// worker outside the balance.
    pub(crate) fn crowded(&self) -> bool {
        match &self.table {
            Some((table, slot)) if self.counted.load(Ordering::Acquire) => table.crowded(*slot),
            _ => false,
        }
    }

    fn load(&self) -> u32 {
        let load = self.open.load(Ordering::Acquire) + self.pending.load(Ordering::Acquire);
        load.min(u32::MAX as u64) as u32
    }

    fn publish(&self) {
        let Some((table, slot)) = &self.table else {
            return;
        };
        let _serial = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let taking_part =
            self.counted.load(Ordering::Acquire) && self.accepting.load(Ordering::Acquire) > 0;
        table.set(*slot, self.load(), taking_part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_table() -> (Connections, LoadTable) {
        let table = LoadTable::create().unwrap();
        table.set_span(2);
        let view = LoadTable::open(table.fd().try_clone_to_owned().unwrap()).unwrap();
        (Connections::new(Some((view, 0))), table)
    }

    #[test]
    fn counts_from_accept_to_close_and_takes_part_only_when_counted_and_accepting() {
        let (connections, table) = in_table();
        table.set(1, 0, true);
        connections.accepting(true);
        connections.accepted();
        connections.accepted();
        assert_eq!(table.load(0), 2);
        assert_eq!(table.others(1).count(), 0, "not counted by its server yet");
        assert!(!connections.crowded());
        connections.opened(true);
        assert_eq!(table.load(0), 2, "one accepted, one open");
        assert_eq!(table.others(1).collect::<Vec<_>>(), vec![2]);
        assert!(connections.crowded(), "2 against 0");
        connections.opened(true);
        connections.opened(false);
        connections.opened(false);
        assert_eq!((table.load(0), connections.open()), (0, 0));
        connections.opened(false);
        assert_eq!(table.load(0), 0, "never below zero");
        connections.accepting(false);
        assert_eq!(table.others(1).count(), 0, "stopped accepting");
    }

    #[test]
    fn a_server_that_says_it_counts_takes_part_before_its_first_connection() {
        let (connections, table) = in_table();
        connections.accepting(true);
        assert_eq!(table.others(1).count(), 0);
        connections.counted_by_server();
        assert_eq!(table.others(1).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn a_connection_the_acceptor_never_saw_still_counts() {
        let (connections, table) = in_table();
        connections.opened(true);
        assert_eq!(table.load(0), 1);
    }
}
