//! The master's handle on one worker process (Node's `Worker` in the primary).

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cluster_ipc::{Control, SendError, Sender};

use crate::listen_quota::ListenQuota;
use crate::signal::Signal;
use nix::unistd::Pid;
use serde::Serialize;

use crate::exit_reason::ExitReason;
use crate::replace::ReplaceReason;
use crate::worker_events::{WorkerEvent, WorkerEvents, WorkerLog};

/// Where a worker is in its life, as the master sees it. States only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerState {
    /// Forked; its runtime has not said it is online yet.
    None,
    /// Its runtime is up (the `online` event).
    Online,
    /// At least one of its servers accepts connections (the `listening` event).
    Listening,
    /// It is closing its servers and finishing its work.
    Disconnecting,
    /// Its channel is closed (the `disconnect` event).
    Disconnected,
    /// It has exited and been reaped (the `exit` event).
    Dead,
}

/// What a worker reported serving, with its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerLoad {
    /// Requests served since it started (accepted connections, if its server counts no
    /// requests).
    pub served: u64,
    /// Connections its servers hold now (those that report them: `graceful::serve`).
    pub open_connections: u64,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that killed it, otherwise.
    pub signal: Option<Signal>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

struct Status {
    state: WorkerState,
    exited_after_disconnect: bool,
    leaving_emitted: bool,
    disconnect_emitted: bool,
    ready: bool,
    addresses: Vec<SocketAddr>,
    exit: Option<Exit>,
    /// Why it left, when the master knows more than the exit status.
    exit_reason: Option<ExitReason>,
    /// Taken at exit, so the channel's descriptor closes with the process.
    sender: Option<Sender>,
    /// When its last heartbeat was read; the watchdog ignores it until the first.
    last_beat: Option<Instant>,
    /// The load its last heartbeat reported.
    load: Option<WorkerLoad>,
    /// Why the master replaces it, once it does.
    replaced: Option<ReplaceReason>,
    /// The master's code asked it to go ([`Worker::disconnect`], [`Worker::kill`]): the
    /// default respawn does not replace it.
    ended_by_master: bool,
    /// When it first listened, and when it said it was ready.
    listening_at: Option<Instant>,
    ready_at: Option<Instant>,
}

struct Inner {
    id: u32,
    pid: u32,
    /// The environment `fork` added for it, so a reload can start its like.
    fork_env: Vec<(String, String)>,
    forked_at: Instant,
    status: Mutex<Status>,
    listen_quota: ListenQuota,
    /// Round-robin hand-overs it left unanswered past the dispatch timeout.
    missed_handovers: AtomicU64,
    /// Its own events, for [`Worker::events`] and [`Worker::on`].
    log: WorkerLog,
    /// How long a [`Worker::kill`] with a catchable signal waits before SIGKILL (the
    /// cluster's `stop_timeout` when it was forked).
    kill_timeout: Duration,
    /// True once it is reaped.
    dead: tokio::sync::watch::Sender<bool>,
    /// The TCP sockets it was granted, as `(requested address, index)`: its replacement gets
    /// them with its handoff (`handed_sockets.rs`).
    granted_tcp: Mutex<Vec<(String, u32)>>,
    /// A foreign program (`foreign.rs`): no channel; `disconnect` is SIGTERM, then SIGKILL
    /// after this long.
    foreign_stop: Option<Duration>,
}

