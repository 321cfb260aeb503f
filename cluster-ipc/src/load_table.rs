//! Live connections per worker, in memory the master and its workers share (issue 13).
//!
//! In Shared scheduling every worker accepts on the same socket and the kernel wakes
//! whichever waits first; a burst of long-lived connections can land mostly on one worker.
//! The master creates one [`LoadTable`] per cluster (a `memfd`, mapped shared) and gives
//! each worker a slot with its handoff; a worker writes there how many connections it holds
//! and whether it accepts, and before each accept reads the others' slots: a worker holding
//! clearly more than the others' average ([`crowded`]) lets them accept first. No message,
//! no lock between processes, no master hop: two atomic stores per connection opened or
//! closed, and a read of the slots in use per accept.
//!
//! A slot is one cache line, so a worker's writes never invalidate another's slot. Every
//! field is an atomic integer and every bit pattern means something, so a worker writing
//! nonsense can skew the balance, never the memory safety of another process.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// How many workers one table holds at once; a worker forked when every slot is taken
/// gets none and does not take part in the balance.
pub const SLOTS: usize = 1024;

/// One worker's entry.
#[repr(C, align(64))]
struct Slot {
    /// Connections the worker holds now (accepted and not closed yet).
    load: AtomicU32,
    /// 1 while the worker accepts and counts its connections; 0: it is left out of the
    /// others' average.
    accepting: AtomicU32,
}

/// What the master writes at the start of the table.
#[repr(C, align(64))]
struct Header {
    /// Slots `0..span` may be in use: readers look no further (the master gives out the
    /// lowest free slot, so this stays near the number of workers).
    span: AtomicU32,
}

const TABLE_BYTES: usize = std::mem::size_of::<Header>() + SLOTS * std::mem::size_of::<Slot>();

/// The shared table, mapped into this process. The master creates it ([`LoadTable::create`]),
/// a worker maps the descriptor it inherited ([`LoadTable::open`]).
///
/// ```
/// let table = cluster_ipc::LoadTable::create()?;
/// table.set_span(2);
/// table.set(0, 20, true);
/// table.set(1, 2, true);
/// assert!(table.crowded(0)); // 20 against 2: worker 0 lets worker 1 accept first
/// assert!(!table.crowded(1));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct LoadTable {
    base: NonNull<u8>,
    fd: OwnedFd,
}

// SAFETY: the mapping holds only atomics, shared by design; the pointer is never freed
// before `Drop`.
unsafe impl Send for LoadTable {}
// SAFETY: as above: every access goes through an atomic.
unsafe impl Sync for LoadTable {}

impl LoadTable {
    /// A new table, every slot zero (the master, once per cluster). Its descriptor is
    /// never [`crate::handoff::CHANNEL_FD`], so a worker inherits it under its own number.
    pub fn create() -> io::Result<LoadTable> {
        let mut fd = nix::sys::memfd::memfd_create(
            "cluster-load-table",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        if fd.as_raw_fd() == crate::handoff::CHANNEL_FD {
            let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
            // SAFETY: `fcntl` just returned this new descriptor, owned by nobody else.
            fd = unsafe { OwnedFd::from_raw_fd(moved) };
        }
        File::from(fd.try_clone()?).set_len(TABLE_BYTES as u64)?;
        Self::map(fd)
    }

    /// Maps a table the master created (a worker, from its handoff).
    pub fn open(fd: OwnedFd) -> io::Result<LoadTable> {
        let file = File::from(fd.try_clone()?);
        let len = file.metadata()?.len();
        if len != TABLE_BYTES as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("load table is {len} bytes, not {TABLE_BYTES}"),
            ));
        }
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> io::Result<LoadTable> {
        let len = NonZeroUsize::new(TABLE_BYTES).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of a file of exactly `len` bytes (checked or set by
        // the callers); nothing else in this process aliases it.
        let base = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }?;
        Ok(LoadTable {
            base: base.cast(),
            fd,
        })
    }

    /// The descriptor, for a worker to inherit.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is the mapping's first 64 bytes (page-aligned), which lives as
        // long as `self`; `Header` is atomics only, valid for any bytes.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        // SAFETY: `index < SLOTS`, so the slot lies inside the mapping after the header, at a
        // multiple of 64 bytes; the mapping lives as long as `self`; `Slot` is atomics only,
        // valid for any bytes.
        (index < SLOTS).then(|| unsafe {
            let header = self.base.as_ptr().add(std::mem::size_of::<Header>());
            &*header.cast::<Slot>().add(index)
        })
    }

    /// Tells readers that slots `0..span` may be in use (the master, as it gives out slots).
    pub fn set_span(&self, span: usize) {
        self.header()
            .span
            .store(span.min(SLOTS) as u32, Ordering::Relaxed);
    }

    /// Writes what slot `index`'s worker holds now: `load` connections, and whether it
    /// `accepting` new ones (a draining worker, or one whose server does not count its
    /// connections, is left out of the others' average).
    pub fn set(&self, index: usize, load: u32, accepting: bool) {
        if let Some(slot) = self.slot(index) {
            slot.load.store(load, Ordering::Relaxed);
            slot.accepting.store(accepting.into(), Ordering::Relaxed);
        }
    }

    /// The connections slot `index` holds.
    pub fn load(&self, index: usize) -> u32 {
        self.slot(index)
            .map_or(0, |slot| slot.load.load(Ordering::Relaxed))
    }

    /// The connections slot `index` holds if its worker takes part in the balance (it
    /// accepts and counts its connections).
    pub fn accepting_load(&self, index: usize) -> Option<u32> {
        let slot = self.slot(index)?;
        (slot.accepting.load(Ordering::Relaxed) > 0).then(|| slot.load.load(Ordering::Relaxed))
    }

    /// Empties slot `index` (the master, when its worker is gone: a killed worker leaves
    /// its counts behind).
    pub fn clear(&self, index: usize) {
        if let Some(slot) = self.slot(index) {
            slot.accepting.store(0, Ordering::Relaxed);
            slot.load.store(0, Ordering::Relaxed);
        }
    }

    /// The loads of the accepting workers other than slot `index`'s.
    pub fn others(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        let span = (self.header().span.load(Ordering::Relaxed) as usize).min(SLOTS);
        (0..span)
            .filter(move |&i| i != index)
            .filter_map(|i| self.accepting_load(i))
    }

    /// Whether slot `index`'s worker holds clearly more connections than the other
    /// accepting workers on average ([`crowded`]).
    pub fn crowded(&self, index: usize) -> bool {
        crowded(self.load(index), self.others(index))
    }
}

