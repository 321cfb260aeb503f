//! Reading (once) the handoff variables the master set.

use std::sync::OnceLock;

use cluster_ipc::handoff::WorkerHandoff;

static HANDOFF: OnceLock<Result<Option<WorkerHandoff>, String>> = OnceLock::new();

/// The handoff, read from the environment at the first call and kept.
///
/// The variables are left in place: removing them would need `std::env::remove_var`, which
/// is unsafe because foreign code may read the environment on another thread at that
/// instant, and a library cannot know it does not. They are inert where they leak: a
/// process is a worker only when the master named in the handoff is its parent, so the
/// processes this worker starts (which inherit them) are not workers, and descriptor 3 is
/// close-on-exec from the first use on, so a program this worker `exec`s fails to adopt it
/// with an error rather than talk on a channel that is not its own.
pub(crate) fn handoff() -> Result<Option<&'static WorkerHandoff>, String> {
    HANDOFF
        .get_or_init(|| {
            let read = WorkerHandoff::read(|name| std::env::var(name).ok());
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
