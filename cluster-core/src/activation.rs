//! Socket activation: listening sockets a service manager (systemd, `systemd-socket-activate`)
//! passed to the master (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`).
//!
//! The descriptors are read once per process, the first time a master is made, and kept
//! for the process's whole life: the master never closes them, so connections queued while
//! the master restarts wait in the socket systemd holds. When a worker (or
//! [`crate::Cluster::listen`], or a pm group's `listen`) asks for an address, the listener
//! table looks here first: a TCP socket is matched by its bound address, a Unix socket by
//! its path or by its `LISTEN_FDNAMES` name being that path. Nothing else is bound for an
//! address an adopted socket serves.
//!
//! The variables are the master's alone: workers are started without them (see
//! [`MASTER_ONLY_ENV`]), and every adopted descriptor is close-on-exec.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Variables for the master only, removed from every worker's environment: socket
/// activation's and the notify socket's (only the master talks to the service manager).
pub(crate) const MASTER_ONLY_ENV: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

enum Adopted {
    Tcp(SocketAddr, Arc<TcpListener>),
    Unix {
        path: Option<PathBuf>,
        name: String,
        listener: Arc<UnixListener>,
    },
}

static ADOPTED: OnceLock<Vec<Adopted>> = OnceLock::new();

/// Reads the passed descriptors if this process has not yet; later calls do nothing.
pub(crate) fn adopt_from_env() {
    ADOPTED.get_or_init(read_env);
}

fn read_env() -> Vec<Adopted> {
    // Sets close-on-exec on every passed descriptor; checks LISTEN_PID is ours.
    let passed = match sd_notify::listen_fds_with_names() {
        Ok(passed) => passed.collect::<Vec<(RawFd, String)>>(),
        Err(e) => {
            tracing::warn!("socket activation: LISTEN_FDS ignored: {e}");
            return Vec::new();
        }
    };
    let mut adopted = Vec::new();
    for (fd, name) in passed {
        // SAFETY: the service manager passed `fd` to this process (LISTEN_PID is ours) and
        // nothing else in the process owns it: it is read once, here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match classify(owned, name) {
            Ok(socket) => adopted.push(socket),
            Err(reason) => {
                tracing::warn!(fd, "socket activation: descriptor not adopted: {reason}")
            }
        }
    }
    adopted
}

fn classify(fd: OwnedFd, name: String) -> Result<Adopted, String> {
    let socket = socket2::Socket::from(fd);
    if socket.r#type().map_err(|e| e.to_string())? != socket2::Type::STREAM {
        return Err(format!("{name}: not a stream socket"));
    }
    // Every holder of a shared socket uses it non-blocking (see `cluster_ipc::bind_tcp`).
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    if let Some(address) = local.as_socket() {
        tracing::info!(%address, name, "socket activation: adopted");
        return Ok(Adopted::Tcp(address, Arc::new(socket.into())));
    }
    if local.is_unix() {
        let path = local.as_pathname().map(Path::to_path_buf);
        tracing::info!(path = ?path, name, "socket activation: adopted");
        return Ok(Adopted::Unix {
            path,
            name,
            listener: Arc::new(socket.into()),
        });
    }
    Err(format!("{name}: neither an IP nor a Unix socket"))
}

/// The adopted TCP socket bound to `address`, if systemd passed one.
pub(crate) fn tcp(address: SocketAddr) -> Option<Arc<TcpListener>> {
    ADOPTED.get()?.iter().find_map(|adopted| match adopted {
        Adopted::Tcp(bound, listener) if *bound == address => Some(listener.clone()),
        _ => None,
    })
}

/// The adopted Unix socket at `path` (its bound path, or its name), if systemd passed one.
pub(crate) fn unix(path: &Path) -> Option<Arc<UnixListener>> {
    ADOPTED.get()?.iter().find_map(|adopted| match adopted {
        Adopted::Unix {
            path: bound,
            name,
            listener,
        } if bound.as_deref() == Some(path) || Path::new(name) == path => Some(listener.clone()),
        _ => None,
    })
}

/// Whether `address` (`host:port` or `unix:PATH`) is served by an adopted socket.
pub(crate) fn serves(address: &str) -> bool {
    match cluster_ipc::unix_path(address) {
        Some(path) => unix(path).is_some(),
        None => address.parse().ok().and_then(tcp).is_some(),
    }
}
