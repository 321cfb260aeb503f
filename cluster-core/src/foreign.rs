//! Foreign workers: programs that know nothing of this project (a server using `listenfd`,
//! go-systemd's activation, gunicorn's `--bind fd://3`, `sd_listen_fds`), supervised by the
//! same master.
//!
//! With [`Settings::foreign`] a cluster's workers speak no IPC. What replaces it:
//!
//! - **Sockets**: the master binds the listed addresses up front (at `setup_master`, so a
//!   bad one is an error at start-up) and each worker gets them with systemd's protocol:
//!   descriptors 3, 4, … in the order given, `LISTEN_FDS`, `LISTEN_FDNAMES` and
//!   `LISTEN_PID` = the worker's own pid. The master keeps its copies, so a dead worker
//!   loses only the connections it had accepted. The sockets are non-blocking, as the
//!   master shares them (a program must not change that flag: it is the socket's, shared by
//!   every worker and the master).
//! - **Readiness**: [`Readiness::Notify`] waits for `READY=1` on the worker's own
//!   `NOTIFY_SOCKET` (a Unix datagram socket the master owns, one per worker, so the sender
//!   is known without credentials); [`Readiness::After`] counts a worker ready once it has
//!   stayed alive that long.
//! - **Watchdog**: with a notify socket and [`Settings::heartbeat_timeout`] set, the worker
//!   gets `WATCHDOG_USEC` and each `WATCHDOG=1` it sends is a heartbeat; a program that
//!   never sends one is never judged (the watchdog watches from the first beat).
//! - **Disconnect** = SIGTERM, then SIGKILL after `stop_timeout` ([`Worker::disconnect`]).
//!   Its `disconnect` event comes when it exits, right before `exit`.
//!
//! Everything above the worker (pm's restart policy, rolling reloads gated on readiness,
//! scaling, stop, pidfile, control socket, output forwarding, recycling by memory or age)
//! is the same code as for workers of this project. Not available: round-robin or
//! ReusePort scheduling, `max_requests` (a foreign program counts nothing for the master),
//! messages.
//!
//! ```
//! use std::time::Duration;
//! use cluster_core::Settings;
//! use cluster_core::foreign::{Foreign, Readiness};
//!
//! let settings = Settings::new()
//!     .exec("/usr/bin/python3")
//!     .arg("server.py")
//!     .foreign(Foreign::new(Readiness::After(Duration::from_millis(500)))
//!         .listen("http", "127.0.0.1:8080")
//!         .listen("admin", "unix:/run/app-admin.sock"));
//! ```

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Signal;
use crate::cluster::{Cluster, Shared};
use crate::error::ForkError;
use crate::events::Event;
use crate::output::Stdio;
use crate::settings::{Scheduling, Settings, SettingsError};
use crate::worker::{Worker, WorkerLoad, WorkerState};

/// When a foreign worker counts as ready (for pm's reloads, `clusterctl status`, systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// When it sends `READY=1` to its `NOTIFY_SOCKET` (`sd_notify(3)`).
    Notify,
    /// When it has been alive this long after its start.
    After(Duration),
}

/// How to run programs that know nothing of this project (see the module doc).
#[derive(Debug, Clone)]
pub struct Foreign {
    pub(crate) sockets: Vec<Socket>,
    pub(crate) ready: Readiness,
}

/// One socket passed to foreign workers: its `LISTEN_FDNAMES` name and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Socket {
    pub(crate) name: String,
    pub(crate) address: String,
}

impl Foreign {
    /// No socket yet; workers are ready as `ready` says.
    pub fn new(ready: Readiness) -> Self {
        Foreign {
            sockets: Vec::new(),
            ready,
        }
    }

    /// Passes the socket of `address` (`host:port`, or `unix:PATH`) as the next descriptor
    /// (3, then 4, …), named `name` in `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`:
    /// at most 255 printable ASCII characters, no `:`).
    pub fn listen(mut self, name: impl Into<String>, address: impl Into<String>) -> Self {
        self.sockets.push(Socket {
            name: name.into(),
            address: address.into(),
        });
        self
    }
}

impl Settings {
    /// Runs the workers as foreign programs: no IPC, sockets passed with systemd's protocol,
    /// readiness from `sd_notify` or a timer (see [`crate::foreign`]). Implies `wait_ready`.
    pub fn foreign(mut self, foreign: Foreign) -> Self {
        self.foreign = Some(foreign);
        self
    }
}

