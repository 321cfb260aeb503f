//! The listening sockets a master shares with its workers.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// The listen backlog used when none is configured.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// A TCP socket for `address` with `SO_REUSEADDR` (a restart binds at once, whatever
/// connections of the previous run linger in TIME_WAIT) and, for a `SO_REUSEPORT` group,
/// `SO_REUSEPORT`; close-on-exec, as socket2 makes every socket.
///
/// Only ReusePort scheduling sets `SO_REUSEPORT`: on a socket every worker shares it would
/// let a second server (another instance, or an old cluster that is still draining) bind the
/// same port and silently take half of its connections, where users expect "address in use".
fn tcp_socket(address: SocketAddr, reuse_port: bool, options: ListenOptions) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let (Some(only_v6), true) = (options.ipv6_only, address.is_ipv6()) {
        socket.set_only_v6(only_v6)?;
    }
    Ok(socket)
}

/// The options of one listen request, Node's `server.listen({ backlog, ipv6Only })`. They
/// apply when the socket is bound (the first request for an address and index); later
/// requests get that socket as it is.
///
/// ```
/// let options = cluster_ipc::ListenOptions::new().backlog(64).ipv6_only(true);
/// assert_eq!(options.backlog, Some(64));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenOptions {
    /// The listen backlog; `None`: the cluster's (`Settings::backlog`, default 1024).
    pub backlog: Option<i32>,
    /// For an IPv6 address, whether the socket takes IPv6 only (`IPV6_V6ONLY`); `None`:
    /// the system's default (on Linux, dual-stack: `[::]` takes IPv4 too).
    pub ipv6_only: Option<bool>,
}

impl ListenOptions {
    /// No option set: the cluster's backlog, the system's IPv6 default.
    pub fn new() -> Self {
        ListenOptions::default()
    }

    /// Sets the listen backlog (must be positive).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Sets `IPV6_V6ONLY` on an IPv6 socket.
    pub fn ipv6_only(mut self, ipv6_only: bool) -> Self {
        self.ipv6_only = Some(ipv6_only);
        self
    }

    /// The backlog to use: this one's, else `default`. An error for one that is not
    /// positive.
    pub fn backlog_or(&self, default: i32) -> io::Result<i32> {
        match self.backlog {
            Some(backlog) if backlog <= 0 => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listen backlog {backlog}: must be positive"),
            )),
            Some(backlog) => Ok(backlog),
            None => Ok(default),
        }
    }
}

/// How a Unix socket address is written where an address is a string (listen requests, the
/// group's addresses): `unix:/run/app.sock`.
pub const UNIX_PREFIX: &str = "unix:";

/// The path of a `unix:` address, if it is one.
pub fn unix_path(address: &str) -> Option<&std::path::Path> {
    address.strip_prefix(UNIX_PREFIX).map(std::path::Path::new)
}

