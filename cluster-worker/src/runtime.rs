//! The runtime a worker runs on.

use std::io;

/// A tokio runtime for this process: one thread when it is a cluster worker (or one of the
/// programs `cluster run` starts, which it tells with `CLUSTER_INSTANCE`), all cores when
/// it runs alone.
///
/// In a cluster the processes are the parallelism (one worker per core, as with Node): a
/// worker on one thread spends nothing on work stealing or on waking its other threads, and
/// measured faster than a multi-thread worker under the same load (see
/// `docs/BENCHMARKS.md`). Outside a cluster the same binary is the whole server and gets a
/// multi-thread runtime. Blocking work still has `spawn_blocking` either way.
///
/// ```no_run
/// fn main() -> std::io::Result<()> {
///     cluster_worker::runtime()?.block_on(async {
///         let mut incoming = cluster_worker::incoming("127.0.0.1:1337".parse().unwrap()).await?;
///         while let Some((_stream, _peer)) = incoming.accept().await { /* serve */ }
///         Ok(())
///     })
/// }
/// ```
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let _ = STARTED_NS.set(cluster_ipc::clock::monotonic_ns());
    let one_of_several = crate::is_worker() || std::env::var_os("CLUSTER_INSTANCE").is_some();
    let mut builder = if one_of_several {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// When [`runtime`] was first called (a [`cluster_ipc::clock::monotonic_ns`] reading): about
/// when `main` began, a start-up phase for `cluster_ipc::timing`.
static STARTED_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

pub(crate) fn started_ns() -> Option<u64> {
    STARTED_NS.get().copied()
}
