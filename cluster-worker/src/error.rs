//! Errors of the worker runtime.

/// Why this process cannot act as a worker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// The cluster API was first used outside a tokio runtime.
    #[error("the cluster worker API must first be used inside a tokio runtime")]
    NoRuntime,
    /// The master's environment variables are wrong.
    #[error("bad cluster handoff: {0}")]
    Handoff(String),
    /// The channel could not be set up.
    #[error("cluster channel: {0}")]
    Channel(std::sync::Arc<std::io::Error>),
}

impl From<std::io::Error> for WorkerError {
    fn from(e: std::io::Error) -> Self {
        WorkerError::Channel(std::sync::Arc::new(e))
    }
}
