//! What a group is: its workers' program, addresses, size and restart policy.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pm::policy::RestartPolicy;
use crate::settings::Settings;

/// Options of one group (pm's `register(name, file, options)`).
///
/// ```
/// use std::time::Duration;
/// use cluster_core::pm::GroupOptions;
///
/// let web = GroupOptions::new()
///     .listen("127.0.0.1:1984".parse().unwrap())
///     .children(2)
///     .ready_timeout(Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub(crate) exec: Option<PathBuf>,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) listen_unix: Vec<PathBuf>,
    pub(crate) children: usize,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) policy: RestartPolicy,
    pub(crate) ready_timeout: Duration,
    pub(crate) reload_stable: Duration,
    pub(crate) settings: Settings,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            exec: None,
            listen: Vec::new(),
            listen_unix: Vec::new(),
            children: std::thread::available_parallelism().map_or(1, |n| n.get()),
            args: Vec::new(),
            env: Vec::new(),
            policy: RestartPolicy::default(),
            ready_timeout: Duration::from_secs(30),
            reload_stable: Duration::from_millis(500),
            settings: Settings::new(),
        }
    }
}

impl GroupOptions {
    /// The defaults: one worker per CPU, no listen address, pm's restart policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The workers' program (default: this same executable, as [`Settings::exec`]).
    pub fn exec(mut self, path: impl Into<PathBuf>) -> Self {
        self.exec = Some(path.into());
        self
    }

    /// An address the group's workers serve (pm's `listen`); may be given several times.
    /// The master binds it when the group is registered.
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen.push(address);
        self
    }

    /// A Unix socket path the group's workers serve (pm's `listen` with a path); may be given
    /// several times. The master binds it when the group is registered, replacing a socket
    /// file left by an earlier run; workers get it with `cluster_worker::group_unix_listeners`.
    pub fn listen_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.listen_unix.push(path.into());
        self
    }

    /// How many workers the group keeps running (pm's `children`; default: CPUs).
    pub fn children(mut self, children: usize) -> Self {
        self.children = children;
        self
    }

    /// Appends one argument for the workers.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets one environment variable for the workers.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The restart policy (default: give up for 60 s after 5 unstable exits in 60 s, pm's
    /// numbers with pm2's rule of what counts; pm2's backoff).
    pub fn policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a worker must stay up once ready for its exit not to count against the
    /// group (pm2's `min_uptime`; default 1 s, at least `MIN_RESTART_DELAY`): sets the
    /// policy's [`RestartPolicy::min_uptime`].
    pub fn min_uptime(mut self, min_uptime: Duration) -> Self {
        self.policy.min_uptime = min_uptime;
        self
    }

    /// How long a reload waits for the new workers to be ready (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long the new workers of a reload must stay up once ready before the old ones
    /// are retired (default 500 ms).
    pub fn reload_stable(mut self, window: Duration) -> Self {
        self.reload_stable = window;
        self
    }

    /// The cluster settings the workers are started with (serialization, stop timeout,
    /// uid/gid…); `exec`, args and env are the group's.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }
}

/// Options of a [`crate::pm::Master`] (pm's `createMaster(options)`).
///
/// ```
/// use cluster_core::pm::{Master, MasterOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let master = Master::with_options(MasterOptions::new().pidfile("/run/web.pid"));
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MasterOptions {
    pub(crate) pidfile: Option<PathBuf>,
}

impl MasterOptions {
    /// The defaults: no pidfile.
    pub fn new() -> Self {
        Self::default()
    }

    /// Write this process's pid to `path` at `dispatch`, and remove the file at exit if it
    /// still holds this pid (pm's `pidfile`; default none).
    pub fn pidfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.pidfile = Some(path.into());
        self
    }
}
