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

/// One listener for each of the group's TCP `listen` addresses (see [`crate::listen`]).
/// Empty when the group listens on none or this is not a supervised worker.
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

/// Listeners for each of the group's Unix socket paths (see [`crate::listen_unix`]).
pub async fn group_unix_listeners() -> io::Result<Vec<tokio::net::UnixListener>> {
    let mut listeners = Vec::new();
    for entry in group_entries() {
        if let Some(path) = cluster_ipc::unix_path(&entry) {
            listeners.push(crate::listen_unix(path).await?);
        }
    }
    Ok(listeners)
}

/// The group's addresses as the master wrote them: `IP:PORT` or `unix:PATH`.
fn group_entries() -> Vec<String> {
    std::env::var(ENV_GROUP_LISTEN)
        .map(|all| {
            all.split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The group's TCP addresses.
fn group_addresses() -> io::Result<Vec<SocketAddr>> {
    group_entries()
        .iter()
        .filter(|entry| cluster_ipc::unix_path(entry).is_none())
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
