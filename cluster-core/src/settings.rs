//! Settings of a cluster (Node's `cluster.setupMaster`), checked at start-up.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use cluster_ipc::Serialization;

use crate::output::Stdio;

/// How new connections reach workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scheduling {
    /// The master binds each address once and hands the same socket to every worker, which
    /// all accept on it. Connections queued on the socket survive any worker's death.
    #[default]
    Shared,
    /// Every worker binds its own `SO_REUSEPORT` socket and the kernel spreads connections
    /// by hash. Connections queued on a worker's socket are reset when that worker exits
    /// unless `net.ipv4.tcp_migrate_req` is 1, so this mode is refused at start-up otherwise,
    /// unless `accept_queued_loss` says the loss is acceptable.
    ReusePort {
        /// Run even though queued connections are lost when a worker exits.
        accept_queued_loss: bool,
    },
    /// The master accepts every connection and hands it to the next ready worker in turn,
    /// keeping its copy until the worker has taken it (Node's default on Linux). Even
    /// balance whatever the clients do; the master's accept loop is the bottleneck.
    RoundRobin,
    /// Sticky sessions (what Node's `sticky-session` and socket.io's cluster adapter are
    /// for): the master accepts and hands over as in `RoundRobin`, but each client IP
    /// address always goes to the same worker while that worker accepts, by rendezvous
    /// hashing. A worker that dies, hangs or leaves moves only its own clients, to the
    /// others until its replacement takes its place (and its clients back); a new worker
    /// takes about 1/n of the clients, from every worker alike; a reload moves every client
    /// to the new generation. Clients behind one address (a NAT, a proxy) share a worker.
    Sticky,
}

/// Where the kernel says whether queued connections migrate between `SO_REUSEPORT` sockets.
const TCP_MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Settings for the workers a [`crate::Cluster`] starts. Every setting has a default;
/// [`crate::setup_master`] checks them all and names the first bad one.
///
/// ```
/// use std::time::Duration;
/// use cluster_core::{Serialization, Settings};
///
/// let settings = Settings::new()
///     .exec("/usr/bin/env")
///     .arg("--worker")
///     .env("RUST_LOG", "info")
///     .serialization(Serialization::Binary)
///     .stop_timeout(Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) exec: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdio: Stdio,
    /// The name in front of forwarded output lines.
    pub(crate) name: Option<String>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) serialization: Serialization,
    pub(crate) scheduling: Scheduling,
    pub(crate) max_message_bytes: usize,
    pub(crate) backlog: i32,
    pub(crate) stop_timeout: Duration,
    pub(crate) wait_ready: bool,
    pub(crate) ready_timeout: Duration,
    pub(crate) upgrade_timeout: Duration,
    pub(crate) max_listens_per_worker: usize,
    pub(crate) dispatch_timeout: Option<Duration>,
    pub(crate) nofile_limit: Option<u64>,
    /// See [`Settings::heartbeat_timeout`] (in `watchdog.rs`).
    pub(crate) heartbeat_timeout: Option<Duration>,
    /// See [`Settings::max_requests`] and the other limits (in `recycle.rs`).
    pub(crate) recycling: crate::recycle::Recycling,
    pub(crate) control_socket: Option<PathBuf>,
    pub(crate) metrics_address: Option<std::net::SocketAddr>,
    /// See [`Settings::max_boot_failures`] (in `boot_failures.rs`).
    pub(crate) max_boot_failures: Option<u32>,
    /// See [`Settings::allow_listen`] (in `listen_policy.rs`).
    pub(crate) allowed_listen: Vec<String>,
    /// See [`Settings::respawn`] (in `respawn.rs`).
    pub(crate) respawn: crate::respawn::Respawn,
    /// See [`Settings::foreign`] (in `foreign.rs`).
    pub(crate) foreign: Option<crate::foreign::Foreign>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            exec: None,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdio: Stdio::Inherit,
            name: None,
            uid: None,
            gid: None,
            serialization: Serialization::Json,
            scheduling: Scheduling::Shared,
            max_message_bytes: cluster_ipc::handoff::DEFAULT_MAX_MESSAGE_BYTES,
            backlog: cluster_ipc::DEFAULT_BACKLOG,
            stop_timeout: Duration::from_secs(30),
            wait_ready: false,
            ready_timeout: Duration::from_secs(30),
            upgrade_timeout: Duration::from_secs(60),
            max_listens_per_worker: crate::listen_quota::DEFAULT_MAX_LISTENS_PER_WORKER,
            dispatch_timeout: Some(DEFAULT_DISPATCH_TIMEOUT),
            nofile_limit: None,
            heartbeat_timeout: Some(crate::watchdog::DEFAULT_TIMEOUT),
            recycling: crate::recycle::Recycling::default(),
            control_socket: None,
            metrics_address: None,
            max_boot_failures: Some(crate::boot_failures::DEFAULT_MAX_BOOT_FAILURES),
            allowed_listen: Vec::new(),
            respawn: crate::respawn::Respawn::default(),
            foreign: None,
        }
    }
}

