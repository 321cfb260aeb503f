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