impl Drop for LoadTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of that length; no reference to it outlives
        // `self`.
        if let Err(e) = unsafe { munmap(self.base.cast(), TABLE_BYTES) } {
            tracing::warn!("unmapping the load table failed: {e}");
        }
    }
}

impl std::fmt::Debug for LoadTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadTable").field("fd", &self.fd).finish()
    }
}

/// Whether a worker holding `mine` connections should let the others accept first: it holds
/// more than the others' average plus a slack of one connection and 1/32 of that average
/// (so 2 workers sharing 32 connections end 16 ± 1, and 1,000 connections per worker may
/// differ by 3%). Never with no other accepting worker.
///
/// ```
/// use cluster_ipc::load_table::crowded;
/// assert!(crowded(18, [16, 14].into_iter()));   // 18 > 15 + 1 + 15/32
/// assert!(!crowded(16, [16, 14].into_iter()));
/// assert!(!crowded(100, std::iter::empty()));   // nobody else accepts
/// ```
pub fn crowded(mine: u32, others: impl Iterator<Item = u32>) -> bool {
    let (sum, count) = others.fold((0u64, 0u64), |(sum, n), load| (sum + load as u64, n + 1));
    if count == 0 {
        return false;
    }
    // mine > average + 1 + average/32, in integers: 32·mine·count > 33·sum + 32·count.
    32 * mine as u64 * count > 33 * sum + 32 * count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_workers_stay_within_one_connection_of_each_other() {
        // Connections arrive one by one; whoever is not crowded takes the next.
        let mut loads = [0u32, 0];
        for _ in 0..32 {
            let taker = (0..2)
                .find(|&i| !crowded(loads[i], std::iter::once(loads[1 - i])))
                .unwrap_or(0);
            loads[taker] += 1;
        }
        assert!(loads.iter().all(|&l| (15..=17).contains(&l)), "{loads:?}");
    }

    #[test]
    fn the_slack_grows_with_the_load() {
        assert!(crowded(3, [1].into_iter()));
        assert!(!crowded(2, [1].into_iter()));
        // At 1,000 each, 1,032 is still not crowded; 1,033 is.
        assert!(!crowded(1032, [1000, 1000].into_iter()));
        assert!(crowded(1033, [1000, 1000].into_iter()));
    }

    #[test]
    fn a_worker_alone_or_among_idle_ones_is_never_crowded_below_two() {
        assert!(!crowded(u32::MAX, std::iter::empty()));
        assert!(!crowded(1, [0, 0, 0].into_iter()));
        assert!(crowded(2, [0, 0, 0].into_iter()));
    }

    #[test]
    fn slots_are_shared_through_the_descriptor_and_cleared() {
        let master = LoadTable::create().unwrap();
        let worker = LoadTable::open(master.fd().try_clone_to_owned().unwrap()).unwrap();
        master.set_span(10);
        worker.set(7, 3, true);
        master.set(8, 0, true);
        master.set(9, 5, false);
        assert_eq!(master.load(7), 3);
        assert_eq!(
            master.others(8).collect::<Vec<_>>(),
            vec![3],
            "9 does not accept"
        );
        worker.set(7, 2, true);
        assert_eq!(master.load(7), 2);
        master.clear(7);
        assert_eq!(worker.load(7), 0);
        assert_eq!(
            worker.others(8).count(),
            0,
            "a cleared slot does not accept"
        );
        assert_eq!(master.load(SLOTS), 0, "out of range reads nothing");
        master.set(SLOTS, 5, true);
        master.set(10, 5, true);
        assert_eq!(worker.others(8).count(), 0, "beyond the span is not read");
        master.set_span(SLOTS + 5);
        assert_eq!(worker.others(8).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn a_file_of_another_size_is_refused() {
        let fd =
            nix::sys::memfd::memfd_create("other", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        File::from(fd.try_clone().unwrap()).set_len(4096).unwrap();
        assert_eq!(
            LoadTable::open(fd).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
