//! The master's listening sockets: one per address, bound at the first worker's request,
//! kept open for the master's whole life so queued connections outlive any worker. In
//! `ReusePort` scheduling the master only reserves the address (bound, not listening) and
//! each worker listens on a socket of its own.
//!
//! A socket the service manager passed (socket activation, `activation.rs`) is used for its
//! address instead of binding one (not in `ReusePort` scheduling, whose workers bind their
//! own sockets).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::refuse::Socket;

#[derive(Default)]
pub(crate) struct Listeners {
    by_address: Mutex<HashMap<SocketAddr, Arc<TcpListener>>>,
    by_path: Mutex<HashMap<PathBuf, Arc<UnixListener>>>,
}

impl Listeners {
    /// The socket for `address`, bound now if no worker asked for it before. The error says
    /// what failed, naming the address.
    pub(crate) fn get_or_bind(
        &self,
        address: &str,
        backlog: i32,
        reuse_port: bool,
    ) -> std::io::Result<Arc<TcpListener>> {
        let requested: SocketAddr = address.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen on {address}: not an IP address with a port"),
            )
        })?;
        let mut table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = table.get(&requested) {
            return Ok(listener.clone());
        }
        // Handed over by an old master (hot upgrade), or passed by systemd, before binding.
        let adopted = if let Some(inherited) = crate::upgrade::take_tcp(requested) {
            Some(Arc::new(inherited))
        } else if reuse_port {
            None
        } else {
            crate::activation::tcp(requested)
        };
        let listener = match adopted {
            Some(listener) => listener,
            None => {
                let bound = if reuse_port {
                    cluster_ipc::reserve_tcp(requested)
                } else {
                    cluster_ipc::bind_tcp(requested, backlog)
                };
                Arc::new(bound?)
            }
        };
        // Known by its bound address too: a worker told the real port of a `:0` request must
        // get this socket, not a second one with its own queue.
        if let Ok(local) = listener.local_addr() {
            table.insert(local, listener.clone());
        }
        table.insert(requested, listener.clone());
        Ok(listener)
    }

    /// Whether the master holds a socket for `address` (`host:port` or `unix:PATH`).
    pub(crate) fn contains(&self, address: &str) -> bool {
        match cluster_ipc::unix_path(address) {
            Some(path) => self
                .by_path
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(path),
            None => address.parse::<SocketAddr>().is_ok_and(|requested| {
                self.by_address
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&requested)
            }),
        }
    }

    /// Every TCP socket once, by its bound address.
    pub(crate) fn tcp(&self) -> Vec<(SocketAddr, Arc<TcpListener>)> {
        let table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let mut sockets: Vec<(SocketAddr, Arc<TcpListener>)> = Vec::new();
        for listener in table.values() {
            if sockets.iter().any(|(_, l)| Arc::ptr_eq(l, listener)) {
                continue;
            }
            if let Ok(local) = listener.local_addr() {
                sockets.push((local, listener.clone()));
            }
        }
        sockets
    }

    /// The Unix socket at `path`, bound now if no worker asked for it before.
    pub(crate) fn get_or_bind_unix(
        &self,
        path: &Path,
        backlog: i32,
    ) -> std::io::Result<Arc<UnixListener>> {
        let mut table = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = table.get(path) {
            return Ok(listener.clone());
        }
        let listener = match crate::upgrade::take_unix(path) {
            Some(inherited) => Arc::new(inherited),
            None => match crate::activation::unix(path) {
                Some(listener) => listener,
                None => Arc::new(cluster_ipc::bind_unix(path, backlog)?),
            },
        };
        table.insert(path.to_path_buf(), listener.clone());
        Ok(listener)
    }

    /// Every Unix socket, by its path.
    pub(crate) fn unix(&self) -> Vec<(PathBuf, Arc<UnixListener>)> {
        let table = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        table.iter().map(|(p, l)| (p.clone(), l.clone())).collect()
    }

    /// Every socket once (a TCP socket is in the table under two addresses); TCP ones only
    /// if `tcp` (ReusePort's reserved sockets do not listen).
    pub(crate) fn sockets(&self, tcp: bool) -> Vec<Socket> {
        let mut sockets = Vec::new();
        if tcp {
            let table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
            let mut seen: Vec<&Arc<TcpListener>> = Vec::new();
            for listener in table.values() {
                if !seen.iter().any(|s| Arc::ptr_eq(s, listener)) {
                    seen.push(listener);
                    sockets.push(Socket::Tcp(listener.clone()));
                }
            }
        }
        let table = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        sockets.extend(table.values().map(|l| Socket::Unix(l.clone())));
        sockets
    }
}
