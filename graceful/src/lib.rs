//! Graceful HTTP serving for cluster workers: stop accepting when the worker disconnects,
//! let in-flight connections finish, and give up on them at a drain deadline.
//!
//! This is the server half of a graceful exit. Turning a panic into a 500 for the request
//! that caused it, handing over to a replacement worker and the kill timer are built on top
//! of it (see the project's issues); the cluster signals themselves (`closing`, `drained`,
//! `disconnect`) belong to `cluster-worker`.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response, body::Incoming};
//! use std::time::Duration;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let listener = cluster_worker::listen("127.0.0.1:1337".parse().unwrap()).await?;
//! let handler = |_req: Request<Incoming>| async {
//!     Response::new(Full::new(Bytes::from_static(b"hello\n")))
//! };
//! graceful::serve_http(listener, handler, Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod serve;

pub use serve::{DrainOutcome, serve_http};
