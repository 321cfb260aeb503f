//! Reading (once) and removing the handoff variables the master set.

use std::sync::OnceLock;

use cluster_ipc::handoff::WorkerHandoff;

static HANDOFF: OnceLock<Result<Option<WorkerHandoff>, String>> = OnceLock::new();

/// The handoff, read from the environment at the first call. The variables are then removed
/// so that processes this worker starts are not mistaken for workers; a process whose parent
/// is not the master named in the handoff is not a worker either (it inherited a stale
/// environment).
pub(crate) fn handoff() -> Result<Option<&'static WorkerHandoff>, String> {
    HANDOFF
        .get_or_init(|| {
            let read = WorkerHandoff::read(|name| std::env::var(name).ok());
            if let Ok(Some(_)) = read {
                for name in WorkerHandoff::VARIABLES {
                    // SAFETY: std serialises its own environment access with a lock, so the
                    // only hazard is foreign code calling libc `getenv` on another thread at
                    // this instant; this runs once, at the worker's first use of the cluster
                    // API, normally before any such code has started.
                    unsafe { std::env::remove_var(name) };
                }
            }
            match read {
                Ok(Some(h)) if h.master_pid != std::os::unix::process::parent_id() => {
                    tracing::debug!(
                        master_pid = h.master_pid,
                        "cluster variables inherited from a worker; not a worker"
                    );
                    Ok(None)
                }
                other => other,
            }
        })
        .as_ref()
        .map(Option::as_ref)
        .map_err(Clone::clone)
}