/// How long a round-robin hand-over may stay unanswered by default.
pub const DEFAULT_DISPATCH_TIMEOUT: Duration = Duration::from_millis(250);

/// The accepted `dispatch_timeout`s: long enough for a busy worker, short enough that a
/// client of a stuck one does not give up.
const DISPATCH_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);

/// The smallest accepted `nofile_limit`: the runtime itself needs a few dozen descriptors.
const MIN_NOFILE_LIMIT: u64 = 64;

/// The smallest and largest accepted `max_message_bytes`.
const MESSAGE_LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 30;

impl Settings {
    /// The defaults: the worker is this same executable, with the master's arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// The worker executable (default: the master's own executable).
    pub fn exec(mut self, path: impl Into<PathBuf>) -> Self {
        self.exec = Some(path.into());
        self
    }

    /// Appends one argument for the worker (default: the master's own arguments).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Replaces the worker's arguments with `args` (Node's `setupPrimary({ args })`; default:
    /// the master's own arguments).
    ///
    /// ```
    /// let settings = cluster_core::Settings::new().args(["--port", "8080"]);
    /// ```
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets one environment variable for every worker, on top of the master's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The workers' working directory (default: the master's).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Discard the workers' output (Node's `silent: true`): the same as
    /// `stdio(Stdio::Null)`, and `silent(false)` as `stdio(Stdio::Inherit)`.
    pub fn silent(self, silent: bool) -> Self {
        self.stdio(if silent { Stdio::Null } else { Stdio::Inherit })
    }

    /// Where the workers' stdout and stderr go (default [`Stdio::Inherit`]);
    /// [`Stdio::Forward`] captures them and forwards each line with the worker's name, id
    /// and pid in front, never blocking a worker.
    pub fn stdio(mut self, stdio: Stdio) -> Self {
        self.stdio = stdio;
        self
    }

    /// The name in front of forwarded output lines, `[name:id:pid]` (default `worker`; a
    /// pm group's name in a group).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Run workers as this user id (the master must be root), with no supplementary group.
    /// The master then binds for workers only declared addresses
    /// ([`Settings::allow_listen`]).
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Run workers as this group id (the master must be root), with no supplementary group.
    /// The master then binds for workers only declared addresses
    /// ([`Settings::allow_listen`]).
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// The message encoding (default JSON).
    pub fn serialization(mut self, serialization: Serialization) -> Self {
        self.serialization = serialization;
        self
    }

    /// How connections reach workers (default [`Scheduling::Shared`]).
    pub fn scheduling(mut self, scheduling: Scheduling) -> Self {
        self.scheduling = scheduling;
        self
    }

    /// The largest message payload either way, in bytes (default 16 MiB; 1 KiB to 1 GiB).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The listen backlog of shared sockets (default 1024; the kernel caps it at
    /// `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Workers count as ready only once they call `Worker::ready()` (pm's `ready`), and get
    /// no round-robin connection before (default false: a worker is ready when it listens).
    pub fn wait_ready(mut self, wait: bool) -> Self {
        self.wait_ready = wait;
        self
    }

    /// How long a replacement forked by [`crate::Cluster::reload`] may take to become ready
    /// before the reload gives up and keeps the old worker (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a new master started by a hot upgrade ([`crate::Cluster::upgrade`], SIGUSR2)
    /// may take until its workers are ready before it is killed and this master keeps
    /// serving (default 60 s; pm's `Master` uses the longest of its groups').
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// How many distinct addresses one worker may make the master listen on (default 64;
    /// 1 to 65,536). A request beyond fails in the worker's `listen()` and is logged; an
    /// address the worker already has does not count again.
    pub fn max_listens_per_worker(mut self, count: usize) -> Self {
        self.max_listens_per_worker = count;
        self
    }

    /// Round-robin: how long a hand-over may stay unanswered before the master takes it
    /// back, gives it to another worker and stops choosing the silent one until it answers
    /// again (default 250 ms, 10 ms to 60 s; `None`: wait for the answer however long it
    /// takes, so a stuck worker holds its clients). The worker takes a hand-over only
    /// within half this time, so a taken-back connection is never served twice.
    pub fn dispatch_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.dispatch_timeout = timeout;
        self
    }

    /// The soft `RLIMIT_NOFILE` (open descriptors) the master sets for itself at start-up;
    /// workers inherit it. Default: the hard limit, as Go's runtime does, so a busy worker
    /// does not run out at the usual soft limit of 1024. At least 64, at most the hard limit.
    pub fn nofile_limit(mut self, limit: u64) -> Self {
        self.nofile_limit = Some(limit);
        self
    }

    /// How long a graceful stop waits for workers before killing them, and how long a worker
    /// whose master died may drain (default 30 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Checks every setting and fills in the defaults that depend on this process.
    /// Serve `clusterctl` on a Unix socket at `path` (mode 0600; only this process's uid and
    /// root may talk to it). Off by default: two masters on one machine must not fight over
    /// one path, so the program chooses it; `cluster_core::control::default_socket_path(name)`
    /// gives the conventional place (`$XDG_RUNTIME_DIR/NAME.control.sock`, else `/run`),
    /// where `clusterctl --name NAME` looks. A stale socket file is replaced; one a live
    /// master listens on is an error. Read by [`crate::setup_master`] only. See
    /// `docs/CONTROL.md`.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    /// Serve Prometheus metrics (`/metrics`) and health (`/healthz`, `/readyz`) over HTTP on
    /// this TCP address (off by default). Read by [`crate::setup_master`] only. See
    /// `docs/CONTROL.md`.
    pub fn metrics_address(mut self, address: std::net::SocketAddr) -> Self {
        self.metrics_address = Some(address);
        self
    }

    pub(crate) fn validate(mut self) -> Result<Self, SettingsError> {
        let exec = match self.exec.take() {
            Some(path) => path,
            None => {
                if self.args.is_empty() {
                    self.args = std::env::args_os().skip(1).collect();
                }
                std::env::current_exe().map_err(|e| SettingsError::new("exec", e))?
            }
        };
        let meta = std::fs::metadata(&exec)
            .map_err(|e| SettingsError::new("exec", format!("{}: {e}", exec.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(SettingsError::new(
                "exec",
                format!("{}: not an executable file", exec.display()),
            ));
        }
        self.exec = Some(exec);
        if let Some(cwd) = &self.cwd {
            if !cwd.is_dir() {
                return Err(SettingsError::new(
                    "cwd",
                    format!("{}: not a directory", cwd.display()),
                ));
            }
        }
        if !MESSAGE_LIMIT_RANGE.contains(&self.max_message_bytes) {
            return Err(SettingsError::new(
                "max_message_bytes",
                format!(
                    "{} is outside {}..={}",
                    self.max_message_bytes,
                    MESSAGE_LIMIT_RANGE.start(),
                    MESSAGE_LIMIT_RANGE.end()
                ),
            ));
        }
        if let Scheduling::ReusePort {
            accept_queued_loss: false,
        } = self.scheduling
        {
            let migrate = std::fs::read_to_string(TCP_MIGRATE_REQ).unwrap_or_default();
            if migrate.trim() != "1" {
                return Err(SettingsError::new(
                    "scheduling",
                    format!(
                        "ReusePort resets the connections queued on a worker's socket when the \
                         worker exits unless {TCP_MIGRATE_REQ} is 1 (it is {:?} here); use \
                         Shared, set the sysctl, or set accept_queued_loss",
                        migrate.trim()
                    ),
                ));
            }
        }
        if let Some(timeout) = self.dispatch_timeout {
            if !DISPATCH_TIMEOUT_RANGE.contains(&timeout) {
                return Err(SettingsError::new(
                    "dispatch_timeout",
                    format!(
                        "{timeout:?} is outside {:?}..={:?}",
                        DISPATCH_TIMEOUT_RANGE.start(),
                        DISPATCH_TIMEOUT_RANGE.end()
                    ),
                ));
            }
        }
        if let Some(limit) = self.nofile_limit {
            let (_, hard) = cluster_ipc::fd::nofile_limit()
                .map_err(|e| SettingsError::new("nofile_limit", e))?;
            if !(MIN_NOFILE_LIMIT..=hard).contains(&limit) {
                return Err(SettingsError::new(
                    "nofile_limit",
                    format!("{limit} is outside {MIN_NOFILE_LIMIT}..={hard} (the hard limit)"),
                ));
            }
        }
        if self.backlog <= 0 {
            return Err(SettingsError::new("backlog", "must be positive"));
        }
        let listens = 1..=crate::listen_quota::MAX_LISTENS_PER_WORKER_LIMIT;
        if !listens.contains(&self.max_listens_per_worker) {
            return Err(SettingsError::new(
                "max_listens_per_worker",
                format!(
                    "{} is outside {}..={}",
                    self.max_listens_per_worker,
                    listens.start(),
                    listens.end()
                ),
            ));
        }
        if self.stop_timeout.is_zero() {
            return Err(SettingsError::new("stop_timeout", "must be more than zero"));
        }
        if self.ready_timeout.is_zero() {
            return Err(SettingsError::new(
                "ready_timeout",
                "must be more than zero",
            ));
        }
        if self.upgrade_timeout.is_zero() {
            return Err(SettingsError::new(
                "upgrade_timeout",
                "must be more than zero",
            ));
        }
        crate::watchdog::validate(self.heartbeat_timeout)?;
        crate::recycle::validate(&self.recycling)?;
        crate::listen_policy::validate(&self.allowed_listen)?;
        let euid = nix::unistd::geteuid().as_raw();
        if let Some(uid) = self.uid {
            if euid != 0 && uid != euid {
                return Err(SettingsError::new(
                    "uid",
                    format!("switching workers to uid {uid} needs a root master"),
                ));
            }
        }
        if let Some(gid) = self.gid {
            if euid != 0 && gid != nix::unistd::getegid().as_raw() {
                return Err(SettingsError::new(
                    "gid",
                    format!("switching workers to gid {gid} needs a root master"),
                ));
            }
        }
        crate::boot_failures::validate(self.max_boot_failures)?;
        crate::respawn::validate(&self.respawn)?;
        crate::foreign::validate(&mut self)?;
        Ok(self)
    }
}

/// A setting that cannot work, found at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct SettingsError {
    /// The setting's name.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(setting: &'static str, reason: impl std::fmt::Display) -> Self {
        SettingsError {
            setting,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_point_at_this_executable() {
        let settings = Settings::new().validate().expect("defaults");
        assert_eq!(
            settings.exec,
            Some(std::env::current_exe().expect("current_exe"))
        );
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases = [
            (Settings::new().exec("/nonexistent/worker"), "exec"),
            (Settings::new().exec("/etc/passwd"), "exec"),
            (Settings::new().cwd("/nonexistent"), "cwd"),
            (Settings::new().max_message_bytes(10), "max_message_bytes"),
            (Settings::new().backlog(0), "backlog"),
            (
                Settings::new().max_listens_per_worker(0),
                "max_listens_per_worker",
            ),
            (Settings::new().stop_timeout(Duration::ZERO), "stop_timeout"),
            (
                Settings::new().upgrade_timeout(Duration::ZERO),
                "upgrade_timeout",
            ),
            (
                Settings::new().ready_timeout(Duration::ZERO),
                "ready_timeout",
            ),
            (
                Settings::new().dispatch_timeout(Some(Duration::ZERO)),
                "dispatch_timeout",
            ),
            (Settings::new().nofile_limit(10), "nofile_limit"),
            (
                Settings::new().heartbeat_timeout(Some(Duration::from_millis(1))),
                "heartbeat_timeout",
            ),
            (Settings::new().max_requests(0), "max_requests"),
            (
                Settings::new().max_requests_jitter(10),
                "max_requests_jitter",
            ),
            (Settings::new().max_memory(0), "max_memory"),
            (Settings::new().max_age(Duration::ZERO), "max_age"),
        ];
        for (settings, name) in cases {
            let err = settings.validate().expect_err(name);
            assert_eq!(err.setting, name, "{err}");
            assert!(err.to_string().contains(name));
        }
    }
}
