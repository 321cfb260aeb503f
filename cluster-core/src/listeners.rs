//! The master's listening sockets: one per address (TCP, Unix, UDP), bound at the first
//! worker's request, kept open for the master's whole life so queued connections (and
//! datagrams) outlive any worker. In
//! `ReusePort` scheduling the master only reserves the address (bound, not listening) and
//! each worker listens on a socket of its own.
//!
//! A socket the service manager passed (socket activation, `activation.rs`) is used for its
//! address instead of binding one (not in `ReusePort` scheduling, whose workers bind their
//! own sockets).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cluster_ipc::ListenFailure;

use crate::refuse::Socket;

/// The master's sockets. TCP and UDP sockets are keyed by the requested address and the
/// request's index (Node's per-worker index: a worker's second `listen()` on an address
/// while its first is open has index 1), so each `listen(0)` of a worker gets a port of
/// its own, shared with the other workers' `listen(0)` of the same index.
#[derive(Default)]
pub(crate) struct Listeners {
    by_address: Mutex<HashMap<(SocketAddr, u32), Arc<TcpListener>>>,
    by_path: Mutex<HashMap<PathBuf, Arc<UnixListener>>>,
    udp: Mutex<HashMap<(SocketAddr, u32), Arc<UdpSocket>>>,
}

/// Every socket of `table` once (a socket is in it under its requested and its bound
/// address), with its bound address.
fn once_each<K, S>(
    table: &HashMap<K, Arc<S>>,
    local_addr: fn(&S) -> std::io::Result<SocketAddr>,
) -> Vec<(SocketAddr, Arc<S>)> {
    let mut sockets: Vec<(SocketAddr, Arc<S>)> = Vec::new();
    for socket in table.values() {
        if sockets.iter().any(|(_, s)| Arc::ptr_eq(s, socket)) {
            continue;
        }
        if let Ok(local) = local_addr(socket) {
            sockets.push((local, socket.clone()));
        }
    }
    sockets
}

/// A fixed address asked for again by a worker that holds it already: what a second bind
/// of it in one process gets.
fn already_held(address: &str) -> ListenFailure {
    ListenFailure::with_errno(
        nix::libc::EADDRINUSE,
        format!("listen on {address}: this worker already listens on it"),
    )
}

impl Listeners {
    /// The socket for `address` and `index`, bound now (with `options`, else `backlog`) if
    /// no worker asked for it before. The error says what failed, naming the address.
    pub(crate) fn get_or_bind(
        &self,
        address: &str,
        index: u32,
        backlog: i32,
        options: cluster_ipc::ListenOptions,
        reuse_port: bool,
    ) -> Result<Arc<TcpListener>, ListenFailure> {
        let requested: SocketAddr = address.parse().map_err(|_| {
            ListenFailure::with_errno(
                nix::libc::EINVAL,
                format!("listen on {address}: not an IP address with a port"),
            )
        })?;
        if index > 0 && requested.port() != 0 {
            return Err(already_held(address));
        }
        let mut table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = table.get(&(requested, index)) {
            return Ok(listener.clone());
        }
        // Handed over by an old master (hot upgrade), or passed by systemd, before binding.
        let adopted = if index > 0 {
            None
        } else if let Some(inherited) = crate::upgrade::take_tcp(requested) {
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
                    cluster_ipc::bind_tcp_with(requested, backlog, options, false)
                };
                Arc::new(bound.map_err(|e| ListenFailure::from_io(&e))?)
            }
        };
        // Known by its bound address too: a worker told the real port of a `:0` request must
        // get this socket, not a second one with its own queue.
        if let Ok(local) = listener.local_addr() {
            table.insert((local, 0), listener.clone());
        }
        table.insert((requested, index), listener.clone());
        Ok(listener)
    }

    /// Whether the master holds a socket for `address` (`host:port`, `unix:PATH` or
    /// `udp:host:port`).
    pub(crate) fn contains(&self, address: &str) -> bool {
        if let Some(requested) = cluster_ipc::udp_address(address) {
            return requested.is_ok_and(|requested| {
                self.udp
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&(requested, 0))
            });
        }
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
                    .contains_key(&(requested, 0))
            }),
        }
    }

    /// Every TCP socket once, by its bound address.
    pub(crate) fn tcp(&self) -> Vec<(SocketAddr, Arc<TcpListener>)> {
        let table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        once_each(&table, TcpListener::local_addr)
    }

    /// The Unix socket at `path`, bound now if no worker asked for it before.
    pub(crate) fn get_or_bind_unix(
        &self,
        path: &Path,
        index: u32,
        backlog: i32,
    ) -> Result<Arc<UnixListener>, ListenFailure> {
        if index > 0 {
            return Err(already_held(&format!(
                "{}{}",
                cluster_ipc::UNIX_PREFIX,
                path.display()
            )));
        }
        let mut table = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = table.get(path) {
            return Ok(listener.clone());
        }
        let listener = match crate::upgrade::take_unix(path) {
            Some(inherited) => Arc::new(inherited),
            None => match crate::activation::unix(path) {
                Some(listener) => listener,
                None => Arc::new(
                    cluster_ipc::bind_unix(path, backlog)
                        .map_err(|e| ListenFailure::from_io(&e))?,
                ),
            },
        };
        table.insert(path.to_path_buf(), listener.clone());
        Ok(listener)
    }

    /// The UDP socket for `requested` and `index`, bound now if no worker asked for it
    /// before (or handed over by an old master). Like TCP, a socket bound for port 0 is also
    /// known by its real address, so every worker told that port gets this socket.
    pub(crate) fn get_or_bind_udp(
        &self,
        requested: SocketAddr,
        index: u32,
    ) -> Result<Arc<UdpSocket>, ListenFailure> {
        if index > 0 && requested.port() != 0 {
            return Err(already_held(&format!(
                "{}{requested}",
                cluster_ipc::UDP_PREFIX
            )));
        }
        let mut table = self.udp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(socket) = table.get(&(requested, index)) {
            return Ok(socket.clone());
        }
        let inherited = (index == 0).then(|| crate::upgrade::take_udp(requested));
        let socket = match inherited.flatten() {
            Some(inherited) => Arc::new(inherited),
            None => {
                Arc::new(cluster_ipc::bind_udp(requested).map_err(|e| ListenFailure::from_io(&e))?)
            }
        };
        if let Ok(local) = socket.local_addr() {
            table.insert((local, 0), socket.clone());
        }
        table.insert((requested, index), socket.clone());
        Ok(socket)
    }

    /// Every UDP socket once, by its bound address.
    pub(crate) fn udp(&self) -> Vec<(SocketAddr, Arc<UdpSocket>)> {
        let table = self.udp.lock().unwrap_or_else(|p| p.into_inner());
        once_each(&table, UdpSocket::local_addr)
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
