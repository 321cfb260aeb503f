//! The wire between a cluster master and its workers.
//!
//! One channel per worker over a Unix stream socketpair that the master creates and the
//! worker inherits at a fixed descriptor ([`handoff`]). Frames keep message boundaries;
//! payloads are JSON or binary ([`Serialization`]); descriptors travel with a message by
//! `SCM_RIGHTS` and arrive close-on-exec. Messages of the runtime itself ([`Control`]) travel
//! in frames user code cannot write, so they cannot be forged. A message over the size limit
//! is refused by the sender ([`SendError::TooLarge`]); a malformed or oversized one ends the
//! receiving side with [`RecvError`]; end-of-stream means the other side is gone.
//!
//! This crate does not start processes, decide what a message means, or retry: that is
//! `cluster-core` (master) and `cluster-worker` (worker). It also owns [`bind_tcp`], the one
//! way a listening socket to be shared is made.
//!
//! # Example
//!
//! ```no_run
//! use cluster_ipc::{channel, socketpair, ChannelOptions, Incoming, Serialization};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ChannelOptions { serialization: Serialization::Binary, ..Default::default() };
//! let (master_end, worker_end) = socketpair()?;
//! let (to_worker, _) = channel(master_end, options)?;
//! let (_, mut from_master) = channel(worker_end, options)?;
//! to_worker.send(&("job", 42u32)).await?;
//! if let Some(Incoming::User(msg)) = from_master.recv().await? {
//!     let (name, n): (String, u32) = msg.decode()?;
//!     assert_eq!((name.as_str(), n), ("job", 42));
//! }
//! # Ok(()) }
//! ```
//!
//! # Caveats
//!
//! Cancelling a [`Sender::send`] after part of its frame went out would leave the stream
//! out of step; the channel is shut down instead, and later sends fail with
//! [`SendError::Closed`].
//!
//! Linux only: it relies on Linux socket behaviour (SCM_RIGHTS with MSG_CTRUNC, SO_PEERCRED).

#[cfg(not(target_os = "linux"))]
compile_error!("cluster-ipc supports Linux only (see the README)");

mod channel;
mod codec;
mod control;
mod error;
mod fd_batches;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
mod listener;
pub mod load_table;
mod message;
pub mod pressure;
mod sys;
pub mod timing;

pub use channel::{ChannelOptions, Incoming, Receiver, Sender, channel, socketpair};
pub use codec::{CodecError, Serialization};
pub use control::{Control, Grant, ListenFailure, Recipient};
pub use error::{RecvError, SendError};
pub use listener::{
    DEFAULT_BACKLOG, ListenOptions, UDP_PREFIX, UNIX_PREFIX, bind_tcp, bind_tcp_reuse_port,
    bind_tcp_with, bind_udp, bind_udp_reuse_port, bind_udp_with, bind_unix, reserve_tcp,
    udp_address, unix_path,
};
pub use load_table::LoadTable;
pub use message::{Message, Origin};
pub use sys::MAX_FDS_PER_MESSAGE;

/// Low-level descriptor helpers the worker runtime needs for its inherited channel end.
pub mod fd {
    pub use crate::sys::{is_socket, nofile_limit, set_cloexec, set_nofile_soft_limit};
}

/// The clock a deadline on the wire is read against (see [`Control::Connection`]).
pub mod clock {
    pub use crate::sys::monotonic_ns;
}
