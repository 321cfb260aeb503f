//! The master's descriptor limit: raised at start-up so workers inherit room.
//!
//! The usual soft `RLIMIT_NOFILE` is 1024 while the hard limit is far higher; a server that
//! holds many connections runs out at the soft one. Go's runtime raises the soft limit to
//! the hard one at start; the master does the same (or sets `Settings::nofile_limit`), and
//! every worker forked afterwards inherits it.

use crate::settings::SettingsError;

/// Sets the soft limit to `wanted` (default: the hard limit) and returns the limit now in
/// effect. Logged at info.
pub(crate) fn apply(wanted: Option<u64>) -> Result<u64, SettingsError> {
    let error = |e: std::io::Error| SettingsError {
        setting: "nofile_limit",
        reason: e.to_string(),
    };
    let (soft, hard) = cluster_ipc::fd::nofile_limit().map_err(error)?;
    let target = wanted.unwrap_or(hard);
    if target != soft {
        cluster_ipc::fd::set_nofile_soft_limit(target).map_err(error)?;
    }
    tracing::info!(
        soft = target,
        hard,
        was = soft,
        "open descriptor limit (RLIMIT_NOFILE) for the master and its workers: {target}"
    );
    Ok(target)
}
