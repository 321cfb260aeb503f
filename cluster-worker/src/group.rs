//! The group a supervised worker belongs to, and its listeners.

use std::io;

use cluster_ipc::handoff::{ENV_GROUP, ENV_GROUP_LISTEN};
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::Acceptor;

/// The name of this worker's group when a supervisor (`cluster_core::pm::Master`) started
/// it.
pub fn group() -> Option<String> {
    std::env::var(ENV_GROUP).ok()
}

/// One listener for each of the group's `listen` addresses (see [`crate::listen`]). Empty
/// when the group listens on nothing or this is not a supervised worker.
pub async fn group_listeners() -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for address in group_addresses()? {
        listeners.push(crate::listen(address).await?);
    }
    Ok(listeners)
}

/// The connections of each of the group's `listen` addresses, in any scheduling mode (see
/// [`crate::incoming`]).
pub async fn group_incoming() -> io::Result<Vec<Acceptor>> {
    let mut incoming = Vec::new();
    for address in group_addresses()? {
        incoming.push(crate::incoming(address).await?);
    }
    Ok(incoming)
}

fn group_addresses() -> io::Result<Vec<SocketAddr>> {
    let Ok(addresses) = std::env::var(ENV_GROUP_LISTEN) else {
        return Ok(Vec::new());
    };
    addresses
        .split(',')
        .filter(|a| !a.is_empty())
        .map(|address| {
            address.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{ENV_GROUP_LISTEN}: {address:?} is not an address"),
                )
            })
        })
        .collect()
}
