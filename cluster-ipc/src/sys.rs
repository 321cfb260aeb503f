//! Every OS call the channel makes, in one place. Above this module the crate deals
//! in `OwnedFd`/`BorrowedFd` only.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// One `recvmsg` into `buf`. Descriptors that arrive are appended to `fds`,
/// close-on-exec. Returns the number of bytes read (0 at end of stream).
pub fn recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
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
    let truncated = msg.cmsgs().is_err();
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for raw_fd in raw {
                    // SAFETY: the kernel has just installed `raw_fd` in this process for
                    // us (SCM_RIGHTS); nothing else refers to it, so we own it.
                    fds.push_back(unsafe { OwnedFd::from_raw_fd(raw_fd) });
                }
            }
        }
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_FDS_PER_MESSAGE} descriptors arrived with one message"),
        ));
    }
    Ok(bytes)
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
