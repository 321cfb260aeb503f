//! The group a supervised worker belongs to, and its listeners.

use std::io;

use cluster_ipc::handoff::{ENV_GROUP, ENV_GROUP_LISTEN};
use tokio::net::TcpListener;

/// The name of this worker's group when a supervisor (`cluster_core::pm::Master`) started
/// it.
pub fn group() -> Option<String> {
    std::env::var(ENV_GROUP).ok()
}

/// One listener for each of the group's `listen` addresses (the master's shared sockets).
/// Empty when the group listens on nothing or this is not a supervised worker.
pub async fn group_listeners() -> io::Result<Vec<TcpListener>> {
    let Ok(addresses) = std::env::var(ENV_GROUP_LISTEN) else {
        return Ok(Vec::new());
    };
    let mut listeners = Vec::new();
    for address in addresses.split(',').filter(|a| !a.is_empty()) {
        let address = address.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV_GROUP_LISTEN}: {address:?} is not an address"),
            )
        })?;
        listeners.push(crate::listen(address).await?);
    }
    Ok(listeners)
}
