//! Sockets outside the listener tables that an upgrade hands over too: the control socket
//! and the metrics endpoint, which the new master would otherwise fail to bind while the
//! old one holds them.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use super::Address;

/// A copy of each such socket, open as long as this process lives.
static EXTRA: Mutex<Vec<(OwnedFd, Address)>> = Mutex::new(Vec::new());

/// Hands `socket`, listening on `address`, to a new master at the next upgrade.
pub(crate) fn hand_over_too(socket: &impl AsFd, address: Address) {
    match socket.as_fd().try_clone_to_owned() {
        Ok(copy) => EXTRA
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((copy, address)),
        Err(e) => tracing::warn!(?address, "an upgrade will not hand this socket over: {e}"),
    }
}

/// The descriptors to hand over; they stay open while this process lives.
pub(super) fn sockets() -> Vec<(RawFd, Address)> {
    EXTRA
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(fd, address)| (fd.as_raw_fd(), address.clone()))
        .collect()
}
