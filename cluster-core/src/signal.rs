//! The signals a master sends to its workers or reads from their exit status: this crate's
//! own type, so the public API does not tie its versions to `nix`'s.

use nix::libc;

/// A Unix signal, named as in C. [`crate::Worker::kill`] sends one; [`crate::Exit::signal`]
/// tells which one ended a worker.
///
/// ```
/// use cluster_core::Signal;
///
/// assert_eq!(Signal::SIGTERM.as_raw(), 15);
/// assert_eq!(Signal::from_raw(9), Signal::SIGKILL);
/// assert_eq!(Signal::SIGKILL.to_string(), "SIGKILL");
/// ```
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// Hang-up: the master's reload.
    SIGHUP,
    /// Interrupt (Ctrl-C).
    SIGINT,
    /// Quit.
    SIGQUIT,
    /// Illegal instruction.
    SIGILL,
    /// Abort: what the watchdog sends a hung worker (a core dump, a backtrace).
    SIGABRT,
    /// Bus error.
    SIGBUS,
    /// Arithmetic error.
    SIGFPE,
    /// Kill: cannot be caught.
    SIGKILL,
    /// User signal 1: reopen log files.
    SIGUSR1,
    /// Invalid memory access.
    SIGSEGV,
    /// User signal 2: the master's hot upgrade.
    SIGUSR2,
    /// Write to a pipe nobody reads.
    SIGPIPE,
    /// Alarm clock.
    SIGALRM,
    /// Terminate: a graceful stop.
    SIGTERM,
    /// Continue a stopped process.
    SIGCONT,
    /// Stop: cannot be caught.
    SIGSTOP,
    /// Stop from the terminal.
    SIGTSTP,
    /// Another signal, by number.
    Other(i32),
}

/// Every named signal with its number on Linux.
const NAMED: [(Signal, i32, &str); 17] = [
    (Signal::SIGHUP, libc::SIGHUP, "SIGHUP"),
    (Signal::SIGINT, libc::SIGINT, "SIGINT"),
    (Signal::SIGQUIT, libc::SIGQUIT, "SIGQUIT"),
    (Signal::SIGILL, libc::SIGILL, "SIGILL"),
    (Signal::SIGABRT, libc::SIGABRT, "SIGABRT"),
    (Signal::SIGBUS, libc::SIGBUS, "SIGBUS"),
    (Signal::SIGFPE, libc::SIGFPE, "SIGFPE"),
    (Signal::SIGKILL, libc::SIGKILL, "SIGKILL"),
    (Signal::SIGUSR1, libc::SIGUSR1, "SIGUSR1"),
    (Signal::SIGSEGV, libc::SIGSEGV, "SIGSEGV"),
    (Signal::SIGUSR2, libc::SIGUSR2, "SIGUSR2"),
    (Signal::SIGPIPE, libc::SIGPIPE, "SIGPIPE"),
    (Signal::SIGALRM, libc::SIGALRM, "SIGALRM"),
    (Signal::SIGTERM, libc::SIGTERM, "SIGTERM"),
    (Signal::SIGCONT, libc::SIGCONT, "SIGCONT"),
    (Signal::SIGSTOP, libc::SIGSTOP, "SIGSTOP"),
    (Signal::SIGTSTP, libc::SIGTSTP, "SIGTSTP"),
];

impl Signal {
    /// The signal's number.
    pub fn as_raw(self) -> i32 {
        match self {
            Signal::Other(number) => number,
            named => NAMED
                .iter()
                .find(|(s, _, _)| *s == named)
                .map_or(0, |(_, n, _)| *n),
        }
    }

    /// The signal with this number (a named variant when it has one).
    pub fn from_raw(number: i32) -> Signal {
        NAMED
            .iter()
            .find(|(_, n, _)| *n == number)
            .map_or(Signal::Other(number), |(s, _, _)| *s)
    }

    /// As nix's type, for the calls that send it.
    pub(crate) fn to_nix(self) -> Option<nix::sys::signal::Signal> {
        nix::sys::signal::Signal::try_from(self.as_raw()).ok()
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match NAMED.iter().find(|(s, _, _)| s == self) {
            Some((_, _, name)) => f.write_str(name),
            None => write!(f, "signal {}", self.as_raw()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_signal_goes_through_its_number_and_back() {
        for (signal, number, name) in NAMED {
            assert_eq!(signal.as_raw(), number);
            assert_eq!(Signal::from_raw(number), signal);
            assert_eq!(signal.to_string(), name);
            assert!(signal.to_nix().is_some(), "{name}");
        }
        assert_eq!(Signal::from_raw(libc::SIGWINCH), Signal::Other(28));
        assert_eq!(Signal::Other(28).as_raw(), 28);
    }
}
