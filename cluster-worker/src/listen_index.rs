//! Which of this worker's sockets for an address a `listen()` asks for (Node's per-worker
//! index): 0 while the worker holds no open socket for the address, 1 for a second
//! `listen()` while the first is open, and so on. The master gives each index of a `:0`
//! address a port of its own (shared by the workers asking with that index), and refuses a
//! second socket on a fixed address with `EADDRINUSE`, as a second bind would be.
//!
//! The sockets are handed to the user (a tokio listener), so this table cannot see them
//! dropped; it remembers each one's descriptor and what `/proc/self/fd` says it is, and a
//! descriptor that is closed, or now names another socket, frees its index.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;

/// The sockets this worker holds, by the address it asked for.
#[derive(Default)]
pub(crate) struct ListenIndexes {
    held: Mutex<HashMap<String, Vec<Held>>>,
}

struct Held {
    index: u32,
    /// `None` while the request is under way: the index is taken.
    socket: Option<(RawFd, PathBuf)>,
}

/// What `/proc/self/fd/N` names: `socket:[INODE]` for a socket.
fn identity(fd: RawFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

impl ListenIndexes {
    /// Takes the smallest index of `address` that no open socket of this worker (nor a
    /// request under way) holds.
    pub(crate) fn reserve(&self, address: &str) -> u32 {
        let mut held = self.lock();
        let sockets = held.entry(address.to_string()).or_default();
        sockets.retain(|h| match &h.socket {
            None => true,
            Some((fd, what)) => identity(*fd).as_ref() == Some(what),
        });
        let index = (0..)
            .find(|i| sockets.iter().all(|h| h.index != *i))
            .unwrap_or(u32::MAX);
        sockets.push(Held {
            index,
            socket: None,
        });
        index
    }

    /// The request for `index` of `address` got `socket`.
    pub(crate) fn granted(&self, address: &str, index: u32, socket: &impl AsRawFd) {
        let fd = socket.as_raw_fd();
        let mut held = self.lock();
        let Some(sockets) = held.get_mut(address) else {
            return;
        };
        match identity(fd) {
            Some(what) => {
                for h in sockets.iter_mut().filter(|h| h.index == index) {
                    h.socket = Some((fd, what.clone()));
                }
            }
            None => sockets.retain(|h| h.index != index),
        }
    }

    /// The request for `index` of `address` failed, or its socket is not held by a
    /// descriptor (round-robin): the index is free again.
    pub(crate) fn release(&self, address: &str, index: u32) {
        if let Some(sockets) = self.lock().get_mut(address) {
            sockets.retain(|h| h.index != index);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_held_while_its_socket_is_open() {
        let indexes = ListenIndexes::default();
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert_eq!(indexes.reserve("127.0.0.1:0"), 0);
        indexes.granted("127.0.0.1:0", 0, &first);
        let second = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert_eq!(indexes.reserve("127.0.0.1:0"), 1);
        indexes.granted("127.0.0.1:0", 1, &second);
        // Another address counts on its own.
        assert_eq!(indexes.reserve("127.0.0.1:1"), 0);
        // Closing the first frees index 0; the next request takes it.
        drop(first);
        assert_eq!(indexes.reserve("127.0.0.1:0"), 0);
        // A request that failed frees its index.
        assert_eq!(indexes.reserve("127.0.0.1:0"), 2);
        indexes.release("127.0.0.1:0", 2);
        assert_eq!(indexes.reserve("127.0.0.1:0"), 2);
        drop(second);
    }
}
