//! Timestamps of the phases of a worker's start, for the replacement benchmark
//! (`bench/src/bin/respawn_bench.rs`, issue 13).
//!
//! Each phase is one `debug` event with the target [`TARGET`]: `phase`, the worker's `id`
//! and `t_ns`, the [`crate::clock::monotonic_ns`] reading (`CLOCK_MONOTONIC`, the same clock
//! in every process of the machine, so the master's and the workers' phases line up). Off
//! unless that target is enabled (`RUST_LOG=cluster_timing=debug`); then a phase costs one
//! clock read and one log line.

/// The tracing target of every phase event.
pub const TARGET: &str = "cluster_timing";

/// Records `phase` of worker `id` now.
pub fn phase(phase: &'static str, id: u32) {
    phase_at(phase, id, crate::sys::monotonic_ns());
}

/// Records `phase` of worker `id` at `t_ns` (a [`crate::clock::monotonic_ns`] reading taken
/// earlier, e.g. before logging was set up).
pub fn phase_at(phase: &'static str, id: u32, t_ns: u64) {
    tracing::debug!(target: "cluster_timing", phase, id, t_ns);
}

/// Whether phases are recorded (the target is enabled at debug level).
pub fn enabled() -> bool {
    tracing::enabled!(target: "cluster_timing", tracing::Level::DEBUG)
}
