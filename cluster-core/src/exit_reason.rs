//! Why a worker left, as the master knows it, beyond its exit code or signal.

/// Why a worker left (or is leaving), when the master knows more than its exit status: set
/// once, by the first thing that decided the worker's end. A worker killed from outside,
/// or one that crashed without a word, has none.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// Its code panicked; `graceful` handed over with the panic's message and location.
    Panic {
        /// The panic message.
        message: String,
        /// Where it panicked, `file:line:column`.
        location: Option<String>,
    },
    /// A supervisor retired it because its group was scaled down.
    ScaleDown,
    /// A reload (or `restart`) replaced it.
    Reload,
    /// The master is stopping.
    Stop,
    /// The master replaced it: unresponsive (the watchdog), or recycled (requests, memory,
    /// age).
    Replaced(crate::ReplaceReason),
}

impl ExitReason {
    /// True when the master asked the worker to go (scale-down, reload, stop): such an exit
    /// is not counted as a restart.
    pub fn is_planned(&self) -> bool {
        !matches!(self, ExitReason::Panic { .. })
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Panic {
                message,
                location: Some(location),
            } => write!(f, "panic '{message}' at {location}"),
            ExitReason::Panic {
                message,
                location: None,
            } => write!(f, "panic '{message}'"),
            ExitReason::ScaleDown => f.write_str("scale-down"),
            ExitReason::Reload => f.write_str("reload"),
            ExitReason::Stop => f.write_str("stop"),
            ExitReason::Replaced(reason) => write!(f, "{reason}"),
        }
    }
}
