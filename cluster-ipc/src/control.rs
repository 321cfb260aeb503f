//! The runtime's own messages between master and worker.
//!
//! They travel in control frames, which user code cannot produce: `Sender::send` only
//! writes user frames, so a worker's application can never forge a `Disconnecting` or a
//! `ListenRequest`.

use serde::{Deserialize, Serialize};

/// How a worker that asked to listen gets its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grant {
    /// The master's listening socket comes with the reply; every worker accepts on it.
    Shared,
    /// No socket comes with the reply: the worker binds its own `SO_REUSEPORT` socket on the
    /// address (the master only reserves the port).
    ReusePort,
    /// The master accepts and hands each connection over ([`Control::Connection`]).
    RoundRobin,
}

/// Why the master could not give a worker the socket it asked for: the reason names the
/// address; `errno` is the OS error number when the cause was one (a bind's `EADDRINUSE`,
/// `EACCES`...) or the one that says what the master refused (`EACCES` for an address the
/// settings do not allow, `EDQUOT` past the listen quota), so the worker's `io::Error` keeps
/// its kind end to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenFailure {
    /// The OS error number, if any.
    pub errno: Option<i32>,
    /// What failed, naming the address.
    pub reason: String,
}

impl ListenFailure {
    /// A failure of the OS call behind `error`, keeping its error number: the raw one, or
    /// for an error that wraps one with more words (`listen on ADDRESS: …`) the number of
    /// its kind.
    pub fn from_io(error: &std::io::Error) -> Self {
        ListenFailure {
            errno: error.raw_os_error().or_else(|| errno_of(error.kind())),
            reason: error.to_string(),
        }
    }

    /// A failure with the meaning of the OS error number `errno`.
    pub fn with_errno(errno: i32, reason: impl Into<String>) -> Self {
        ListenFailure {
            errno: Some(errno),
            reason: reason.into(),
        }
    }

    /// The `io::Error` a worker's `listen()` returns: the kind of `errno` (`Other` without
    /// one), the reason as its message.
    pub fn into_io_error(self) -> std::io::Error {
        let kind = self.errno.map_or(std::io::ErrorKind::Other, |errno| {
            std::io::Error::from_raw_os_error(errno).kind()
        });
        std::io::Error::new(kind, self.reason)
    }
}

/// The error number of the kinds a bind or listen can fail with.
fn errno_of(kind: std::io::ErrorKind) -> Option<i32> {
    use nix::libc;
    use std::io::ErrorKind;
    Some(match kind {
        ErrorKind::AddrInUse => libc::EADDRINUSE,
        ErrorKind::AlreadyExists => libc::EEXIST,
        ErrorKind::ResourceBusy => libc::EBUSY,
        ErrorKind::StorageFull => libc::ENOSPC,
        ErrorKind::IsADirectory => libc::EISDIR,
        ErrorKind::InvalidFilename => libc::ENAMETOOLONG,
        ErrorKind::AddrNotAvailable => libc::EADDRNOTAVAIL,
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::InvalidInput => libc::EINVAL,
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::QuotaExceeded => libc::EDQUOT,
        ErrorKind::Unsupported => libc::EOPNOTSUPP,
        ErrorKind::OutOfMemory => libc::ENOMEM,
        ErrorKind::ReadOnlyFilesystem => libc::EROFS,
        ErrorKind::NotADirectory => libc::ENOTDIR,
        ErrorKind::NotConnected => libc::ENOTCONN,
        _ => return None,
    })
}

impl From<String> for ListenFailure {
    fn from(reason: String) -> Self {
        ListenFailure {
            errno: None,
            reason,
        }
    }
}

impl std::fmt::Display for ListenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Who a forwarded message is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recipient {
    /// Every live worker of the group, the sender excepted.
    Group(String),
    /// The worker with this pid.
    Pid(u32),
}

