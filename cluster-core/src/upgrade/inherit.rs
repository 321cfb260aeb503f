//! The listening sockets a new master inherits from the old one, named in
//! [`ENV_INHERITED`]: `FD:ADDRESS`, `FD:unix:PATH` or `FD:udp:ADDRESS`, comma-separated
//! (`3:127.0.0.1:1337,4:unix:/run/x.sock,5:udp:127.0.0.1:5353`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The environment variable that names the inherited listening sockets.
pub const ENV_INHERITED: &str = "CLUSTER_INHERITED";

/// What one inherited descriptor listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Udp(SocketAddr),
}

/// The inherited sockets no listener table has taken yet.
fn table() -> &'static Mutex<HashMap<Address, OwnedFd>> {
    static TABLE: OnceLock<Mutex<HashMap<Address, OwnedFd>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<Address, OwnedFd>> {
    table().lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads [`ENV_INHERITED`] once: each named descriptor becomes close-on-exec again (so no
/// worker inherits it by accident) and waits in the table for the listener table to ask
/// for its address. A malformed entry, or a number that is not an open socket, is logged
/// and skipped: that address is then bound as usual.
pub(crate) fn adopt_from_env() {
    let Some(value) = std::env::var_os(ENV_INHERITED) else {
        return;
    };
    let value = value.to_string_lossy().into_owned();
    let mut table = lock();
    for entry in value.split(',').filter(|e| !e.is_empty()) {
        match parse_entry(entry) {
            Some((fd, address)) => match super::sys::adopt_socket(fd) {
                Ok(owned) => {
                    tracing::info!(fd, ?address, "inherited a listening socket");
                    table.insert(address, owned);
                }
                Err(e) => tracing::error!(fd, ?address, "{ENV_INHERITED}: not adopted: {e}"),
            },
            None => tracing::error!("{ENV_INHERITED}: {entry:?} is not FD:ADDRESS"),
        }
    }
}

fn parse_entry(entry: &str) -> Option<(RawFd, Address)> {
    let (fd, rest) = entry.split_once(':')?;
    let fd: RawFd = fd.parse().ok().filter(|fd| *fd > 2)?;
    let address = if let Some(udp) = cluster_ipc::udp_address(rest) {
        Address::Udp(udp.ok()?)
    } else if let Some(path) = cluster_ipc::unix_path(rest) {
        Address::Unix(path.to_path_buf())
    } else {
        Address::Tcp(rest.parse().ok()?)
    };
    Some((fd, address))
}

/// The value of [`ENV_INHERITED`] naming `sockets`; an error names a Unix path that cannot
/// be written in it (one with a comma).
pub(crate) fn encode(sockets: &[(RawFd, Address)]) -> Result<String, String> {
    let mut entries = Vec::new();
    for (fd, address) in sockets {
        match address {
            Address::Tcp(a) => entries.push(format!("{fd}:{a}")),
            Address::Udp(a) => entries.push(format!("{fd}:{}{a}", cluster_ipc::UDP_PREFIX)),
            Address::Unix(path) => {
                let path = path.to_str().filter(|p| !p.contains(','));
                let path =
                    path.ok_or_else(|| format!("{address:?}: not a UTF-8 path free of commas"))?;
                entries.push(format!("{fd}:{}{path}", cluster_ipc::UNIX_PREFIX));
            }
        }
    }
    Ok(entries.join(","))
}

/// The inherited TCP socket for `address`, if there is one and nobody took it yet.
pub(crate) fn take_tcp(address: SocketAddr) -> Option<TcpListener> {
    lock().remove(&Address::Tcp(address)).map(TcpListener::from)
}

/// The inherited Unix socket at `path`, if there is one and nobody took it yet.
pub(crate) fn take_unix(path: &Path) -> Option<UnixListener> {
    lock()
        .remove(&Address::Unix(path.to_path_buf()))
        .map(UnixListener::from)
}

/// The inherited UDP socket for `address`, if there is one and nobody took it yet.
pub(crate) fn take_udp(address: SocketAddr) -> Option<UdpSocket> {
    lock().remove(&Address::Udp(address)).map(UdpSocket::from)
}

/// The descriptor of a socket for the new master.
pub(crate) fn entry(fd: &impl AsRawFd, address: Address) -> (RawFd, Address) {
    (fd.as_raw_fd(), address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let sockets = vec![
            (3, Address::Tcp("127.0.0.1:1337".parse().expect("address"))),
            (4, Address::Tcp("[::1]:80".parse().expect("address"))),
            (5, Address::Unix(PathBuf::from("/run/x.sock"))),
            (6, Address::Udp("127.0.0.1:5353".parse().expect("address"))),
        ];
        let value = encode(&sockets).expect("encode");
        assert_eq!(
            value,
            "3:127.0.0.1:1337,4:[::1]:80,5:unix:/run/x.sock,6:udp:127.0.0.1:5353"
        );
        let parsed: Vec<_> = value
            .split(',')
            .map(|e| parse_entry(e).expect("entry"))
            .collect();
        assert_eq!(parsed, sockets);
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in [
            "",
            "x:127.0.0.1:1",
            "3",
            "3:nowhere",
            "1:127.0.0.1:1",
            "3:udp:x",
        ] {
            assert_eq!(parse_entry(entry), None, "{entry}");
        }
        let comma = [(3, Address::Unix(PathBuf::from("/a,b")))];
        assert!(encode(&comma).is_err());
    }
}
