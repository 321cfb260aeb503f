//! The control socket's file: bound with mode 0600, a stale file replaced only if nothing
//! listens on it, removed when the server ends (if it is still ours).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The bound socket; its file is removed on drop if it is still the one bound here.
pub(crate) struct ControlSocket {
    pub(crate) listener: UnixListener,
    pub(crate) file: SocketFile,
}

/// Removes the socket file on drop, unless another master has replaced it since.
pub(crate) struct SocketFile {
    path: PathBuf,
    /// Device, inode and modification time: an inode number alone is soon reused, and the
    /// change time moves with a chmod.
    inode: (u64, u64, i64, i64),
}

impl ControlSocket {
    /// Binds `path`. A file there that is not a socket, or a socket a live master listens
    /// on, is an error; a socket nobody listens on (a master that was killed) is replaced.
    pub(crate) fn bind(path: &Path) -> Result<ControlSocket, String> {
        let shown = path.display();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(format!("{shown} exists and is not a socket"));
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(format!("{shown}: another master listens there")),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %shown, "replacing a stale control socket");
                    std::fs::remove_file(path)
                        .map_err(|e| format!("{shown}: cannot remove the stale socket: {e}"))?;
                }
                Err(e) => return Err(format!("{shown}: {e}")),
            }
        }
        let listener = UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
        // Until this chmod the umask's mode applies; the peer check refuses other uids
        // either way.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{shown}: cannot set mode 0600: {e}"))?;
        ControlSocket::adopt(path, listener)
    }
}

impl ControlSocket {
    /// The socket at `path`, bound by `bind` or handed over by an old master in a hot
    /// upgrade: non-blocking, and its file recognised by inode and mtime.
    pub(crate) fn adopt(path: &Path, listener: UnixListener) -> Result<ControlSocket, String> {
        let shown = path.display();
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{shown}: {e}"))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        Ok(ControlSocket {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
                inode: identity(&meta),
            },
        })
    }
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec())
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Handed over in a hot upgrade: the new master serves this file now.
        if crate::upgrade::handed_over() {
            return;
        }
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|meta| identity(&meta) == self.inode);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), "cannot remove the control socket: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::ControlSocket;

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_and_other_files_are_not() {
        let dir = std::env::temp_dir().join(format!("control-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("m.sock");
        let _ = std::fs::remove_file(&path);
        let first = ControlSocket::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let live = ControlSocket::bind(&path)
            .err()
            .expect("refused while live");
        assert!(live.contains("another master listens"), "{live}");
        // A killed master leaves its file behind: nothing listens on it.
        drop(first.listener);
        let second = ControlSocket::bind(&path).expect("stale socket replaced");
        drop(first.file);
        assert!(
            path.exists(),
            "the old guard must not remove the new socket"
        );
        // An operator's chmod does not make it someone else's.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        drop(second);
        assert!(!path.exists(), "removed when the server ends");
        let plain = dir.join("not-a-socket");
        std::fs::write(&plain, b"x").expect("file");
        let refused = ControlSocket::bind(&plain).err().expect("refused");
        assert!(refused.contains("not a socket"), "{refused}");
        assert!(plain.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
