//! The new master's side of the readiness pipe: one byte means "ready"; the end closing
//! without it (the new master exited, crashed or was killed) means "failed".

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// The environment variable that names the new master's end of the readiness socket.
pub const ENV_READY_FD: &str = "CLUSTER_UPGRADE_READY_FD";

static NOTIFIER: Mutex<Option<ReadyNotifier>> = Mutex::new(None);

/// Tells the old master that this one is ready.
pub(crate) struct ReadyNotifier(UnixStream);

impl ReadyNotifier {
    /// Writes the one byte; the old master then retires its workers and exits.
    /// Under systemd, `MAINPID=` (this process) and `READY=1` go first, so that systemd
    /// follows this master before the old one exits.
    pub(crate) fn notify(mut self) {
        crate::systemd::told_ready_as_new_master();
        match self.0.write_all(b"R") {
            Ok(()) => tracing::info!("upgrade: every worker is ready; the old master retires"),
            Err(e) => tracing::warn!("upgrade: the old master did not hear that we are ready: {e}"),
        }
    }
}

/// Reads [`ENV_READY_FD`] once and keeps the socket for [`take`].
pub(crate) fn adopt_from_env() {
    let Some(value) = std::env::var_os(ENV_READY_FD) else {
        return;
    };
    let fd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2);
    let Some(fd) = fd else {
        tracing::error!("{ENV_READY_FD}={value:?} is not a descriptor number");
        return;
    };
    match super::sys::adopt_socket(fd) {
        Ok(owned) => {
            *NOTIFIER.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(ReadyNotifier(UnixStream::from(owned)));
        }
        Err(e) => tracing::error!(fd, "{ENV_READY_FD}: not adopted: {e}"),
    }
}

/// The notifier, to the first master that asks (pm's `Master` before its groups' clusters).
pub(crate) fn take() -> Option<ReadyNotifier> {
    NOTIFIER.lock().unwrap_or_else(|p| p.into_inner()).take()
}
