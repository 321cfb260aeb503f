//! The control protocol between a master (`cluster_core::Cluster` or `cluster_core::pm::Master`)
//! and `clusterctl`: one JSON object per line over a Unix stream socket, a [`Request`] from
//! the client, one [`Response`] from the master, as many exchanges as the client wants on
//! one connection. Versioned ([`PROTOCOL_VERSION`]); fields are only ever added within a
//! version, with defaults, so either side ignores what it does not know. The full text is
//! `docs/CONTROL.md`.
//!
//! This crate holds the types, the line framing ([`encode_line`], [`decode_line`]), where
//! a master's socket lives by default ([`default_socket_path`]), and a small blocking
//! [`Client`]. It uses no async runtime.
//!
//! Linux only, as the whole workspace (see the README).

#[cfg(not(target_os = "linux"))]
compile_error!("cluster-control supports Linux only (see the README)");

mod client;
mod framing;
mod protocol;

pub use client::{Client, ClientError};
pub use framing::{FramingError, MAX_LINE_BYTES, decode_line, encode_line};
pub use protocol::{
    Command, ControlError, ErrorKind, ExitInfo, GroupStatus, PROTOCOL_VERSION, Reply, Request,
    Response, StatusReport, WorkerStatus,
};

use std::path::PathBuf;

/// Where a master named `name` listens when its program asks for the default place:
/// `$XDG_RUNTIME_DIR/NAME.control.sock`, or `/run/NAME.control.sock` when
/// `XDG_RUNTIME_DIR` is not set. `clusterctl --name NAME` looks there.
pub fn default_socket_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run"));
    dir.join(format!("{name}.control.sock"))
}