/// A message of the cluster runtime itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Control {
    /// Worker → master: the worker's runtime is up (Node's `online`).
    Online,
    /// Worker → master: give me the listening socket for `address` (Node's `queryServer`):
    /// `host:port` (TCP), `unix:PATH` or `udp:host:port`.
    ListenRequest {
        /// Matches the reply to the request.
        seq: u64,
        /// The address as the worker asked for it, e.g. `127.0.0.1:1337`.
        address: String,
        /// Which of this worker's live sockets for `address` this is: 0 for the first,
        /// 1 for a second `listen()` on the same address while the first is open, ...
        /// (Node's per-worker index). Port 0 gets one socket per index, shared by the
        /// workers asking with that index; a fixed address asked with index 1 or more is
        /// `EADDRINUSE`, as a second bind of it in one process would be.
        #[serde(default)]
        index: u32,
        /// Backlog and `IPV6_V6ONLY` for the socket, if this request binds it.
        #[serde(default)]
        options: crate::ListenOptions,
    },
    /// Master → worker: the answer to a [`Control::ListenRequest`]. On success the
    /// socket's descriptor travels with this message and `result` holds its local address.
    ListenReply {
        /// The request's `seq`.
        seq: u64,
        /// The bound local address, or why the worker gets no socket.
        result: Result<String, ListenFailure>,
        /// How the worker gets its connections.
        grant: Grant,
    },
    /// Worker → master: a server now accepts on `address` (Node's `listening`).
    Listening {
        /// The socket's local address.
        address: String,
    },
    /// Master → worker: disconnect gracefully (close servers, finish, exit).
    Disconnect,
    /// Worker → master: this worker is disconnecting on purpose; its exit is expected
    /// (Node's `exitedAfterDisconnect`).
    Disconnecting,
    /// Worker → master: this worker has failed and is handing over: it disconnects on
    /// purpose, and keeps accepting on each of its addresses until the master sends
    /// [`Control::Relieved`] for it.
    HandOver,
    /// Worker → master: the worker is ready to serve (pm's `ready`).
    Ready,
    /// Worker → master: deliver this user message (already encoded) to other workers
    /// (pm's `broadcast` between workers).
    Forward {
        /// Who gets it.
        to: Recipient,
        /// The encoded user message.
        payload: Vec<u8>,
    },
    /// Master → worker: a user message another worker sent through the master.
    Deliver {
        /// The sender's group, if it was started by a supervisor.
        from_group: Option<String>,
        /// The sender's pid.
        from_pid: u32,
        /// The encoded user message.
        payload: Vec<u8>,
    },
    /// Master → worker: a connection the master accepted on `address` (round-robin), its
    /// descriptor attached. The master keeps its copy until the worker answers with
    /// [`Control::ConnectionTaken`] or [`Control::ConnectionRefused`].
    ///
    /// The master takes a hand-over back when it is not answered within its dispatch
    /// timeout; so that a worker never serves a connection the master has given to another,
    /// the worker takes it only while [`crate::clock::monotonic_ns`] is before `take_by_ns`
    /// (half the timeout after sending) and refuses it otherwise.
    Connection {
        /// The listening address it came in on.
        address: String,
        /// Identifies the hand-over.
        seq: u64,
        /// `CLOCK_MONOTONIC` nanoseconds after which the worker must refuse it
        /// (`u64::MAX`: no deadline).
        take_by_ns: u64,
    },
    /// Worker → master: the connection is the worker's now.
    ConnectionTaken {
        /// The listening address.
        address: String,
        /// The hand-over.
        seq: u64,
    },
    /// Worker → master: the worker cannot take it (its server is closing, or did not ask
    /// for a connection before `take_by_ns`); the master hands it to another worker.
    ConnectionRefused {
        /// The listening address.
        address: String,
        /// The hand-over.
        seq: u64,
    },
    /// Worker → master: the hand-over's descriptor found no room in this worker's
    /// descriptor table (`MSG_CTRUNC`: its `RLIMIT_NOFILE` is reached). The master hands the
    /// connection to another worker, and closes it when every worker it tried had no room.
    ConnectionNoRoom {
        /// The listening address.
        address: String,
        /// The hand-over.
        seq: u64,
    },
    /// Master → worker: another worker, started after the hand-over, now accepts on
    /// `address`; the handing-over worker may stop accepting there.
    Relieved {
        /// The listening address, as reported in [`Control::Listening`].
        address: String,
    },
    /// Worker → master: the worker's event loop is alive. Sent by a task on the worker's
    /// runtime every heartbeat interval (from the handoff), so a blocked runtime stops
    /// sending it; the master's watchdog replaces a worker that stays silent too long. It
    /// carries the worker's load as of the beat (for status and metrics).
    Heartbeat {
        /// Requests served so far (connections accepted, if its server counts no requests).
        served: u64,
        /// Connections its servers hold now (servers that report them: `graceful::serve`).
        open_connections: u64,
    },
    /// Worker → master: the worker has served the number of requests (or connections) the
    /// master set as its limit (`max_requests` with its jitter) and asks to be recycled.
    RequestLimit {
        /// Requests (or connections) served so far.
        served: u64,
    },
    /// Worker → master: [`Control::HandOver`], because of a panic: the master records the
    /// message and location as the worker's exit reason. A variant of its own (last, so
    /// the binary encoding of the others is unchanged) keeps the wire backward compatible.
    HandOverPanic {
        /// The panic message.
        message: String,
        /// Where it panicked, `file:line:column`.
        location: Option<String>,
    },
    /// Master → worker: several connections the master accepted on `address` at once
    /// (round-robin), one descriptor each, attached in the order of `seqs` (at most
    /// [`crate::MAX_FDS_PER_MESSAGE`]). Each is a [`Control::Connection`] in every other
    /// respect: answered on its own `seq` (or together, [`Control::ConnectionsTaken`]),
    /// taken only before `take_by_ns`, kept by the master until answered. If the worker's
    /// descriptor table had room for only some of them, the kernel delivered the first ones:
    /// the descriptors received belong to the first `seqs`, and each of the others is
    /// answered [`Control::ConnectionNoRoom`].
    ///
    /// One frame and one `sendmsg` instead of one per connection, and one read in the
    /// worker. A variant of its own, after the others, so their binary encoding is
    /// unchanged.
    Connections {
        /// The listening address they came in on.
        address: String,
        /// The hand-overs, in the order of the descriptors.
        seqs: Vec<u64>,
        /// `CLOCK_MONOTONIC` nanoseconds after which the worker must refuse them
        /// (`u64::MAX`: no deadline).
        take_by_ns: u64,
    },
    /// Worker → master: the connections of `seqs` are the worker's now (one
    /// [`Control::ConnectionTaken`] for each, in one frame). At least one and at most
    /// [`crate::MAX_FDS_PER_MESSAGE`] seqs: the master ends a worker that sends another count.
    ConnectionsTaken {
        /// The listening address.
        address: String,
        /// The hand-overs.
        seqs: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_listen_failure_keeps_the_kind_of_a_wrapped_os_error() {
        for kind in [
            io::ErrorKind::AddrInUse,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::AddrNotAvailable,
            io::ErrorKind::QuotaExceeded,
            io::ErrorKind::AlreadyExists,
        ] {
            let wrapped = io::Error::new(kind, "listen on 127.0.0.1:80: it failed");
            let failure = ListenFailure::from_io(&wrapped);
            let back = failure.clone().into_io_error();
            assert_eq!(back.kind(), kind, "{failure:?}");
            assert_eq!(back.to_string(), "listen on 127.0.0.1:80: it failed");
        }
        let raw = io::Error::from_raw_os_error(nix::libc::EADDRINUSE);
        assert_eq!(
            ListenFailure::from_io(&raw).errno,
            Some(nix::libc::EADDRINUSE)
        );
        let plain = ListenFailure::from(String::from("no errno"));
        assert_eq!(plain.into_io_error().kind(), io::ErrorKind::Other);
    }
}
