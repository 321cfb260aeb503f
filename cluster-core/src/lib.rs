//! The cluster master: Node's `cluster` module for Rust processes.
//!
//! [`setup_master`] checks [`Settings`] and makes a [`Cluster`]; [`Cluster::fork`] starts
//! worker processes (fork+exec from a dedicated thread, each dying with the master), each
//! with its own channel; the master answers their `listen()` requests by binding every
//! address once and handing the same socket to all of them, keeping its own copy open so
//! no queued connection is lost when a worker dies. Lifecycle [`Event`]s (fork, online,
//! listening, leaving, disconnect, exit, message, setup) come as callbacks run by
//! [`Cluster::run`], which also handles SIGTERM (graceful stop) and SIGINT/SIGQUIT (fast
//! stop), and as an async [`EventStream`]; each worker's own events also come as
//! [`Worker::events`] and [`Worker::on`] callbacks (Node's `worker.on(...)`), without `run`.
//! `Leaving` is this crate's early signal (fork the replacement here); `Disconnect` is
//! Node's (the channel closed after the worker drained).
//!
//! Workers that fail are replaced by the master itself ([`Settings::respawn`], on by
//! default): a worker that hands over after a panic (`graceful`), crashes, or is killed from
//! outside gets a replacement from [`Cluster::run`], at once, or after a backoff when
//! replacements keep dying young (pm's crash-loop rules, [`pm::RestartPolicy`]); workers that
//! die before they are ready stop the master after [`Settings::max_boot_failures`] in a row.
//! Workers the master's code ends on purpose (`Worker::disconnect`, `Worker::kill`), and
//! every worker once the cluster stops, are not replaced. So the dispatch writes no
//! replacement callback; the `on_*` callbacks are for its own logic. (A callback that forks
//! while a worker's `leaving`, `disconnect` or `exit` callbacks run replaces that worker instead, never
//! twice; [`Respawn::Manual`] leaves all replacing to the dispatch, as in Node.) The master
//! also decides when a worker must go (a hung event loop, see
//! [`Settings::heartbeat_timeout`]; a recycling limit, see [`Settings::max_requests`]): it
//! emits [`Event::Replacing`] and `Leaving`, and replaces it the same way.
//! The worker side is `cluster-worker`; the wire is `cluster-ipc`.
//!
//! # Example
//!
//! The master and its workers run the same binary: [`run`] starts the master or the
//! worker function, each on its runtime (a worker never runs the master's code, so it
//! cannot start workers of its own; [`setup_master`] refuses to run in a worker anyway).
//! [`Cluster::listen`] binds the port before the first fork, so a port in use is an error
//! at start-up, not a worker dying at boot.
//!
//! ```no_run
//! use cluster_core::{Settings, setup_master};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     cluster_core::run(master, worker)
//! }
//!
//! async fn master() -> Result<(), Box<dyn std::error::Error>> {
//!     let cluster = setup_master(Settings::new())?; // workers run this same binary
//!     cluster.listen(address()?)?;
//!     cluster.on_fork(|_, worker| eprintln!("worker {} forked", worker.pid()));
//!     cluster.on_exit(|_, worker, exit| eprintln!("worker {} exited with {exit}", worker.pid()));
//!     for _ in 0..2 {
//!         cluster.fork(&[])?;
//!     }
//!     cluster.run().await?; // replaces the workers that fail, until SIGTERM or SIGINT
//!     Ok(())
//! }
//!
//! /// A worker: accepts on the socket it shares with the others until it must disconnect.
//! async fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let listener = cluster_worker::listen(address()?).await?;
//!     let worker = cluster_worker::Worker::current().ok_or("not a worker")?;
//!     let _serving = worker.register_server();
//!     loop {
//!         tokio::select! {
//!             accepted = listener.accept() => drop(accepted?), // serve the connection here
//!             _ = worker.closing() => return Ok(()),
//!         }
//!     }
//! }
//!
//! fn address() -> Result<std::net::SocketAddr, std::net::AddrParseError> {
//!     let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
//!     format!("127.0.0.1:{port}").parse()
//! }
//! ```
//!
//! Log output goes through `tracing`: install a subscriber (`tracing_subscriber::fmt::init()`)
//! in the master and in workers, or the master's warnings and errors are not seen.
//!
//! # Under systemd
//!
//! Sockets passed by socket activation (`LISTEN_FDS`) are adopted for the addresses they are
//! bound to, and with `NOTIFY_SOCKET` the master sends `READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=` and `WATCHDOG=1` (`docs/ARCHITECTURE.md`, "Under systemd"); after
//! a hot upgrade the new master sends `MAINPID=` and `READY=1`.
//!
//! # In a container
//!
//! As PID 1 the master also reaps orphaned grandchildren, never its own workers (whose exit
//! statuses tokio collects), and SIGTERM still drains: no init is needed
//! (`docs/CONTAINERS.md`). As PID 1 any other child of the master process counts as an
//! orphan, and the hot upgrade is refused.
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
mod disconnect;
mod entry;
mod error;
mod events;
mod exit_reason;
pub mod foreign;
mod handed_sockets;
mod handover;
mod init;
mod listen_policy;
mod listen_quota;
mod listeners;
mod load_slots;
mod metrics;
mod monitor;
mod nofile;
mod output;
pub mod pm;
mod recycle;
mod refuse;
mod replace;
mod respawn;
mod rolling;
mod round_robin;
mod settings;
mod setup;
mod signal;
mod signals;
mod spawn;
mod sticky;
mod supervise;
mod systemd;
pub mod upgrade;
mod watchdog;
mod worker;
mod worker_events;

pub use boot_failures::{DEFAULT_MAX_BOOT_FAILURES, MAX_BOOT_BACKOFF};
pub use cluster::{Cluster, Phase, StopMode, setup_master};
pub use cluster_ipc::{Message, SendError, Serialization};
pub use entry::run;
pub use error::{ForkError, RunError, SetupError};
pub use events::{Event, EventStream};
pub use exit_reason::ExitReason;
pub use output::{Stdio, dropped_output_lines, flush_output};
pub use replace::ReplaceReason;
pub use respawn::Respawn;
pub use rolling::ReloadError;
pub use settings::{DEFAULT_DISPATCH_TIMEOUT, Scheduling, Settings, SettingsError};
pub use setup::SettingsUpdate;
pub use signal::Signal;
pub use signals::SignalRequest;
pub use upgrade::UpgradeError;
pub use worker::{Exit, Worker, WorkerLoad, WorkerState};
pub use worker_events::{EARLY_MESSAGE_BYTES, EARLY_MESSAGES, WorkerEvent, WorkerEvents};
