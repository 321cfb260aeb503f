//! Panic to graceful exit, for cluster workers and standalone servers.
//!
//! A server that hits an error it did not catch should (1) answer the request that caused
//! it with a 500, (2) leave every other request unaffected, (3) keep the service running.
//! Node could only restart the process, and its request-scoped capture (`domain`) could not
//! reach every case. This crate does all three:
//!
//! - [`CatchPanic`] / [`CatchPanicLayer`] (hyper or tower/axum) and [`spawn`]: a panic in a
//!   handler, or in a task the handler spawned with [`spawn`], answers 500 to that request.
//! - [`install`]: the first panic anywhere in the process (handler, task, plain thread)
//!   calls `on_error`, tells the master at once so it forks the replacement, keeps
//!   accepting until the replacement accepts on the same address (or `handover_timeout`),
//!   stops accepting, answers every further response with `Connection: close`, closes
//!   keep-alive connections once idle, runs the `last_words` hook, disconnects the worker,
//!   and exits with 0 as soon as every connection is done, or with 1 at `kill_timeout`.
//!   Later panics are counted and reported only.
//! - [`serve`]: the HTTP/1 accept loop that takes part in all this, and in the worker's
//!   ordinary disconnect (master's request, SIGTERM, master gone). It takes any tower
//!   service, so an axum `Router` as it is; hyper code uses [`service_fn`] or
//!   [`HyperService`]. It returns `io::Result<()>`: a listener that cannot accept any more
//!   is an error for the caller, not a silent return.
//!
//! This crate does not start or supervise processes (`cluster-core`) nor own the channel
//! (`cluster-worker`).
//!
//! # Example: an axum app in a cluster worker
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hello\n" }));
//! graceful::install(graceful::Options::new()).map_err(std::io::Error::other)?;
//! let listener = cluster_worker::incoming("127.0.0.1:3000".parse().unwrap()).await?;
//! graceful::serve(listener, app).await
//! # }
//! ```
//!
//! # Example: the seed's `worker.js`, in hyper
//!
//! ```no_run
//! use std::time::Duration;
//! # use bytes::Bytes; use http_body_util::Full; use hyper::{Request, Response, body::Incoming};
//! # async fn app(_: Request<Incoming>) -> Response<Full<Bytes>> { Response::new(Full::new(Bytes::new())) }
//!
//! # async fn demo() -> std::io::Result<()> {
//! graceful::install(
//!     graceful::Options::new()
//!         .kill_timeout(Duration::from_secs(10))
//!         .on_error(|report| eprintln!("[uncaughtException] throw error {} times", report.count)),
//! )
//! .expect("install once");
//! let listener = cluster_worker::listen("127.0.0.1:1337".parse().unwrap()).await?;
//! graceful::serve(listener, graceful::service_fn(|req| async move {
//!     Ok::<_, std::convert::Infallible>(app(req).await)
//! }))
//! .await
//! # }
//! ```
//!
//! # Logs
//!
//! graceful and the cluster crates log through `tracing`; install a subscriber (e.g.
//! `tracing_subscriber::fmt().init()`) before [`install`]. Without one, nothing is set up
//! behind your back (your own subscriber, installed later, still installs): [`install`]
//! writes one line to stderr saying none is set, and graceful's own warnings and errors
//! (a panic's report when there is no `on_error`, a hand-over that found no replacement, a
//! kill timer that could not be armed) are written to stderr as `graceful: WARN …` lines
//! for as long as no subscriber is set. Errors that end serving are returned by [`serve`].
//!
//! # Caveats
//!
//! With `panic = "abort"` only the hook's synchronous part runs (on_error, the hand-over
//! message to the master); the process then dies and its accepted connections with it.
//!
//! The exit after a panic waits for the servers of [`serve`] only: a server loop of its own
//! (e.g. `axum::serve`) is not counted, and its connections end with the process as soon
//! as the worker has disconnected. Serve with [`serve`] when you [`install`].
//!
//! Linux only, as cluster-worker which it builds on.

#![forbid(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!("graceful supports Linux only (see the README)");

mod connections;
mod install;
mod log;
mod report;
mod scope;
mod server;
mod service;

pub use connections::{Connections, IntoConnections, UnixConnections};
pub use install::{InstallError, Options, Step, install};
pub use report::PanicReport;
pub use scope::{CatchPanic, CatchPanicLayer, spawn};
pub use server::serve;
pub use service::{HyperService, ServiceFn, service_fn};
