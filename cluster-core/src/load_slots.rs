//! The master's side of the live-connection table its workers share
//! (`cluster_ipc::load_table`, issue 13): one table per cluster, a slot per live worker,
//! given with the handoff and emptied when the worker is gone (a killed worker cannot empty
//! its own). The round-robin dispatcher reads it to hand a connection to the worker holding
//! the fewest.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use cluster_ipc::LoadTable;
use cluster_ipc::handoff::LoadSlot;
use cluster_ipc::load_table::SLOTS;

/// The table and who holds which slot.
pub(crate) struct LoadSlots {
    /// `None` if it could not be made (logged): workers then do not balance.
    table: Option<LoadTable>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Worker id → slot.
    by_worker: HashMap<u32, usize>,
    /// Slots given out.
    taken: BTreeSet<usize>,
}

impl LoadSlots {
    pub(crate) fn new() -> Self {
        let table = LoadTable::create()
            .inspect_err(|e| {
                tracing::warn!("no live-connection table ({e}): workers will not balance")
            })
            .ok();
        LoadSlots {
            table,
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives worker `id` the lowest free slot; `None` without a table or a free slot.
    pub(crate) fn claim(&self, id: u32) -> Option<LoadSlot> {
        let table = self.table.as_ref()?;
        let mut held = self.held();
        let slot = (0..SLOTS).find(|slot| !held.taken.contains(slot))?;
        held.taken.insert(slot);
        held.by_worker.insert(id, slot);
        table.clear(slot);
        let span = held.taken.last().map_or(0, |last| last + 1);
        table.set_span(span);
        Some(LoadSlot {
            fd: table.fd().as_raw_fd(),
            slot: slot as u32,
        })
    }

    /// Worker `id` is gone: its slot is emptied and free again.
    pub(crate) fn release(&self, id: u32) {
        let Some(table) = &self.table else { return };
        let mut held = self.held();
        if let Some(slot) = held.by_worker.remove(&id) {
            table.clear(slot);
            held.taken.remove(&slot);
        }
    }

    /// The connections each worker of `ids` holds, as it wrote them in its slot, in the
    /// order of `ids`; 0 for one without a slot or that does not take part in the balance
    /// (its server does not count its connections).
    pub(crate) fn live_of(&self, ids: impl Iterator<Item = u32>) -> Vec<u32> {
        let held = self.held();
        ids.map(|id| {
            let slot = held.by_worker.get(&id).copied();
            let load = self.table.as_ref().zip(slot);
            load.and_then(|(table, slot)| table.accepting_load(slot))
                .unwrap_or(0)
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_lowest_first_and_emptied() {
        let slots = LoadSlots::new();
        let a = slots.claim(1).unwrap().slot;
        let b = slots.claim(2).unwrap().slot;
        assert_eq!((a, b), (0, 1));
        let table = slots.table.as_ref().unwrap();
        table.set(0, 10, true);
        table.set(1, 7, false);
        assert_eq!(
            slots.live_of([1, 2].into_iter()),
            vec![10, 0],
            "2 does not take part"
        );
        slots.release(1);
        assert_eq!(slots.live_of([1].into_iter()), vec![0]);
        assert_eq!(slots.claim(3).unwrap().slot, 0);
        assert_eq!(table.load(0), 0, "a reused slot starts empty");
        assert_eq!(slots.live_of([99].into_iter()), vec![0], "no slot");
    }
}
