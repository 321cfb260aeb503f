//! The one OS call the metrics need that no safe wrapper offers: `TCP_INFO`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

/// A listening TCP socket's accept queue: (connections waiting to be accepted, backlog).
/// For a socket in `LISTEN` state the kernel reports them as `tcpi_unacked` and
/// `tcpi_sacked` (what `ss -lnt` shows as Recv-Q and Send-Q).
pub(crate) fn accept_queue(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable, zeroed `tcp_info` of `len` bytes; the kernel writes at
    // most `len` bytes and the fd is borrowed, so it stays open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised, then (partly) filled by the kernel: every bit pattern is a
    // valid `tcp_info` (plain integers).
    let info = unsafe { info.assume_init() };
    Ok((info.tcpi_unacked, info.tcpi_sacked))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    #[test]
    fn the_accept_queue_counts_connections_not_yet_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let (queued, backlog) = super::accept_queue(listener.as_fd()).expect("tcp_info");
        assert_eq!(queued, 0);
        assert!(backlog > 0);
        let _a = std::net::TcpStream::connect(address).expect("connect");
        let _b = std::net::TcpStream::connect(address).expect("connect");
        let (queued, _) = super::accept_queue(listener.as_fd()).expect("tcp_info");
        assert_eq!(queued, 2);
    }
}
