//! Every OS call the channel makes, in one place. Above this module the crate deals
//! in `OwnedFd`/`BorrowedFd` only.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The most descriptors one message may carry.
pub const MAX_FDS_PER_MESSAGE: usize = 16;

/// A connected pair of Unix stream sockets, both ends close-on-exec.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Puts `fd` in non-blocking mode (the flag lives on the open file description).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Marks `fd` close-on-exec, so processes this one starts do not inherit it.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// True when `fd` is an open socket.
pub fn is_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd)
        .map(|st| (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFSOCK)
        .unwrap_or(false)
}

/// The pid of the process that made the Unix stream socket pair whose end is descriptor
/// `fd` in this process (`SO_PEERCRED`), or `None` when `fd` is not open, is not a connected
/// Unix stream socket, or is a listening one (systemd's socket activation also passes fd 3).
pub fn stream_pair_peer_pid(fd: RawFd) -> Option<u32> {
    use nix::sys::socket::{getsockopt, sockopt};
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; on a descriptor that is not open it fails
    // with EBADF, and on success the returned descriptor is a new one this process owns.
    let copy = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return None;
    }
    // SAFETY: `copy` was just made by F_DUPFD_CLOEXEC and nothing else refers to it.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    if !is_socket(copy.as_fd())
        || getsockopt(&copy, sockopt::SockType).ok()? != SockType::Stream
        || getsockopt(&copy, sockopt::AcceptConn).ok()?
    {
        return None;
    }
    let peer = getsockopt(&copy, sockopt::PeerCredentials).ok()?;
    u32::try_from(peer.pid()).ok().filter(|pid| *pid != 0)
}

/// One `sendmsg` of `bytes`, with `fds` attached when non-empty. Never raises SIGPIPE.
pub fn send_with_fds(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let rights;
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() {
        &[]
    } else {
        rights = [ControlMessage::ScmRights(fds)];
        &rights
    };
    loop {
        match sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// What one `recvmsg` brought besides its descriptors.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes read (0 at end of stream).
    pub bytes: usize,
    /// The kernel cut the ancillary data short (`MSG_CTRUNC`): some descriptors sent with
    /// these bytes did not arrive, because this process's descriptor table is full
    /// (`RLIMIT_NOFILE`, `EMFILE`) or more were sent than one message may carry.
    pub descriptors_truncated: bool,
}

/// One `recvmsg` into `buf`. Descriptors that arrive are appended to `fds`,
/// close-on-exec, also those installed before the kernel had to cut the rest.
pub fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Received> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let bytes = msg.bytes;
    // `cmsgs()` refuses (ENOBUFS) when the kernel truncated the ancillary data.
    let Ok(cmsgs) = msg.cmsgs() else {
        adopt_truncated(&cmsg_space, fds);
        return Ok(Received {
            bytes,
            descriptors_truncated: true,
        });
    };
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for raw_fd in raw {
                // SAFETY: the kernel has just installed `raw_fd` in this process for
                // us (SCM_RIGHTS); nothing else refers to it, so we own it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw_fd) });
            }
        }
    }
    Ok(Received {
        bytes,
        descriptors_truncated: false,
    })
}

/// After `MSG_CTRUNC` the kernel still wrote one `SCM_RIGHTS` header for the descriptors it
/// did install before it ran out (nix will not iterate a truncated buffer): read that header
/// in the kernel's layout (`size_t` length, `int` level, `int` type, data aligned to
/// `size_t`) and take ownership of them, so none leaks.
fn adopt_truncated(cmsg: &[u8], fds: &mut Vec<OwnedFd>) {
    const WORD: usize = std::mem::size_of::<usize>();
    let header = (WORD + 8).next_multiple_of(WORD);
    if cmsg.len() < header {
        return;
    }
    let word = |at: usize| cmsg[at..at + WORD].try_into().map(usize::from_ne_bytes);
    let int = |at: usize| cmsg[at..at + 4].try_into().map(i32::from_ne_bytes);
    let (Ok(len), Ok(level), Ok(kind)) = (word(0), int(WORD), int(WORD + 4)) else {
        return;
    };
    if level != nix::libc::SOL_SOCKET || kind != nix::libc::SCM_RIGHTS || len < header {
        return;
    }
    let data = &cmsg[header..len.min(cmsg.len())];
    for chunk in data.chunks_exact(4) {
        let Ok(bytes) = chunk.try_into() else { break };
        let raw_fd = RawFd::from_ne_bytes(bytes);
        if raw_fd >= 0 {
            // SAFETY: the kernel installed `raw_fd` in this process for us before it cut
            // the ancillary data (SCM_RIGHTS); nothing else refers to it, so we own it.
            fds.push(unsafe { OwnedFd::from_raw_fd(raw_fd) });
        }
    }
}

/// Shuts both directions of a socket: the peer reads end-of-stream.
pub fn shutdown(fd: BorrowedFd<'_>) -> io::Result<()> {
    match nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both) {
        Ok(()) | Err(Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Waits until `fd` is writable or `timeout_ms` passes. Used only by the blocking send.
pub fn poll_writable(fd: BorrowedFd<'_>, timeout_ms: u16) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    loop {
        match poll(&mut fds, PollTimeout::from(timeout_ms)) {
            Err(Errno::EINTR) => continue,
            Ok(n) => return Ok(n > 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// This process's `RLIMIT_NOFILE`: (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    Ok(nix::sys::resource::getrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
    )?)
}

/// Sets this process's soft `RLIMIT_NOFILE` (the hard limit stays); processes it starts
/// afterwards inherit it.
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)?;
    Ok(())
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine, so a
/// deadline one process sets can be checked by another.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => (now.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(now.tv_nsec() as u64),
        // CLOCK_MONOTONIC exists on every Linux; should it fail, "now" is never late.
        Err(_) => 0,
    }
}
