//! Errors of the master.

/// Why a worker could not be forked.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The cluster is stopping or stopped.
    #[error("the cluster is stopping; no new workers")]
    Stopping,
    /// The channel to the worker could not be made.
    #[error("could not make the worker's channel: {0}")]
    Channel(#[source] std::io::Error),
    /// The process could not be started.
    #[error("could not start the worker process: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why [`crate::Cluster::run`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Signal handlers could not be installed.
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// `run` is already running for this cluster.
    #[error("Cluster::run is already running")]
    AlreadyRunning,
    /// Workers kept dying before they were ready; the master stopped them all
    /// ([`crate::Settings::max_boot_failures`]).
    #[error("{0}")]
    BootFailures(String),
}

/// Why [`crate::setup_master`] (or [`crate::pm::Master::register`]) could not make a master.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A setting cannot work; the error names it.
    #[error(transparent)]
    Settings(#[from] crate::SettingsError),
    /// This process is a worker a master started: a worker must not start workers of its own
    /// (each would fork again). Branch on `cluster_worker::is_worker()` first, or use
    /// [`crate::run`].
    #[error(
        "setup_master was called in worker process {worker} that master {master} started; a \
         worker must not start workers of its own (each would fork again): branch on \
         cluster_worker::is_worker() before calling setup_master, or use cluster_core::run"
    )]
    InWorker {
        /// This process.
        worker: u32,
        /// Its master.
        master: u32,
    },
    /// Not called inside a tokio runtime.
    #[error("setup_master must be called inside a tokio runtime")]
    NoRuntime,
    /// The master could not start: `what` failed with `source` (its kind kept).
    #[error("could not {what}: {source}")]
    Io {
        /// What the master was doing (start the spawner thread, install the signal
        /// handlers, listen on an address).
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl SetupError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
        let what = what.into();
        move |source| SetupError::Io { what, source }
    }

    /// The bad setting's name, when a setting is the cause.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            SetupError::Settings(e) => Some(e.setting),
            _ => None,
        }
    }

    /// The OS error's kind, when an OS call failed.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            SetupError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}
