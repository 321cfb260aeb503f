//! Outside a cluster, sockets passed with systemd's protocol (`LISTEN_FDS`, `LISTEN_PID`
//! equal to this process's pid): by systemd, `systemd-socket-activate`, or the `cluster`
//! command (`cluster run -l 127.0.0.1:8080 -- ./worker`). `listen`/`incoming` use the one
//! bound to the asked address instead of binding, so a program written for this project
//! also runs, unchanged, as a foreign worker.
//!
//! Read once; each socket is taken once (close-on-exec then, as `sd_listen_fds` does).
//! Descriptors that are not TCP listening sockets are left alone.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;

/// Passed TCP sockets not taken yet, by bound address.
fn passed() -> &'static Mutex<Vec<(SocketAddr, RawFd)>> {
    static PASSED: OnceLock<Mutex<Vec<(SocketAddr, RawFd)>>> = OnceLock::new();
    PASSED.get_or_init(|| Mutex::new(read_env()))
}

fn read_env() -> Vec<(SocketAddr, RawFd)> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    if !ours || !(1..=4096).contains(&count) {
        return Vec::new();
    }
    let mut found = Vec::new();
    for fd in FIRST..FIRST + count {
        // A listening TCP socket only: getsockname gives an IP address and SO_ACCEPTCONN.
        let Ok(address) = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        else {
            continue;
        };
        let ip = address
            .as_sockaddr_in()
            .map(|a| SocketAddr::from((a.ip(), a.port())))
            .or_else(|| {
                address
                    .as_sockaddr_in6()
                    .map(|a| SocketAddr::from((a.ip(), a.port())))
            });
        let listening = nix::sys::socket::getsockopt(
            // SAFETY: `fd` is open (getsockname succeeded) and only borrowed for the call.
            &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::sys::socket::sockopt::AcceptConn,
        )
        .unwrap_or(false);
        if let (Some(ip), true) = (ip, listening) {
            found.push((ip, fd));
        }
    }
    found
}

/// The passed socket bound to `address` (exactly, or any port for port 0), taken.
pub(crate) fn take_tcp(address: SocketAddr) -> Option<std::net::TcpListener> {
    let mut passed = passed().lock().unwrap_or_else(|p| p.into_inner());
    let at = passed.iter().position(|(bound, _)| {
        *bound == address || (address.port() == 0 && bound.ip() == address.ip())
    })?;
    let (_, fd) = passed.remove(at);
    // SAFETY: `fd` was passed to this process for it to own (systemd's protocol), was found
    // to be a listening TCP socket, and is taken out of the table, so it is owned once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let listener = std::net::TcpListener::from(owned);
    if listener.set_nonblocking(true).is_err() {
        // Not usable by tokio; give the descriptor back to nobody rather than close it twice.
        let _ = listener.into_raw_fd();
        return None;
    }
    Some(listener)
}
