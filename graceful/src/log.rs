//! graceful's warnings and errors reach the user with or without a `tracing` subscriber.
//!
//! Each goes through `tracing` as usual. While no subscriber is set (no global default and
//! no scoped one, `tracing::dispatcher::has_been_set`), it is also written as one line to
//! stderr, `graceful: WARN …`, so a newcomer who installed none still sees why a worker
//! went away. The check is made at each event, not once: a subscriber installed later
//! (after [`crate::install`]) takes over from the next event on, and nothing is ever
//! installed in the user's place, so their own `tracing_subscriber::fmt().init()` never
//! fails because of graceful. Writes to stderr ignore errors (a broken stderr pipe is
//! EPIPE, and must not end the worker).

use std::fmt;
use std::io::Write;

/// Writes `message` to stderr when no `tracing` subscriber is set.
pub(crate) fn to_stderr_without_subscriber(level: &str, message: fmt::Arguments<'_>) {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let _ = writeln!(std::io::stderr().lock(), "graceful: {level} {message}");
}

/// Said once by [`crate::install`] when no subscriber is set: what goes where.
pub(crate) fn hint_without_subscriber() {
    to_stderr_without_subscriber(
        "NOTE",
        format_args!(
            "no `tracing` subscriber is set: graceful writes its warnings and errors here, \
             the other cluster crates' go nowhere; install one before graceful::install \
             (e.g. tracing_subscriber::fmt().init())"
        ),
    );
}

/// `tracing::warn!`, and to stderr without a subscriber. Plain format arguments only.
macro_rules! warning {
    ($($arg:tt)+) => {{
        tracing::warn!($($arg)+);
        $crate::log::to_stderr_without_subscriber("WARN", format_args!($($arg)+));
    }};
}

/// `tracing::error!`, and to stderr without a subscriber. Plain format arguments only.
macro_rules! failure {
    ($($arg:tt)+) => {{
        tracing::error!($($arg)+);
        $crate::log::to_stderr_without_subscriber("ERROR", format_args!($($arg)+));
    }};
}

pub(crate) use {failure, warning};
