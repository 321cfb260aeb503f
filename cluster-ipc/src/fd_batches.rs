//! Which frame the received descriptors belong to.
//!
//! The kernel delivers a frame's descriptors with the read that holds the frame's first
//! byte (the sender attaches them to the `sendmsg` that writes it, and a stream read stops
//! right after an skb that carries descriptors), and with no other read. So each read that
//! brought descriptors, or lost them (`MSG_CTRUNC`), is kept as a batch with the stream
//! offsets it covered, and a frame takes the batch of the read that held its first byte.
//! A read that lost its descriptors thus costs exactly the frame they were sent with,
//! never a later frame's, and the stream stays in step.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use crate::error::RecvError;

/// The descriptors of one read.
struct Batch {
    /// Stream offset of the read's first byte.
    begins: u64,
    /// Stream offset just past its last byte.
    ends: u64,
    fds: Vec<OwnedFd>,
    /// The kernel cut the descriptors short (`MSG_CTRUNC`).
    truncated: bool,
}

/// The descriptors received and not yet claimed by a frame, by read.
#[derive(Default)]
pub(crate) struct FdBatches {
    batches: VecDeque<Batch>,
}

/// A frame's descriptors.
pub(crate) struct Claimed {
    /// Those that arrived.
    pub fds: Vec<OwnedFd>,
    /// Announced by the frame but lost on the way (the descriptor table was full).
    pub lost: usize,
}

impl FdBatches {
    /// Drops the batches of reads that ended before stream offset `start` (the first byte of
    /// the frame not delivered yet): their frames are delivered. Descriptors still in them
    /// came with no frame that announced them (a confused or hostile peer): an error, so
    /// they cannot pile up in the receiver. Truncated reads that kept none are dropped.
    pub(crate) fn check_unannounced(&mut self, start: u64) -> Result<(), RecvError> {
        while self.batches.front().is_some_and(|b| b.ends <= start) {
            if let Some(stale) = self.batches.pop_front() {
                if !stale.fds.is_empty() {
                    return Err(RecvError::Malformed(format!(
                        "{} descriptors arrived that no frame announced",
                        stale.fds.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Records what the read of stream bytes `begins..ends` brought.
    pub(crate) fn record(&mut self, begins: u64, ends: u64, fds: Vec<OwnedFd>, truncated: bool) {
        if fds.is_empty() && !truncated {
            return;
        }
        self.batches.push_back(Batch {
            begins,
            ends,
            fds,
            truncated,
        });
    }

    /// The descriptors of the frame whose first byte is at stream offset `start` and whose
    /// header announced `count`. An error when they did not come and the kernel did not
    /// say it had cut them: then the stream cannot be trusted.
    pub(crate) fn claim(&mut self, start: u64, count: usize) -> Result<Claimed, RecvError> {
        self.check_unannounced(start)?;
        if count == 0 {
            return Ok(Claimed {
                fds: Vec::new(),
                lost: 0,
            });
        }
        let holds_start = self
            .batches
            .front()
            .is_some_and(|b| b.begins <= start && start < b.ends);
        let Some(batch) = self.batches.pop_front().filter(|_| holds_start) else {
            return Err(RecvError::Malformed(format!(
                "frame announces {count} descriptors, none arrived with it"
            )));
        };
        let arrived = batch.fds.len();
        if batch.truncated && arrived <= count {
            return Ok(Claimed {
                fds: batch.fds,
                lost: count - arrived,
            });
        }
        if arrived != count {
            return Err(RecvError::Malformed(format!(
                "frame announces {count} descriptors, {arrived} arrived with it"
            )));
        }
        Ok(Claimed {
            fds: batch.fds,
            lost: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").expect("open").into()
    }

    #[test]
    fn a_truncated_read_costs_only_its_own_frame() {
        let mut batches = FdBatches::default();
        // Frame A (1 fd) starts at 0 and lost its descriptor; frame B starts at 100 in a
        // later read and got its own.
        batches.record(0, 60, Vec::new(), true);
        batches.record(60, 140, vec![fd()], false);
        let a = batches.claim(0, 1).expect("a");
        assert_eq!((a.fds.len(), a.lost), (0, 1));
        let b = batches.claim(100, 1).expect("b");
        assert_eq!((b.fds.len(), b.lost), (1, 0));
    }

    #[test]
    fn descriptors_missing_without_truncation_are_malformed() {
        let mut batches = FdBatches::default();
        batches.record(50, 80, vec![fd()], false);
        assert!(batches.claim(0, 1).is_err(), "the batch is a later frame's");
        let mut batches = FdBatches::default();
        batches.record(0, 80, vec![fd()], false);
        assert!(batches.claim(0, 2).is_err());
    }

    #[test]
    fn frames_without_descriptors_leave_the_batch_of_their_read_alone() {
        let mut batches = FdBatches::default();
        batches.record(0, 80, vec![fd()], false);
        assert_eq!(batches.claim(0, 0).expect("first").fds.len(), 0);
        assert_eq!(batches.claim(40, 1).expect("second").fds.len(), 1);
    }
}
