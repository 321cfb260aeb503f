//! Starting worker processes: fork+exec from one long-lived thread.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so every worker
//! is forked by the spawner thread, which lives as long as the cluster. The thread enters
//! the runtime so tokio reaps the children.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;

use cluster_ipc::handoff::CHANNEL_FD;

struct Request {
    command: Command,
    reply: Reply,
}

/// Where the spawner thread sends the started child: to a caller blocked on it, or to a
/// task awaiting it.
enum Reply {
    Blocking(mpsc::SyncSender<io::Result<Child>>),
    Async(tokio::sync::oneshot::Sender<io::Result<Child>>),
}

impl Reply {
    /// The requester may have given up; nothing to do then.
    fn send(self, result: io::Result<Child>) {
        match self {
            Reply::Blocking(tx) => drop(tx.send(result)),
            Reply::Async(tx) => drop(tx.send(result)),
        }
    }
}

fn spawner_gone() -> io::Error {
    io::Error::other("the cluster's spawner thread is gone")
}

/// The handle to the spawner thread; the thread ends when this is dropped.
pub(crate) struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    pub(crate) fn start(runtime: Handle) -> io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("cluster-spawner".into())
            .spawn(move || {
                let _entered = runtime.enter();
                for mut request in incoming {
                    // Recorded under the reaper's lock: as PID 1 it must not take a worker
                    // that dies at once for an orphan (`init.rs`).
                    let result = crate::init::spawn_tracked(|| request.command.spawn(), Child::id);
                    request.reply.send(result);
                }
            })?;
        Ok(Spawner { requests })
    }

    /// Starts `command` with `channel_end` as the child's descriptor [`CHANNEL_FD`], and
    /// `inherited` (none of them [`CHANNEL_FD`]) under their own numbers, no longer
    /// close-on-exec in the child (the master's copies keep the flag).
    pub(crate) fn spawn(
        &self,
        mut command: Command,
        channel_end: &OwnedFd,
        inherited: Vec<RawFd>,
    ) -> io::Result<Child> {
        prepare_child(&mut command, channel_end.as_raw_fd(), inherited);
        self.spawn_prepared(command)
    }

    /// [`Spawner::spawn`] without blocking the calling thread: the task awaits the spawner
    /// thread's answer. If the future is dropped once the request is made, the worker is
    /// started all the same and, with its channel closed, exits as an orphan does.
    pub(crate) async fn spawn_async(
        &self,
        mut command: Command,
        channel_end: &OwnedFd,
        inherited: Vec<RawFd>,
    ) -> io::Result<Child> {
        prepare_child(&mut command, channel_end.as_raw_fd(), inherited);
        let (reply, result) = tokio::sync::oneshot::channel();
        self.request(command, Reply::Async(reply))?;
        result.await.map_err(|_| spawner_gone())?
    }

    /// Starts `command` as it is (its `pre_exec` closures already set, see [`detach`]).
    pub(crate) fn spawn_prepared(&self, command: Command) -> io::Result<Child> {
        let (reply, result) = mpsc::sync_channel(1);
        self.request(command, Reply::Blocking(reply))?;
        result.recv().map_err(|_| spawner_gone())?
    }

    /// Hands `command` to the spawner thread, which answers on `reply`.
    fn request(&self, command: Command, reply: Reply) -> io::Result<()> {
        self.requests
            .send(Request { command, reply })
            .map_err(|_| spawner_gone())
    }
}

/// Sets what runs in the child between fork and exec: die with the master, leave the
/// master's process group, and map the channel end to its fixed number.
fn prepare_child(command: &mut Command, channel_end: RawFd, inherited: Vec<RawFd>) {
    detach(command);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (dup2, fcntl); it allocates nothing (`inherited` was
    // allocated before the fork and is only read).
    unsafe {
        command.pre_exec(move || {
            use nix::libc;
            if channel_end == CHANNEL_FD {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                if libc::fcntl(CHANNEL_FD, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(channel_end, CHANNEL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The handed sockets keep their numbers; exec must not close them.
            for &fd in &inherited {
                if fd != CHANNEL_FD && libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The first thing every worker does between fork and exec: die with the master (SIGTERM)
/// and leave the master's process group.
pub(crate) fn detach(command: &mut Command) {
    let master_pid = std::process::id() as nix::libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid, setpgid, _exit); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            use nix::libc;
            // Die with the master: SIGTERM lets the worker drain; the channel's EOF says
            // the same if the signal is caught.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died before prctl took effect.
            if libc::getppid() != master_pid {
                libc::_exit(1);
            }
            // A process group of its own: a signal sent to the master's group (Ctrl-C in a
            // terminal, `kill -TERM -PGID`) reaches the master only, which then stops the
            // workers in order instead of racing them.
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What every worker process gets from the settings, whatever it runs: its directory, uid
/// and gid (with no supplementary groups), stdin from `/dev/null`, stdout and stderr as
/// [`crate::Settings::stdio`] says, and killed if the master drops it unreaped.
pub(crate) fn apply_settings(command: &mut Command, settings: &crate::Settings) {
    if let Some(cwd) = &settings.cwd {
        command.current_dir(cwd);
    }
    if let Some(uid) = settings.uid {
        command.uid(uid);
    }
    if let Some(gid) = settings.gid {
        command.gid(gid);
        if settings.uid.is_none() {
            drop_supplementary_groups(command);
        }
    }
    command.stdin(std::process::Stdio::null());
    let (stdout, stderr) = match settings.stdio {
        crate::Stdio::Inherit => (
            std::process::Stdio::inherit(),
            std::process::Stdio::inherit(),
        ),
        crate::Stdio::Null => (std::process::Stdio::null(), std::process::Stdio::null()),
        crate::Stdio::Forward => (std::process::Stdio::piped(), std::process::Stdio::piped()),
    };
    command.stdout(stdout).stderr(stderr);
    command.kill_on_drop(true);
}

/// Clears the worker's supplementary groups when only its gid is switched. (With a uid,
/// std's `Command::uid` already calls `setgroups(0)` before `setuid`; a `pre_exec` closure
/// runs after that, too late to do it as root.)
pub(crate) fn drop_supplementary_groups(command: &mut Command) {
    // SAFETY: setgroups is async-signal-safe and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if nix::libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
