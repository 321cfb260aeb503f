//! Least privilege for listening: which addresses a worker may make the master bind.
//!
//! The master often runs as root (to bind ports below 1024 and to switch workers to another
//! uid); its workers then run unprivileged. A worker's `listen()` is a request to the
//! master, so without a rule a compromised worker could make the root master bind any
//! address, or remove any socket file. The rule:
//!
//! - **Restricted** when the workers' uid or gid is switched ([`Settings::uid`],
//!   [`Settings::gid`]) or when any address is declared with [`Settings::allow_listen`]:
//!   the master binds for a worker only a declared address, an address systemd passed
//!   (socket activation), or one the master's own code bound already
//!   ([`crate::Cluster::listen`], a pm group's `listen`, which pm declares). Anything else is
//!   refused: the worker's `listen()` fails with an error naming the address, and the master
//!   logs a warning.
//! - **Open** otherwise (master and workers are the same user, nothing to protect): every
//!   request is bound, as in Node.
//!
//! A stale Unix socket file is removed only when nothing listens on it
//! (`cluster_ipc::bind_unix`), so with the rule above the master removes a socket file only
//! at a declared path, and never one a live server uses.

use crate::settings::{Settings, SettingsError};

impl Settings {
    /// Declares an address the workers may ask the master to bind: `host:port`,
    /// `unix:PATH` for a Unix socket or `udp:host:port` for a UDP socket. May be given several times. Once any address is
    /// declared, or the workers' uid or gid is switched, the master refuses every listen
    /// request for an address not declared (nor passed by systemd, nor bound by the master's
    /// own code). See `docs/ARCHITECTURE.md`, "Least privilege".
    ///
    /// ```
    /// let settings = cluster_core::Settings::new()
    ///     .uid(65534)
    ///     .allow_listen("0.0.0.0:80")
    ///     .allow_listen("unix:/run/app/app.sock");
    /// ```
    pub fn allow_listen(mut self, address: impl Into<String>) -> Self {
        self.allowed_listen.push(address.into());
        self
    }

    /// Whether listen requests are limited to declared addresses.
    pub(crate) fn listen_restricted(&self) -> bool {
        self.uid.is_some() || self.gid.is_some() || !self.allowed_listen.is_empty()
    }

    /// Whether `address` was declared.
    pub(crate) fn listen_declared(&self, address: &str) -> bool {
        self.allowed_listen
            .iter()
            .any(|declared| same_address(declared, address))
    }
}

/// Every declared address must be `host:port` or `unix:PATH` (absolute).
pub(crate) fn validate(declared: &[String]) -> Result<(), SettingsError> {
    for address in declared {
        let ok = match (
            cluster_ipc::udp_address(address),
            cluster_ipc::unix_path(address),
        ) {
            (Some(udp), _) => udp.is_ok(),
            (None, Some(path)) => path.is_absolute(),
            (None, None) => address.parse::<std::net::SocketAddr>().is_ok(),
        };
        if !ok {
            return Err(SettingsError::new(
                "allow_listen",
                format!("{address:?} is neither host:port, udp:host:port nor unix:/absolute/path"),
            ));
        }
    }
    Ok(())
}

fn same_address(a: &str, b: &str) -> bool {
    match (cluster_ipc::udp_address(a), cluster_ipc::udp_address(b)) {
        (Some(a), Some(b)) => return matches!((a, b), (Ok(a), Ok(b)) if a == b),
        (None, None) => {}
        _ => return false,
    }
    match (cluster_ipc::unix_path(a), cluster_ipc::unix_path(b)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => match (
            a.parse::<std::net::SocketAddr>(),
            b.parse::<std::net::SocketAddr>(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}

/// Whether a worker may make the master bind `address`; the error names it.
pub(crate) fn check(
    settings: &Settings,
    address: &str,
    bound_by_master: bool,
) -> Result<(), String> {
    if !settings.listen_restricted()
        || bound_by_master
        || settings.listen_declared(address)
        || crate::activation::serves(address)
    {
        return Ok(());
    }
    Err(format!(
        "listen on {address}: refused, the master binds only declared addresses \
         (Settings::allow_listen)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_uid_or_declarations() {
        assert!(check(&Settings::new(), "0.0.0.0:1", false).is_ok());
    }

    #[test]
    fn restricted_once_declared() {
        let settings = Settings::new().allow_listen("127.0.0.1:80");
        assert!(check(&settings, "127.0.0.1:80", false).is_ok());
        assert!(check(&settings, "[::ffff:127.0.0.1]:80", false).is_err());
        let refused = check(&settings, "unix:/etc/passwd", false).unwrap_err();
        assert!(refused.contains("unix:/etc/passwd"), "{refused}");
        assert!(check(&settings, "127.0.0.1:81", true).is_ok());
        // TCP and UDP on one port are different addresses.
        assert!(check(&settings, "udp:127.0.0.1:80", false).is_err());
        let udp = Settings::new().allow_listen("udp:127.0.0.1:53");
        assert!(check(&udp, "udp:127.0.0.1:053", false).is_ok());
        assert!(check(&udp, "127.0.0.1:53", false).is_err());
    }

    #[test]
    fn restricted_with_a_uid() {
        let settings = Settings::new().uid(65534);
        assert!(check(&settings, "127.0.0.1:80", false).is_err());
    }

    #[test]
    fn a_bad_declaration_names_the_setting() {
        let error = validate(&["localhost".into()]).unwrap_err();
        assert_eq!(error.setting, "allow_listen");
        assert!(validate(&["unix:relative".into()]).is_err());
        assert!(validate(&["unix:/run/a.sock".into(), "[::1]:443".into()]).is_ok());
    }
}