/// Checks what a foreign cluster can do; part of `Settings::validate`.
pub(crate) fn validate(settings: &mut Settings) -> Result<(), SettingsError> {
    let Some(foreign) = &settings.foreign else {
        return Ok(());
    };
    for socket in &foreign.sockets {
        check_name(&socket.name)?;
        if cluster_ipc::unix_path(&socket.address).is_none()
            && socket.address.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(SettingsError::new(
                "listen",
                format!(
                    "{:?} is neither an IP address with a port (127.0.0.1:8080, [::1]:8080) \
                     nor unix:PATH",
                    socket.address
                ),
            ));
        }
    }
    if settings.scheduling != Scheduling::Shared {
        return Err(SettingsError::new(
            "scheduling",
            "a foreign program accepts on the sockets it is given: only Shared scheduling \
             works for it",
        ));
    }
    if settings.recycling.max_requests.is_some() {
        return Err(SettingsError::new(
            "max_requests",
            "a foreign program does not count its requests for the master; use max_memory or \
             max_age",
        ));
    }
    settings.wait_ready = true;
    Ok(())
}

fn check_name(name: &str) -> Result<(), SettingsError> {
    let fine = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if fine {
        Ok(())
    } else {
        Err(SettingsError::new(
            "listen",
            format!(
                "socket name {name:?}: 1 to 255 printable ASCII characters without ':' \
                 (systemd's FileDescriptorName=)"
            ),
        ))
    }
}

/// Binds every socket of a foreign cluster now, so a bad address fails at start-up.
pub(crate) fn bind(cluster: &Cluster) -> Result<(), SettingsError> {
    let foreign = cluster.shared.settings().foreign.clone();
    let Some(foreign) = foreign else {
        return Ok(());
    };
    for socket in &foreign.sockets {
        sockets_for(&cluster.shared, std::slice::from_ref(socket))
            .map_err(|reason| SettingsError::new("listen", reason))?;
    }
    Ok(())
}

/// The master's sockets for `sockets`, in order (bound now if not yet).
fn sockets_for(
    shared: &Shared,
    sockets: &[Socket],
) -> Result<Vec<Arc<dyn AsRawFd + Send + Sync>>, String> {
    let (backlog, _) = shared.listen_settings();
    let mut out: Vec<Arc<dyn AsRawFd + Send + Sync>> = Vec::new();
    for socket in sockets {
        match cluster_ipc::unix_path(&socket.address) {
            Some(path) => out.push(
                shared
                    .listeners
                    .get_or_bind_unix(path, 0, backlog)
                    .map_err(|e| e.to_string())?,
            ),
            None => out.push(
                shared
                    .listeners
                    .get_or_bind(
                        &socket.address,
                        0,
                        backlog,
                        cluster_ipc::ListenOptions::new(),
                        false,
                    )
                    .map_err(|e| e.to_string())?,
            ),
        }
    }
    Ok(out)
}

/// Forks foreign worker `id` (called by `Cluster::fork`).
pub(crate) fn fork(
    shared: &Arc<Shared>,
    id: u32,
    settings: &Settings,
    foreign: &Foreign,
    env: &[(&str, &str)],
) -> Result<Worker, ForkError> {
    let sockets = sockets_for(shared, &foreign.sockets)
        .map_err(|reason| ForkError::Spawn(io::Error::other(reason)))?;
    let watchdog = settings.heartbeat_timeout;
    let notify = match (foreign.ready, watchdog) {
        (Readiness::Notify, _) | (_, Some(_)) => {
            Some(NotifySocket::bind(id, settings.uid).map_err(ForkError::Spawn)?)
        }
        _ => None,
    };
    let exec = settings
        .exec
        .clone()
        .ok_or_else(|| ForkError::Spawn(io::Error::other("no program to run")))?;
    let mut vars = environment(settings, env);
    // Which instance this is (pm2's `NODE_APP_INSTANCE`): also tells the program it is one
    // of several processes (`cluster_worker::runtime` then takes one thread).
    vars.push((INSTANCE_ENV.into(), id.to_string().into()));
    if !sockets.is_empty() {
        let names: Vec<&str> = foreign.sockets.iter().map(|s| s.name.as_str()).collect();
        vars.push(("LISTEN_FDS".into(), sockets.len().to_string().into()));
        vars.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    }
    if let Some(notify) = &notify {
        vars.push(("NOTIFY_SOCKET".into(), notify.path.clone().into_os_string()));
        if let Some(timeout) = watchdog {
            vars.push((
                "WATCHDOG_USEC".into(),
                timeout.as_micros().to_string().into(),
            ));
        }
    }
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let image =
        ExecImage::new(&exec, &settings.args, &vars, !fds.is_empty()).map_err(ForkError::Spawn)?;
    let mut command = Command::new(&exec);
    crate::spawn::apply_settings(&mut command, settings);
    crate::spawn::detach(&mut command);
    exec_with_listen_pid(&mut command, image, fds);
    let mut child = shared
        .spawner()
        .spawn_prepared(command)
        .map_err(ForkError::Spawn)?;
    drop(sockets);
    if settings.stdio == Stdio::Forward {
        crate::output::forward(&mut child, settings.name.as_deref().unwrap_or("worker"), id);
    }
    let pid = child.id().unwrap_or_default();
    let fork_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let worker = Worker::new_foreign(id, pid, fork_env, settings.stop_timeout);
    shared.add_worker(&worker);
    worker.advance(WorkerState::Online);
    shared.events.emit(Event::Online(worker.clone()));
    tokio::spawn(supervise(
        shared.clone(),
        worker.clone(),
        child,
        notify,
        foreign.ready,
    ));
    Ok(worker)
}

