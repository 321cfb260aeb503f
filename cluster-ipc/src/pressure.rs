//! Running out of descriptors without crashing or flooding the log: what the accept loops
//! and the channel readers of master and worker share.
//!
//! A process at its `RLIMIT_NOFILE` fails every `accept` with `EMFILE` at once, as long as
//! connections wait; retrying at once spins and logs without end. nginx pauses accepting
//! for 500 ms then (`accept_mutex_delay`); so does every accept loop here
//! ([`ACCEPT_PAUSE`]), and repeated failures are logged at most once per second, with how
//! many there were ([`LogThrottle`]).

use std::io;
use std::time::{Duration, Instant};

/// How long an accept loop stops accepting after the descriptor table was full (nginx's
/// 500 ms): connections wait in the kernel's queue meanwhile.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// How often a repeated failure is logged at most.
pub const LOG_PERIOD: Duration = Duration::from_secs(1);

/// True when `error` means no descriptor was left: this process's table is full
/// (`EMFILE`, `RLIMIT_NOFILE`) or the system's is (`ENFILE`).
pub fn is_descriptor_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EMFILE) | Some(nix::libc::ENFILE)
    )
}

/// True when an `accept` error means the listener itself cannot accept any more (it is not
/// a listening socket, not listening any more, or closed: `EINVAL`, `EBADF`, `ENOTSOCK`,
/// `EOPNOTSUPP`): retrying cannot help, the accept loop ends and reports it. Every other
/// error (a connection aborted before it was taken, descriptors or memory short) is about
/// one connection or a moment, and the loop goes on.
pub fn is_listener_broken(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EINVAL)
            | Some(nix::libc::EBADF)
            | Some(nix::libc::ENOTSOCK)
            | Some(nix::libc::EOPNOTSUPP)
    )
}

/// Counts a repeated event and says when to log it: the first time, then at most once per
/// [`LOG_PERIOD`], each time with the number of events since the previous line.
///
/// ```
/// let mut throttle = cluster_ipc::pressure::LogThrottle::new();
/// assert_eq!(throttle.event(), Some(1));
/// assert_eq!(throttle.event(), None); // counted, logged with the next line
/// ```
#[derive(Debug, Default)]
pub struct LogThrottle {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl LogThrottle {
    /// A throttle that has logged nothing yet.
    pub fn new() -> LogThrottle {
        LogThrottle::default()
    }

    /// Records one event; `Some(n)` when it is time to log (n events since the last line,
    /// this one included).
    pub fn event(&mut self) -> Option<u64> {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|last| now.duration_since(last) < LOG_PERIOD)
        {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// After an accept loop's `what` failed with `error`: logs it through `failures` (at most once
/// per [`LOG_PERIOD`], with the count) and returns how long to stop accepting: [`ACCEPT_PAUSE`]
/// when the descriptor table is full, 10 ms otherwise (a failure that repeats at once would
/// spin).
pub fn accept_failed(failures: &mut LogThrottle, what: &str, error: &io::Error) -> Duration {
    let exhausted = is_descriptor_exhaustion(error);
    if let Some(count) = failures.event() {
        let pausing = if exhausted {
            "; pausing accepts for 500 ms"
        } else {
            ""
        };
        tracing::warn!(count, "{what} {count} time(s): {error}{pausing}");
    }
    if exhausted {
        ACCEPT_PAUSE
    } else {
        Duration::from_millis(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_cannot_accept_is_broken_and_a_lost_connection_is_not() {
        for errno in [
            nix::libc::EINVAL,
            nix::libc::EBADF,
            nix::libc::ENOTSOCK,
            nix::libc::EOPNOTSUPP,
        ] {
            assert!(is_listener_broken(&io::Error::from_raw_os_error(errno)));
        }
        for errno in [
            nix::libc::ECONNABORTED,
            nix::libc::EMFILE,
            nix::libc::ENOBUFS,
            nix::libc::EPERM,
        ] {
            assert!(!is_listener_broken(&io::Error::from_raw_os_error(errno)));
        }
    }

    #[test]
    fn emfile_and_enfile_are_exhaustion_and_others_are_not() {
        assert!(is_descriptor_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::EMFILE
        )));
        assert!(is_descriptor_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::ENFILE
        )));
        assert!(!is_descriptor_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::ECONNABORTED
        )));
    }

    #[test]
    fn a_burst_is_logged_once_then_counted() {
        let mut throttle = LogThrottle::new();
        assert_eq!(throttle.event(), Some(1));
        for _ in 0..100 {
            assert_eq!(throttle.event(), None);
        }
        throttle.last_logged = Some(Instant::now() - LOG_PERIOD);
        assert_eq!(throttle.event(), Some(101));
    }
}