/// Binds a Unix stream socket at `path` to be shared like [`bind_tcp`]'s: close-on-exec,
/// non-blocking, listening with `backlog`. A stale socket file left there by an earlier run
/// (nothing listens on it: a connection is refused) is replaced; a socket some process
/// listens on is `AddrInUse`, and any other file at `path` is an error. Errors name the path.
pub fn bind_unix(
    path: &std::path::Path,
    backlog: i32,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let named =
        |e: io::Error| io::Error::new(e.kind(), format!("listen on unix:{}: {e}", path.display()));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(named(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if someone_listens(path).map_err(named)? {
            return Err(named(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process listens on this socket",
            )));
        }
        std::fs::remove_file(path).map_err(named)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(named)?;
    socket.set_nonblocking(true).map_err(named)?;
    let address = socket2::SockAddr::unix(path).map_err(named)?;
    socket.bind(&address).map_err(named)?;
    socket.listen(backlog).map_err(named)?;
    Ok(socket.into())
}

/// Whether a process listens on the Unix socket at `path`: a connection attempt that is not
/// refused (accepted, or waiting in a full queue) says so. Never blocks.
fn someone_listens(path: &std::path::Path) -> io::Result<bool> {
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reserves `address` for a group of `SO_REUSEPORT` sockets without listening on it (a
/// socket that is bound but not listening receives no connection); resolves port 0.
pub fn reserve_tcp(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("reserve {address}: {e}"));
    let socket = tcp_socket(address, true, ListenOptions::new()).map_err(named)?;
    socket.bind(&address.into()).map_err(named)?;
    Ok(socket.into())
}

/// Binds a TCP listening socket the way the cluster shares it: `SO_REUSEADDR` set,
/// close-on-exec, non-blocking (the flag is shared by every process holding the socket, and
/// every holder uses it non-blocking). An address another socket listens on is an error
/// (`AddrInUse`), as for any server.
///
/// Errors name the address.
///
/// ```
/// let listener = cluster_ipc::bind_tcp("127.0.0.1:0".parse().unwrap(), 128).unwrap();
/// let address = listener.local_addr().unwrap();
/// let second = cluster_ipc::bind_tcp(address, 128).unwrap_err();
/// assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
/// ```
pub fn bind_tcp(address: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    listen_tcp(address, backlog, false, ListenOptions::new())
}

/// [`bind_tcp`] (or, with `reuse_port`, [`bind_tcp_reuse_port`]) with the options of a
/// listen request; `default_backlog` unless `options` sets one.
pub fn bind_tcp_with(
    address: SocketAddr,
    default_backlog: i32,
    options: ListenOptions,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let backlog = options
        .backlog_or(default_backlog)
        .map_err(|e| io::Error::new(e.kind(), format!("listen on {address}: {e}")))?;
    listen_tcp(address, backlog, reuse_port, options)
}

/// Binds one member of the `SO_REUSEPORT` group that [`reserve_tcp`] reserved (ReusePort
/// scheduling: each worker listens on a socket of its own, with its own queue). Errors name
/// the address.
pub fn bind_tcp_reuse_port(address: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    listen_tcp(address, backlog, true, ListenOptions::new())
}

/// How a UDP address is written where an address is a string (listen requests, the group's
/// addresses): `udp:127.0.0.1:5353`.
pub const UDP_PREFIX: &str = "udp:";

/// The socket address of a `udp:` address, if it is one; `Some(Err)` when it is one but
/// does not parse.
pub fn udp_address(address: &str) -> Option<Result<SocketAddr, std::net::AddrParseError>> {
    address.strip_prefix(UDP_PREFIX).map(str::parse)
}

/// Binds a UDP socket at `address` to be shared like [`bind_tcp`]'s sockets: every worker
/// that asks gets this same socket and the kernel gives each datagram to one reader.
/// Non-blocking, close-on-exec, without `SO_REUSEADDR` or `SO_REUSEPORT`: a second program
/// binding the same address fails with `AddrInUse` instead of silently taking datagrams.
/// Errors keep their kind and name the address.
pub fn bind_udp(address: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_udp_with(address, ListenOptions::new())
}

/// [`bind_udp`] with `options`: `ipv6_only` sets `IPV6_V6ONLY` on an IPv6 socket (Node's
/// `ipv6Only`), so the IPv4 port stays free; the backlog does not apply to datagrams.
pub fn bind_udp_with(
    address: SocketAddr,
    options: ListenOptions,
) -> io::Result<std::net::UdpSocket> {
    udp_socket(address, options, false)
}

/// A UDP socket of its own at `address`, with `SO_REUSEPORT` (and `ipv6_only` from
/// `options`): every process that binds one the same way shares the port, and the kernel
/// spreads the datagrams over their sockets by the senders' addresses (Node's
/// `reusePort: true` for `dgram`). Errors keep their kind and name the address.
pub fn bind_udp_reuse_port(
    address: SocketAddr,
    options: ListenOptions,
) -> io::Result<std::net::UdpSocket> {
    udp_socket(address, options, true)
}

fn udp_socket(
    address: SocketAddr,
    options: ListenOptions,
    reuse_port: bool,
) -> io::Result<std::net::UdpSocket> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("bind udp {address}: {e}"));
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(named)?;
    if let (SocketAddr::V6(_), Some(only)) = (address, options.ipv6_only) {
        socket.set_only_v6(only).map_err(named)?;
    }
    if reuse_port {
        socket.set_reuse_port(true).map_err(named)?;
    }
    socket.set_nonblocking(true).map_err(named)?;
    socket.bind(&address.into()).map_err(named)?;
    Ok(socket.into())
}

fn listen_tcp(
    address: SocketAddr,
    backlog: i32,
    reuse_port: bool,
    options: ListenOptions,
) -> io::Result<std::net::TcpListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("listen on {address}: {e}"));
    let socket = tcp_socket(address, reuse_port, options).map_err(named)?;
    socket.set_nonblocking(true).map_err(named)?;
    socket.bind(&address.into()).map_err(named)?;
    socket.listen(backlog).map_err(named)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("bind-unix-{}-{tag}.sock", std::process::id()))
    }

    #[test]
    fn a_stale_socket_file_is_replaced() {
        let path = socket_path("stale");
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let listener = bind_unix(&path, 16).expect("stale file replaced");
        drop(listener);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_socket_someone_listens_on_is_left_alone() {
        let path = socket_path("live");
        let _ = std::fs::remove_file(&path);
        let live = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let error = bind_unix(&path, 16).expect_err("in use");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        // Still the live listener's socket: a client reaches it.
        std::os::unix::net::UnixStream::connect(&path).expect("connect");
        assert!(live.accept().is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_udp_address_taken_is_addr_in_use_naming_it() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = taken.local_addr().expect("address");
        let error = bind_udp(address).expect_err("taken");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains(&address.to_string()), "{error}");
    }

    #[test]
    fn ipv6_only_decides_whether_ipv4_clients_reach_an_unspecified_ipv6_socket() {
        let any: SocketAddr = "[::]:0".parse().expect("address");
        for (only_v6, reached) in [(false, true), (true, false)] {
            let options = ListenOptions::new().ipv6_only(only_v6).backlog(8);
            let Ok(listener) = bind_tcp_with(any, 16, options, false) else {
                eprintln!("skipped: no IPv6 on this machine");
                return;
            };
            let port = listener.local_addr().expect("address").port();
            let connected = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            assert_eq!(connected, reached, "ipv6_only({only_v6})");
        }
        let error = bind_tcp_with(any, 16, ListenOptions::new().backlog(0), false)
            .expect_err("a backlog of 0");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn udp_addresses_parse() {
        assert_eq!(
            udp_address("udp:127.0.0.1:53").map(|r| r.ok()),
            Some(Some("127.0.0.1:53".parse().expect("address")))
        );
        assert!(matches!(udp_address("udp:nowhere"), Some(Err(_))));
        assert!(udp_address("127.0.0.1:53").is_none());
    }
}
