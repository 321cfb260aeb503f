//! The single-binary entry point: one `main` that is the master or a worker, each on the
//! runtime that fits it.

use std::future::Future;

/// Runs `worker` if this process is a worker a master started, else `master`, each on a
/// runtime of its own: the master on a multi-thread runtime (it supervises, and may accept
/// for round-robin), a worker on a current-thread one (the processes are the parallelism,
/// one per core, as with Node; see `cluster_worker::runtime`). Call it from a plain
/// `fn main` (no `#[tokio::main]`): the binary then cannot forget to branch, and
/// [`crate::setup_master`] in a worker, the fork bomb, cannot happen.
///
/// An error building the runtime comes back as `E` (`From<std::io::Error>`).
///
/// ```no_run
/// use cluster_core::{Settings, setup_master};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     cluster_core::run(master, worker)
/// }
///
/// async fn master() -> Result<(), Box<dyn std::error::Error>> {
///     let cluster = setup_master(Settings::new())?;
///     cluster.fork(&[])?;
///     cluster.run().await?; // replaces workers that fail (Settings::respawn)
///     Ok(())
/// }
///
/// async fn worker() -> Result<(), Box<dyn std::error::Error>> {
///     // serve with cluster_worker::listen(..) or graceful::serve(..)
///     Ok(())
/// }
/// ```
///
/// "A worker" is [`cluster_ipc::handoff::started_by_master`]: the master named in its
/// environment, or the peer of its channel, is its parent.
pub fn run<E, M, MF, W, WF>(master: M, worker: W) -> Result<(), E>
where
    M: FnOnce() -> MF,
    MF: Future<Output = Result<(), E>>,
    W: FnOnce() -> WF,
    WF: Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    if cluster_ipc::handoff::started_by_master().is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(worker())
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(master())
    }
}