/// The worker's environment: the master's, less what is the master's only (systemd's and
/// a hot upgrade's variables), then the settings' and `fork`'s.
fn environment(settings: &Settings, env: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    let master_only = |key: &OsStr| {
        crate::activation::MASTER_ONLY_ENV
            .iter()
            .any(|k| OsStr::new(k) == key)
            || key == crate::upgrade::ENV_INHERITED
            || key == crate::upgrade::ENV_READY_FD
            || key == "LISTEN_PID"
            || key == "LISTEN_FDS"
            || key == "LISTEN_FDNAMES"
            || key == "NOTIFY_SOCKET"
            || key == "WATCHDOG_USEC"
            || key == "WATCHDOG_PID"
            || key == INSTANCE_ENV
    };
    let mut vars: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |key: OsString, value: OsString| {
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
    };
    for (key, value) in std::env::vars_os() {
        if !master_only(&key) {
            set(key, value);
        }
    }
    for (key, value) in &settings.env {
        set(key.clone(), value.clone());
    }
    for (key, value) in env {
        set(key.into(), value.into());
    }
    vars
}

/// The variable that gives a foreign worker its id (1, 2, …).
pub const INSTANCE_ENV: &str = "CLUSTER_INSTANCE";

/// `argv` and `envp` for `execve`, built in the master before the fork, so the child only
/// writes its pid into a slot and calls `execve`.
///
/// Why not `Command::env("LISTEN_PID", …)` or `setenv` in `pre_exec`: the pid is known only
/// in the child, and between fork and exec a child of a multi-threaded process may make
/// async-signal-safe calls only; `setenv` allocates and takes the environment lock, which
/// another thread of the master may have held at the fork (a deadlock, or a torn
/// environment). Exec'ing a tiny hop program that sets the variable and execs again would
/// work too, at the price of a second exec per worker and of a helper binary any user of
/// this library must ship. Here the last `pre_exec` closure writes the digits of `getpid()`
/// into a buffer allocated before the fork and calls `execve(2)` itself with arrays made
/// before the fork: only `getpid`, `fcntl`, `dup2`, `sigprocmask`, `signal` and `execve`,
/// all async-signal-safe, and no allocation. systemd and systemfd set `LISTEN_PID` after the
/// fork the same way.
struct ExecImage {
    program: CString,
    /// Kept alive: `argv` points into them.
    _args: Vec<CString>,
    /// Kept alive: `envp` points into them.
    _vars: Vec<CString>,
    /// `LISTEN_PID=` followed by room for the digits and the NUL, if sockets are passed.
    pid_slot: Option<Box<[u8; PID_SLOT]>>,
    /// Null-terminated arrays of pointers, held as addresses so the closure is `Send`.
    argv: Vec<usize>,
    envp: Vec<usize>,
}

const PID_PREFIX: &[u8] = b"LISTEN_PID=";
const PID_SLOT: usize = 40;

