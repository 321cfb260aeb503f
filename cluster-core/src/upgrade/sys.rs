//! The OS calls of the hot upgrade: adopting an inherited descriptor, and what runs in the
//! new master between fork and exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// Takes ownership of the inherited descriptor `fd`, which must be an open socket, and makes
/// it close-on-exec again.
pub(super) fn adopt_socket(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fstat only writes into the zeroed struct it is given; an fd that is not open
    // is an EBADF error, nothing worse.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `stat` is a valid, writable `struct stat`.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other("not a socket"));
    }
    // SAFETY: fcntl on an open descriptor with a plain integer flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the old master handed this descriptor to this process (named in the
    // environment), it is open (fstat succeeded) and nothing else in this process owns it:
    // the environment is read once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets what runs in the new master between fork and exec: the descriptors in `keep` stay
/// open across exec at their numbers, and it starts a session of its own, so a signal to
/// the old master's process group (a terminal's Ctrl-C) does not reach both. No
/// `PR_SET_PDEATHSIG`: the new master must outlive the old one.
pub(super) fn prepare_new_master(command: &mut tokio::process::Command, keep: Vec<RawFd>) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, setsid); it reads `keep` and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
