//! The worker side of a cluster: Node's `cluster.worker`, in a worker process.
//!
//! [`is_worker`] says whether a master started this process; [`Worker::current`] is this
//! process as a worker (id, [`Worker::send`], [`Worker::recv`], [`Worker::disconnect`],
//! [`Worker::ready`], messages to other workers); [`listen`] returns a
//! `tokio::net::TcpListener` that is the master's shared socket inside a cluster and a socket
//! of its own outside one, so the same binary runs standalone; [`incoming`] returns an
//! [`Acceptor`] that works in every scheduling mode and spreads connections evenly: new
//! ones in turn, and live ones by count when the server counts them
//! ([`Worker::connection_opened`], [`Worker::count_connections`]; a worker holding clearly
//! more than the others lets them accept first).
//!
//! Servers take part in a graceful disconnect through [`Worker::register_server`] and
//! [`Worker::closing`]: when the worker disconnects (by its own call, the master's request,
//! SIGTERM, or the master's death), registered servers stop accepting and drop their guard
//! once their connections are done. HTTP serving with deadlines and panic handling is the
//! `graceful` crate; this crate only signals and counts.
//!
//! # Example
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = cluster_worker::listen("127.0.0.1:1337".parse().unwrap()).await?;
//!     let worker = cluster_worker::Worker::current();
//!     let _guard = worker.as_ref().map(|w| w.register_server());
//!     loop {
//!         tokio::select! {
//!             accepted = listener.accept() => { let (_stream, _) = accepted?; /* serve */ }
//!             _ = async { match &worker { Some(w) => w.closing().await, None => std::future::pending().await } } => break,
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Caveats
//!
//! The first use of the API reads the `CLUSTER_*` variables once (they stay in the
//! environment, inert in the worker's children: a worker's parent must be the master they
//! name) and installs a SIGTERM
//! handler that disconnects gracefully; a worker still running `stop_timeout` after SIGTERM
//! or after its master died exits with code 1. It also starts the heartbeat task (when the
//! master's `heartbeat_timeout` is on): a runtime blocked for longer than that timeout (a
//! `std::thread::sleep` or endless loop in a handler on a current-thread runtime) gets the
//! worker replaced and aborted, so put blocking work in `spawn_blocking`.
//!
//! Linux only, as the master it works with (PR_SET_PDEATHSIG, Linux SO_REUSEPORT).

#[cfg(not(target_os = "linux"))]
compile_error!("cluster-worker supports Linux only (see the README)");

mod acceptor;
mod activated;
mod connections;
mod env;
mod error;
mod group;
mod heartbeat;
mod listen;
mod listen_index;
mod runtime;
mod served;
mod unix_mode;
mod worker;

pub use acceptor::Acceptor;
pub use cluster_ipc::ListenOptions;
pub use cluster_ipc::{Message, SendError};
pub use error::WorkerError;
pub use group::{group, group_incoming, group_listeners, group_unix_listeners};
pub use listen::{
    bind_udp, bind_udp_reuse_port, bind_udp_with, incoming, incoming_with, listen, listen_unix,
    listen_with,
};
pub use runtime::runtime;
pub use unix_mode::{UnixOptions, listen_unix_with};
pub use worker::{ConnectionGuard, ServerGuard, Worker, is_worker};