impl ExecImage {
    fn new(
        program: &Path,
        args: &[OsString],
        vars: &[(OsString, OsString)],
        listen_pid: bool,
    ) -> io::Result<ExecImage> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a NUL byte in an argument or variable",
                )
            })
        };
        let program = c(program.as_os_str().as_bytes())?;
        let mut argv_strings = vec![program.clone()];
        for arg in args {
            argv_strings.push(c(arg.as_bytes())?);
        }
        let mut var_strings = Vec::new();
        for (key, value) in vars {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            var_strings.push(c(&entry)?);
        }
        let mut pid_slot = listen_pid.then(|| Box::new([0u8; PID_SLOT]));
        let mut argv: Vec<usize> = argv_strings.iter().map(|s| s.as_ptr() as usize).collect();
        argv.push(0);
        let mut envp: Vec<usize> = var_strings.iter().map(|s| s.as_ptr() as usize).collect();
        if let Some(slot) = &mut pid_slot {
            slot[..PID_PREFIX.len()].copy_from_slice(PID_PREFIX);
            envp.push(slot.as_ptr() as usize);
        }
        envp.push(0);
        Ok(ExecImage {
            program,
            _args: argv_strings,
            _vars: var_strings,
            pid_slot,
            argv,
            envp,
        })
    }
}

/// Sets the last step of the child: map `fds` to 3, 4, …, write `LISTEN_PID`, exec.
fn exec_with_listen_pid(command: &mut Command, mut image: ExecImage, fds: Vec<RawFd>) {
    let mut moved: Vec<RawFd> = vec![-1; fds.len()];
    // SAFETY: the closure runs in the forked child before exec; `exec_in_child` allocates
    // nothing and makes only async-signal-safe calls (see there). The closure owns `image`
    // whole (a method call, not a field use, so the strings `argv`/`envp` point into are
    // captured too and alive until execve).
    unsafe {
        command.pre_exec(move || Err(image.exec_in_child(&fds, &mut moved)));
    }
}

impl ExecImage {
    /// In the forked child: maps `fds` to 3, 4, …, writes the pid into `LISTEN_PID`, and
    /// execs. Returns only on failure. Allocates nothing; calls only fcntl, dup2, getpid,
    /// pthread_sigmask, signal and execve (async-signal-safe).
    ///
    /// # Safety
    /// Only between fork and exec, in the child.
    unsafe fn exec_in_child(&mut self, fds: &[RawFd], moved: &mut [RawFd]) -> io::Error {
        use nix::libc;
        let first: RawFd = 3;
        let count = fds.len() as RawFd;
        // SAFETY: plain system calls on descriptors and on buffers this struct owns, in the
        // child between fork and exec (the caller's contract).
        unsafe {
            // Two steps, so a source already sitting at a target number is not clobbered:
            // copies above the targets first (close-on-exec), then dup2 down (which clears
            // close-on-exec on the targets).
            for (i, fd) in fds.iter().enumerate() {
                let copy = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first + count);
                if copy < 0 {
                    return io::Error::last_os_error();
                }
                moved[i] = copy;
            }
            for (i, copy) in moved.iter().enumerate() {
                if libc::dup2(*copy, first + i as RawFd) < 0 {
                    return io::Error::last_os_error();
                }
            }
            if let Some(slot) = &mut self.pid_slot {
                write_decimal(&mut slot[PID_PREFIX.len()..], libc::getpid() as u32);
            }
            // A clean start, as std gives any child: nothing blocked, SIGPIPE default.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr() as *const *const libc::c_char,
                self.envp.as_ptr() as *const *const libc::c_char,
            );
        }
        io::Error::last_os_error()
    }
}

/// Writes `value` in decimal followed by a NUL into `out` (no allocation).
fn write_decimal(out: &mut [u8], mut value: u32) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    out[n] = 0;
}

/// A worker's `NOTIFY_SOCKET`: a datagram socket the master binds in a private directory;
/// its file is removed when dropped.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(id: u32, uid: Option<u32>) -> io::Result<NotifySocket> {
        let dir = notify_dir()?;
        let nonce = {
            use std::hash::BuildHasher;
            std::hash::RandomState::new().hash_one((id, Instant::now())) as u32
        };
        let path = dir.join(format!("w{id}-{nonce:08x}.sock"));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        socket.set_nonblocking(true)?;
        // Only the worker may write to it (connecting needs write permission).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&path, Some(uid), None)?;
        }
        Ok(NotifySocket { path, socket })
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The master's directory of notify sockets (mode 0711: workers of another uid reach their
/// own socket by name, nobody lists them).
fn notify_dir() -> io::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("cluster-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)))
            .map_err(|e| format!("notify socket directory {}: {e}", dir.display()))?;
        Ok(dir)
    })
    .clone()
    .map_err(io::Error::other)
}