/// A worker process, seen from the master. Cheap to clone.
///
/// ```no_run
/// # async fn demo(cluster: cluster_core::Cluster) -> Result<(), Box<dyn std::error::Error>> {
/// let worker = cluster.fork(&[])?;
/// worker.send(&("reload-config", 42u32)).await?;
/// worker.disconnect();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    pub(crate) fn new(
        id: u32,
        pid: u32,
        fork_env: Vec<(String, String)>,
        sender: Sender,
        kill_timeout: Duration,
    ) -> Self {
        Self::with(id, pid, fork_env, Some(sender), None, kill_timeout)
    }

    /// A foreign program's worker: no channel; [`Worker::disconnect`] sends SIGTERM and
    /// SIGKILL after `stop_timeout`.
    pub(crate) fn new_foreign(
        id: u32,
        pid: u32,
        fork_env: Vec<(String, String)>,
        stop_timeout: Duration,
    ) -> Self {
        Self::with(id, pid, fork_env, None, Some(stop_timeout), stop_timeout)
    }

    fn with(
        id: u32,
        pid: u32,
        fork_env: Vec<(String, String)>,
        sender: Option<Sender>,
        foreign_stop: Option<Duration>,
        kill_timeout: Duration,
    ) -> Self {
        Worker {
            inner: Arc::new(Inner {
                id,
                pid,
                fork_env,
                forked_at: Instant::now(),
                status: Mutex::new(Status {
                    state: WorkerState::None,
                    exited_after_disconnect: false,
                    leaving_emitted: false,
                    disconnect_emitted: false,
                    ready: false,
                    addresses: Vec::new(),
                    exit: None,
                    exit_reason: None,
                    sender,
                    last_beat: None,
                    load: None,
                    replaced: None,
                    ended_by_master: false,
                    listening_at: None,
                    ready_at: None,
                }),
                listen_quota: ListenQuota::default(),
                missed_handovers: AtomicU64::new(0),
                log: WorkerLog::new(),
                kill_timeout,
                dead: tokio::sync::watch::Sender::new(false),
                granted_tcp: Mutex::new(Vec::new()),
                foreign_stop,
            }),
        }
    }

    /// The worker's id: 1 for the first forked, then 2, 3…
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The environment variables [`crate::Cluster::fork`] added for this worker.
    pub fn fork_env(&self) -> &[(String, String)] {
        &self.inner.fork_env
    }

    /// Where the worker is in its life.
    pub fn state(&self) -> WorkerState {
        self.status().state
    }

    /// True while its channel is open: false from its `disconnect` event on (inside the
    /// handlers too), as in Node.
    pub fn is_connected(&self) -> bool {
        self.state() < WorkerState::Disconnected
    }

    /// True once it has exited.
    pub fn is_dead(&self) -> bool {
        self.state() == WorkerState::Dead
    }

    /// True when the worker went away on purpose: `disconnect()` was called on either side
    /// (also what the worker runtime does on SIGTERM), as Node's `exitedAfterDisconnect`.
    /// An `exit` with this false is a crash or a kill.
    pub fn exited_after_disconnect(&self) -> bool {
        self.status().exited_after_disconnect
    }

    /// How it ended, once it has.
    pub fn exit_status(&self) -> Option<Exit> {
        self.status().exit
    }

    /// Why the master replaced this worker on purpose (the watchdog found it unresponsive,
    /// or it was recycled), if it did. Its exit is then never a crash, whatever its status.
    pub fn replace_reason(&self) -> Option<ReplaceReason> {
        self.status().replaced
    }

    /// Records the reason it is replaced; returns the previous one.
    pub(crate) fn replace_with(&self, reason: ReplaceReason) -> Option<ReplaceReason> {
        let mut status = self.status();
        status
            .exit_reason
            .get_or_insert(ExitReason::Replaced(reason));
        status.replaced.replace(reason)
    }

    /// When it was forked.
    pub(crate) fn forked_at(&self) -> Instant {
        self.inner.forked_at
    }

    pub(crate) fn record_heartbeat(&self, at: Instant, load: WorkerLoad) {
        let mut status = self.status();
        status.last_beat = Some(at);
        status.load = Some(load);
    }

    /// Its load as its last heartbeat reported it (every fifth of the heartbeat timeout);
    /// `None` before the first, or with heartbeats off.
    pub fn load(&self) -> Option<WorkerLoad> {
        self.status().load
    }

    /// When its last heartbeat was read, if one was.
    pub(crate) fn last_beat(&self) -> Option<Instant> {
        self.status().last_beat
    }

    /// Why it left (or is leaving), when the master knows more than its exit status: a
    /// panic's message and location, a scale-down, a reload, a stop.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.status().exit_reason.clone()
    }

    /// Records why the worker is leaving; the first reason stays.
    pub(crate) fn set_exit_reason(&self, reason: ExitReason) {
        self.status().exit_reason.get_or_insert(reason);
    }

    /// How long ago it was forked.
    pub fn uptime(&self) -> Duration {
        self.inner.forked_at.elapsed()
    }

    /// Sends a message to the worker's code (it receives it with `Worker::recv` in
    /// `cluster-worker`).
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), SendError> {
        let sender = self.sender().ok_or(SendError::Closed)?;
        sender.send(message).await
    }

    /// Sends a message with descriptors to the worker (Node's `worker.send(message,
    /// sendHandle)`): an accepted connection, a listener, any open descriptor. The worker
    /// gets its own copies, close-on-exec, from the received message's
    /// [`take_fds`](cluster_ipc::Message::take_fds); the master keeps (and may close) its
    /// own. At most [`cluster_ipc::MAX_FDS_PER_MESSAGE`]: more is
    /// [`SendError::TooManyFds`], and a worker whose channel is closed gives
    /// [`SendError::Closed`]; either way nothing is sent.
    ///
    /// ```no_run
    /// # async fn demo(worker: cluster_core::Worker, client: std::net::TcpStream) -> Result<(), cluster_core::SendError> {
    /// use std::os::fd::AsFd;
    /// worker.send_with(&"serve this client", &[client.as_fd()]).await?;
    /// drop(client); // the worker holds its own descriptor now
    /// # Ok(()) }
    /// ```
    pub async fn send_with<T: Serialize + ?Sized>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        let sender = self.sender().ok_or(SendError::Closed)?;
        sender.send_with(message, fds).await
    }

    /// Asks the worker to disconnect gracefully: it stops accepting, finishes its
    /// connections and exits. Its exit is then not treated as a crash, and the default
    /// [`crate::Respawn`] does not replace it.
    ///
    /// A foreign program (see [`crate::foreign`]) gets SIGTERM instead, and SIGKILL if it is
    /// still running after the stop timeout.
    pub fn disconnect(&self) {
        self.status().ended_by_master = true;
        self.request_disconnect();
    }

    /// [`Worker::disconnect`] for the master's own reasons (stop, reload, recycling), which
    /// it records elsewhere.
    pub(crate) fn request_disconnect(&self) {
        if let Some(deadline) = self.inner.foreign_stop {
            if self.begin_disconnect() {
                crate::foreign::terminate(self.clone(), deadline);
            }
            return;
        }
        let Some(sender) = self.sender() else { return };
        if !self.begin_disconnect() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = sender.send_control(&Control::Disconnect, &[]).await {
                tracing::debug!("disconnect request not delivered: {e}");
            }
        });
    }

    /// Marks it as leaving on purpose; false if it already was.
    fn begin_disconnect(&self) -> bool {
        let mut status = self.status();
        if status.state >= WorkerState::Disconnecting {
            return false;
        }
        status.exited_after_disconnect = true;
        status.state = WorkerState::Disconnecting;
        true
    }

    /// Sends `signal` to the worker process (Node's `worker.kill(signal)`; [`Worker::terminate`]
    /// is `kill(SIGTERM)`, Node's default). Does nothing once it is dead.
    ///
    /// A signal that ends the worker marks it as ended by the master's code: the default
    /// [`crate::Respawn`] does not replace it. As in Node, a kill is not a disconnect:
    /// [`Worker::exited_after_disconnect`] stays false and the exit carries the signal
    /// (except SIGTERM, below). SIGUSR1, SIGCONT, SIGSTOP and SIGTSTP do not end it and mark
    /// nothing.
    ///
    /// The worker runtime turns SIGTERM (and SIGINT, SIGHUP…, whatever it catches) into a
    /// graceful drain, which a worker whose runtime is blocked never runs: so if it is still
    /// alive `stop_timeout` ([`crate::Settings::stop_timeout`]) after a signal other than
    /// SIGKILL, the master sends SIGKILL. A worker always ends after `kill`.
    pub fn kill(&self, signal: Signal) {
        let ends = !matches!(
            signal,
            Signal::SIGUSR1 | Signal::SIGCONT | Signal::SIGSTOP | Signal::SIGTSTP
        );
        if ends {
            self.status().ended_by_master = true;
        }
        self.signal(signal);
        if ends && signal != Signal::SIGKILL && !self.is_dead() {
            self.kill_after(self.inner.kill_timeout);
        }
    }

    /// Ends the worker the way Node's `worker.kill()` does by default: SIGTERM, which the
    /// worker runtime turns into a graceful drain, then SIGKILL if it is still alive after
    /// `stop_timeout` (a blocked runtime). See [`Worker::kill`]. A worker that drained
    /// exits with code 0 and [`Worker::exited_after_disconnect`] true (Node: signal
    /// SIGTERM, false), one that had to be killed with signal SIGKILL.
    pub fn terminate(&self) {
        self.kill(Signal::SIGTERM);
    }

    /// Sends SIGKILL if the worker has not exited `after` from now.
    pub(crate) fn kill_after(&self, after: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(pid = self.inner.pid, "no runtime: no SIGKILL escalation");
            return;
        };
        let worker = self.clone();
        let mut dead = self.inner.dead.subscribe();
        runtime.spawn(async move {
            if tokio::time::timeout(after, dead.wait_for(|d| *d))
                .await
                .is_err()
            {
                tracing::warn!(
                    id = worker.id(),
                    pid = worker.pid(),
                    ?after,
                    "worker {} still alive after kill; sending SIGKILL",
                    worker.id()
                );
                worker.signal(Signal::SIGKILL);
            }
        });
    }

    /// Waits until it has exited and been reaped.
    pub async fn exited(&self) {
        let mut dead = self.inner.dead.subscribe();
        let _ = dead.wait_for(|d| *d).await;
    }

    /// Every event of this worker, in order, from its fork to its exit, whether or not
    /// [`crate::Cluster::run`] is awaited; the stream ends after `Exit`. What happened before
    /// this call is replayed first: its lifecycle events, and the messages it sent before
    /// anybody asked for its events (see `worker_events.rs`).
    ///
    /// ```no_run
    /// # async fn demo(cluster: cluster_core::Cluster) -> Result<(), Box<dyn std::error::Error>> {
    /// use cluster_core::WorkerEvent;
    /// let worker = cluster.fork(&[])?;
    /// let mut events = worker.events();
    /// while let Some(event) = events.next().await {
    ///     if let WorkerEvent::Exit(exit) = event {
    ///         eprintln!("worker {} exited with {exit}", worker.id());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> WorkerEvents {
        self.inner.log.subscribe()
    }

    /// Calls `callback` for every event of this worker (Node's `worker.on(...)`), in order,
    /// one at a time, on a task of the master's runtime: [`crate::Cluster::run`] need not
    /// be awaited. Replays what happened before, like [`Worker::events`].
    pub fn on(&self, callback: impl FnMut(&Worker, &WorkerEvent) + Send + 'static) {
        self.inner.log.register(self, Box::new(callback));
    }

    /// Calls `callback` when its runtime is up (Node's `worker.on('online')`).
    pub fn on_online(&self, mut callback: impl FnMut(&Worker) + Send + 'static) {
        self.on(move |w, e| {
            if let WorkerEvent::Online = e {
                callback(w)
            }
        });
    }

    /// Calls `callback` when one of its servers accepts on a TCP address (Node's
    /// `worker.on('listening')`).
    pub fn on_listening(&self, mut callback: impl FnMut(&Worker, SocketAddr) + Send + 'static) {
        self.on(move |w, e| {
            if let WorkerEvent::Listening(a) = e {
                callback(w, *a)
            }
        });
    }

    /// Calls `callback` for every message its code sends (Node's `worker.on('message')`).
    pub fn on_message(
        &self,
        mut callback: impl FnMut(&Worker, &cluster_ipc::Message) + Send + 'static,
    ) {
        self.on(move |w, e| {
            if let WorkerEvent::Message(m) = e {
                callback(w, m)
            }
        });
    }

    /// Calls `callback` when it starts going away (see [`crate::Event::Leaving`]): the time
    /// to fork its replacement.
    pub fn on_leaving(&self, mut callback: impl FnMut(&Worker) + Send + 'static) {
        self.on(move |w, e| {
            if let WorkerEvent::Leaving = e {
                callback(w)
            }
        });
    }

    /// Calls `callback` when its channel is closed (Node's `worker.on('disconnect')`):
    /// after its servers closed, or because it died. [`Worker::is_connected`] is false.
    pub fn on_disconnect(&self, mut callback: impl FnMut(&Worker) + Send + 'static) {
        self.on(move |w, e| {
            if let WorkerEvent::Disconnect = e {
                callback(w)
            }
        });
    }

    /// Calls `callback` when it has exited (Node's `worker.on('exit')`).
    pub fn on_exit(&self, mut callback: impl FnMut(&Worker, Exit) + Send + 'static) {
        self.on(move |w, e| {
            if let WorkerEvent::Exit(x) = e {
                callback(w, *x)
            }
        });
    }

    /// Records one of its events (the cluster's event bus calls this, in order).
    pub(crate) fn record(&self, event: WorkerEvent) {
        self.inner.log.record(event);
    }

    /// Sends `signal` for the master's own reasons (a protocol violation, the watchdog, a
    /// stop), which it records elsewhere.
    pub(crate) fn signal(&self, signal: Signal) {
        let status = self.status();
        if status.state == WorkerState::Dead {
            return;
        }
        let Some(raw) = signal.to_nix() else {
            tracing::debug!(pid = self.inner.pid, "kill({signal}): not a signal");
            return;
        };
        if let Err(e) = nix::sys::signal::kill(Pid::from_raw(self.inner.pid as i32), raw) {
            tracing::debug!(pid = self.inner.pid, "kill({signal}): {e}");
        }
    }

    /// Delivers a message another worker sent through the master.
    pub(crate) async fn deliver(
        &self,
        from_group: Option<String>,
        from_pid: u32,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let sender = self.sender().ok_or(SendError::Closed)?;
        let deliver = Control::Deliver {
            from_group,
            from_pid,
            payload: payload.to_vec(),
        };
        sender.send_control(&deliver, &[]).await
    }

    /// Round-robin hand-overs this worker left unanswered past the dispatch timeout
    /// ([`crate::Settings::dispatch_timeout`]): each was taken back and given to another
    /// worker. A count that grows means its runtime is stuck, a hang watchdog's signal.
    pub fn missed_handovers(&self) -> u64 {
        self.inner.missed_handovers.load(Ordering::Relaxed)
    }

    /// Counts one missed hand-over; returns the new count.
    pub(crate) fn record_missed_handover(&self) -> u64 {
        self.inner.missed_handovers.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn sender(&self) -> Option<Sender> {
        self.status().sender.clone()
    }

    /// True once the master's code asked it to go ([`Worker::disconnect`], [`Worker::kill`]).
    pub(crate) fn ended_by_master(&self) -> bool {
        self.status().ended_by_master
    }

    /// When it became ready: its `ready()` with `wait_ready`, else its first `listening`.
    pub(crate) fn ready_at(&self, wait_ready: bool) -> Option<Instant> {
        let status = self.status();
        if wait_ready {
            status.ready_at
        } else {
            status.listening_at.or(status.ready_at)
        }
    }

    /// Moves the state forward (never back).
    pub(crate) fn advance(&self, state: WorkerState) {
        let mut status = self.status();
        if state == WorkerState::Listening && status.listening_at.is_none() {
            status.listening_at = Some(Instant::now());
        }
        if state > status.state {
            status.state = state;
        }
    }

    pub(crate) fn mark_exited_after_disconnect(&self) {
        self.status().exited_after_disconnect = true;
    }

    /// Records that the worker said it is ready; true the first time.
    pub(crate) fn mark_ready(&self) -> bool {
        let mut status = self.status();
        status.ready_at.get_or_insert_with(Instant::now);
        !std::mem::replace(&mut status.ready, true)
    }

    /// True once the worker has said it is ready to serve.
    pub fn is_ready(&self) -> bool {
        self.status().ready
    }

    /// True the first time only: the `leaving` event is emitted once per worker.
    pub(crate) fn take_leaving_event(&self) -> bool {
        !std::mem::replace(&mut self.status().leaving_emitted, true)
    }

    /// True the first time only: the `disconnect` event is emitted once per worker.
    pub(crate) fn take_disconnect_event(&self) -> bool {
        !std::mem::replace(&mut self.status().disconnect_emitted, true)
    }

    pub(crate) fn add_address(&self, address: SocketAddr) {
        let mut status = self.status();
        if !status.addresses.contains(&address) {
            status.addresses.push(address);
        }
    }

    /// The addresses this worker made the master listen on, bounded by
    /// `max_listens_per_worker`.
    /// Remembers that it was granted the TCP socket for `requested` with `index`.
    pub(crate) fn record_granted_tcp(&self, requested: &str, index: u32) {
        let mut granted = self
            .inner
            .granted_tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !granted.iter().any(|(r, i)| r == requested && *i == index) {
            granted.push((requested.to_string(), index));
        }
    }

    /// The TCP sockets it was granted, `(requested address, index)`, in the order asked.
    pub(crate) fn granted_tcp(&self) -> Vec<(String, u32)> {
        self.inner
            .granted_tcp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn listen_quota(&self) -> &ListenQuota {
        &self.inner.listen_quota
    }

    /// The addresses its servers reported listening on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.status().addresses.clone()
    }

    pub(crate) fn mark_dead(&self, exit: Exit) {
        let mut status = self.status();
        status.state = WorkerState::Dead;
        status.exit = Some(exit);
        if let Some(sender) = status.sender.take() {
            sender.close();
        }
        drop(status);
        self.inner.dead.send_replace(true);
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        // The lock guards plain data and no code panics while holding it.
        self.inner
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.id)
            .field("pid", &self.inner.pid)
            .field("state", &self.state())
            .finish()
    }
}
