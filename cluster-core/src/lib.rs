//! The cluster master: Node's `cluster` module for Rust processes.
//!
//! [`setup_master`] checks [`Settings`] and makes a [`Cluster`]; [`Cluster::fork`] starts
//! worker processes (fork+exec from a dedicated thread, each dying with the master), each
//! with its own channel; the master answers their `listen()` requests by binding every
//! address once and handing the same socket to all of them, keeping its own copy open so
//! no queued connection is lost when a worker dies. Lifecycle [`Event`]s (fork, online,
//! listening, disconnect, exit, message, setup) come as callbacks run by [`Cluster::run`],
//! which also handles SIGTERM (graceful stop) and SIGINT/SIGQUIT (fast stop), and as an
//! async [`EventStream`].
//!
//! This crate does not decide when to replace a crashed worker: the dispatch code does, in its
//! callbacks, as in Node. It does decide when a worker must go (a hung event loop, see
//! [`Settings::heartbeat_timeout`]; a recycling limit, see [`Settings::max_requests`]): it then
//! emits [`Event::Replacing`] and `Disconnect`, so the same dispatch forks the replacement.
//! The worker side is `cluster-worker`; the wire is `cluster-ipc`.
//!
//! # Example
//!
//! The master and its workers run the same binary, so `main` branches on
//! `cluster_worker::is_worker()` first. Without the branch each worker would start workers
//! of its own; [`setup_master`] refuses to run in a worker (an error naming what happened)
//! so a missing branch cannot turn into a fork bomb.
//!
//! ```no_run
//! use cluster_core::{Settings, setup_master};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     if cluster_worker::is_worker() {
//!         return worker().await;
//!     }
//!     let cluster = setup_master(Settings::new())?; // workers run this same binary
//!     cluster.on_fork(|_, worker| eprintln!("worker {} forked", worker.pid()));
//!     cluster.on_exit(|cluster, worker, exit| {
//!         eprintln!("worker {} exited with {exit}", worker.pid());
//!         if !worker.exited_after_disconnect() {
//!             let _ = cluster.fork(&[]);
//!         }
//!     });
//!     for _ in 0..2 {
//!         cluster.fork(&[])?;
//!     }
//!     cluster.run().await?;
//!     Ok(())
//! }
//!
//! /// A worker: accepts on the socket it shares with the others until it must disconnect.
//! async fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
//!     let listener = cluster_worker::listen(format!("127.0.0.1:{port}").parse()?).await?;
//!     let worker = cluster_worker::Worker::current().ok_or("not a worker")?;
//!     let _serving = worker.register_server();
//!     loop {
//!         tokio::select! {
//!             accepted = listener.accept() => drop(accepted?), // serve the connection here
//!             _ = worker.closing() => return Ok(()),
//!         }
//!     }
//! }
//! ```
//!
//! # Under systemd
//!
//! Sockets passed by socket activation (`LISTEN_FDS`) are adopted for the addresses they are
//! bound to, and with `NOTIFY_SOCKET` the master sends `READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=` and `WATCHDOG=1` (`docs/ARCHITECTURE.md`, "Under systemd").
//!
//! # Caveats
//!
//! Workers get `PR_SET_PDEATHSIG(SIGTERM)`: if the master dies, even by SIGKILL, each worker
//! is told to drain and exit. Do not install a `waitpid(-1)` SIGCHLD handler in the master:
//! tokio reaps the workers.
//!
//! Linux only: it relies on PR_SET_PDEATHSIG, /proc, TCP_INFO, SO_PEERCRED.

#[cfg(not(target_os = "linux"))]
compile_error!("cluster-core supports Linux only (see the README)");

mod activation;
mod boot_failures;
mod callbacks;
mod cluster;
pub mod control;
mod error;
mod events;
mod exit_reason;
pub mod foreign;
mod handover;
mod listen_policy;
mod listen_quota;
mod listeners;
mod metrics;
mod monitor;
mod nofile;
mod output;
pub mod pm;
mod recycle;
mod refuse;
mod replace;
mod rolling;
mod round_robin;
mod settings;
mod signals;
mod spawn;
mod supervise;
mod systemd;
pub mod upgrade;
mod watchdog;
mod worker;

pub use boot_failures::{DEFAULT_MAX_BOOT_FAILURES, MAX_BOOT_BACKOFF};
pub use cluster::{Cluster, Phase, StopMode, setup_master};
pub use cluster_ipc::{Message, SendError, Serialization};
pub use error::{ForkError, RunError};
pub use events::{Event, EventStream};
pub use exit_reason::ExitReason;
pub use nix::sys::signal::Signal;
pub use output::{Stdio, dropped_output_lines, flush_output};
pub use replace::ReplaceReason;
pub use rolling::ReloadError;
pub use settings::{DEFAULT_DISPATCH_TIMEOUT, Scheduling, Settings, SettingsError};
pub use signals::SignalRequest;
pub use upgrade::UpgradeError;
pub use worker::{Exit, Worker, WorkerLoad, WorkerState};
