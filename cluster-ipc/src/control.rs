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
    /// Worker → master: give me the listening socket for `address` (Node's `queryServer`).
    ListenRequest {
        /// Matches the reply to the request.
        seq: u64,
        /// The address as the worker asked for it, e.g. `127.0.0.1:1337`.
        address: String,
    },
    /// Master → worker: the answer to a [`Control::ListenRequest`]. On success the
    /// socket's descriptor travels with this message and `result` holds its local address.
    ListenReply {
        /// The request's `seq`.
        seq: u64,
        /// The bound local address, or why binding failed.
        result: Result<String, String>,
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
}
