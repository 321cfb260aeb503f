//! Permissions of a Unix socket file for other users (Node's `readableAll` and
//! `writableAll` options of `server.listen({ path })`): [`listen_unix_with`] listens as
//! [`crate::listen_unix`] does, then adds read and/or write for the owner, the group and
//! everyone else to the socket file, as Node does (after the listen, by its path, from the
//! process that asked; so the worker must own the file, which it does when it runs as the
//! master's user, or be root).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Options of [`listen_unix_with`]: which permissions everyone gets on the socket file.
///
/// ```
/// let options = cluster_worker::UnixOptions::new().readable_all(true).writable_all(true);
/// assert_eq!(options.mode_bits(), 0o666);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnixOptions {
    readable_all: bool,
    writable_all: bool,
}

impl UnixOptions {
    /// Nothing added: the file keeps the mode the binder's umask gave it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everyone may read the socket file (Node's `readableAll`).
    pub fn readable_all(mut self, readable: bool) -> Self {
        self.readable_all = readable;
        self
    }

    /// Everyone may write to (connect to) the socket file (Node's `writableAll`).
    pub fn writable_all(mut self, writable: bool) -> Self {
        self.writable_all = writable;
        self
    }

    /// The permission bits these options add.
    pub fn mode_bits(&self) -> u32 {
        let mut bits = 0;
        if self.readable_all {
            bits |= 0o444;
        }
        if self.writable_all {
            bits |= 0o222;
        }
        bits
    }
}

/// [`crate::listen_unix`], then the permissions of `options` added to the socket file.
/// Errors name the path.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use cluster_worker::UnixOptions;
/// let everyone = UnixOptions::new().readable_all(true).writable_all(true);
/// let listener = cluster_worker::listen_unix_with("/run/app.sock".as_ref(), everyone).await?;
/// # drop(listener); Ok(()) }
/// ```
pub async fn listen_unix_with(
    path: &Path,
    options: UnixOptions,
) -> io::Result<tokio::net::UnixListener> {
    let listener = crate::listen_unix(path).await?;
    add_mode_bits(path, options.mode_bits())?;
    Ok(listener)
}

/// Adds `bits` to the permissions of the file at `path` (nothing when `bits` is 0 or
/// already there).
fn add_mode_bits(path: &Path, bits: u32) -> io::Result<()> {
    if bits == 0 {
        return Ok(());
    }
    let named = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("permissions of unix:{}: {e}", path.display()),
        )
    };
    let mode = std::fs::metadata(path).map_err(named)?.permissions().mode();
    if mode & bits == bits {
        return Ok(());
    }
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode((mode | bits) & 0o7777),
    )
    .map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_read_and_write_for_everyone() {
        assert_eq!(UnixOptions::new().mode_bits(), 0);
        assert_eq!(UnixOptions::new().readable_all(true).mode_bits(), 0o444);
        assert_eq!(UnixOptions::new().writable_all(true).mode_bits(), 0o222);
    }

    #[test]
    fn the_bits_are_added_to_the_files_mode() {
        let path = std::env::temp_dir().join(format!("unix-mode-{}", std::process::id()));
        std::fs::write(&path, b"").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        add_mode_bits(&path, 0o444).expect("add");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        std::fs::remove_file(&path).expect("remove");
    }
}