/// SIGTERM now, SIGKILL at `deadline` if it is still running (a foreign worker's
/// disconnect).
pub(crate) fn terminate(worker: Worker, deadline: Duration) {
    worker.signal(Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(deadline).await;
        if !worker.is_dead() {
            tracing::warn!(
                id = worker.id(),
                pid = worker.pid(),
                "worker {} (pid {}) still running {deadline:?} after SIGTERM; SIGKILL",
                worker.id(),
                worker.pid()
            );
            worker.signal(Signal::SIGKILL);
        }
    });
}

/// A foreign worker's task: readiness (notify or timer), heartbeats, and its end.
async fn supervise(
    shared: Arc<Shared>,
    worker: Worker,
    mut child: Child,
    notify: Option<NotifySocket>,
    ready: Readiness,
) {
    let after = match ready {
        Readiness::After(after) => Some(after),
        Readiness::Notify => None,
    };
    let timer = tokio::time::sleep(after.unwrap_or(Duration::MAX));
    tokio::pin!(timer);
    let mut timer_armed = after.is_some();
    let datagrams = notify.as_ref().and_then(|n| {
        n.socket
            .try_clone()
            .and_then(tokio::net::UnixDatagram::from_std)
            .inspect_err(|e| tracing::error!(id = worker.id(), "notify socket: {e}"))
            .ok()
    });
    let mut buf = vec![0u8; 4096];
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut timer, if timer_armed => {
                timer_armed = false;
                became_ready(&shared, &worker);
            }
            received = async {
                match &datagrams {
                    Some(socket) => socket.recv(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => match received {
                Ok(n) => notified(&shared, &worker, ready, &buf[..n]),
                Err(e) => tracing::debug!(id = worker.id(), "notify socket: {e}"),
            },
        }
    };
    drop(datagrams);
    drop(notify);
    crate::supervise::finish(&shared, &worker, status, true).await;
}

/// One `sd_notify` datagram: newline-separated `KEY=VALUE` assignments.
fn notified(shared: &Shared, worker: &Worker, ready: Readiness, datagram: &[u8]) {
    for line in datagram.split(|b| *b == b'\n') {
        match line {
            b"READY=1" if ready == Readiness::Notify => became_ready(shared, worker),
            b"WATCHDOG=1" => worker.record_heartbeat(Instant::now(), WorkerLoad::default()),
            _ => {}
        }
    }
}

fn became_ready(shared: &Shared, worker: &Worker) {
    if worker.state() >= WorkerState::Disconnecting {
        return;
    }
    worker.advance(WorkerState::Listening);
    if worker.mark_ready() {
        shared.boot_guard.ready();
        tracing::debug!(id = worker.id(), pid = worker.pid(), "foreign worker ready");
        shared.events.emit(Event::Ready(worker.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_pids_end_with_nul() {
        let mut out = [0xffu8; 12];
        write_decimal(&mut out, 0);
        assert_eq!(&out[..2], b"0\0");
        write_decimal(&mut out, 4_194_304);
        assert_eq!(&out[..8], b"4194304\0");
        write_decimal(&mut out, u32::MAX);
        assert_eq!(&out[..11], b"4294967295\0");
    }

    #[test]
    fn socket_names_follow_systemd() {
        assert!(check_name("http").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name("with space").is_err());
        assert!(check_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn bad_addresses_and_modes_are_refused() {
        let mut bad =
            Settings::new().foreign(Foreign::new(Readiness::Notify).listen("a", "nowhere"));
        assert_eq!(validate(&mut bad).unwrap_err().setting, "listen");
        let mut rr = Settings::new()
            .scheduling(Scheduling::RoundRobin)
            .foreign(Foreign::new(Readiness::Notify));
        assert_eq!(validate(&mut rr).unwrap_err().setting, "scheduling");
        let mut fine = Settings::new().foreign(
            Foreign::new(Readiness::Notify)
                .listen("a", "127.0.0.1:0")
                .listen("b", "unix:/tmp/x.sock"),
        );
        assert!(validate(&mut fine).is_ok());
        assert!(fine.wait_ready);
    }
}
