//! The pidfile during an upgrade, as nginx moves it: the old master's goes to
//! `PIDFILE.oldbin`; the new master writes `PIDFILE`; a failed upgrade moves it back.

use std::path::{Path, PathBuf};

fn oldbin(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".oldbin");
    PathBuf::from(name)
}

/// Moves `pidfile` to `PIDFILE.oldbin`; true if it did.
pub(super) fn move_to_oldbin(pidfile: &Path) -> bool {
    match std::fs::rename(pidfile, oldbin(pidfile)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "upgrade: cannot move the pidfile {}: {e}",
                pidfile.display()
            );
            false
        }
    }
}

/// Moves `PIDFILE.oldbin` back to `pidfile` (over whatever a failed new master wrote).
pub(super) fn move_back(pidfile: &Path) {
    if let Err(e) = std::fs::rename(oldbin(pidfile), pidfile) {
        tracing::warn!(
            "upgrade: cannot restore the pidfile {}: {e}",
            pidfile.display()
        );
    }
}

/// Removes `PIDFILE.oldbin` if it holds this process's pid.
pub(super) fn remove_oldbin(pidfile: &Path) {
    let path = oldbin(pidfile);
    let ours = std::fs::read_to_string(&path)
        .is_ok_and(|content| content.trim() == std::process::id().to_string());
    if ours {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
}
