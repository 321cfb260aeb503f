//! The master: settings, the worker table, fork, callbacks, stopping, and the run loop.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::signal::Signal;
use cluster_ipc::handoff::{CHANNEL_FD, WorkerHandoff};
use cluster_ipc::{ChannelOptions, Grant, Message};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use crate::callbacks::Callbacks;
use crate::error::{ForkError, RunError, SetupError};
use crate::events::{Event, EventBus, EventStream};
use crate::handover::Handovers;
use crate::listeners::Listeners;
use crate::monitor::Monitor;
use crate::output::Stdio;
use crate::refuse::Refusal;
use crate::round_robin::Dispatcher;
use crate::settings::{Scheduling, Settings, SettingsError};
use crate::signals::{MasterSignals, SignalRequest};
use crate::spawn::Spawner;
use crate::supervise::supervise;
use crate::worker::{Exit, Worker};

/// Where the master is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Forking and supervising workers.
    Running,
    /// Stopping: no new workers; the running ones are disconnecting (graceful) or being
    /// killed (fast).
    Stopping,
    /// Every worker has exited after a stop.
    Stopped,
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopMode {
    /// Disconnect every worker and wait up to `stop_timeout` for them to finish, then kill
    /// the rest.
    Graceful,
    /// Kill every worker now (SIGKILL).
    Fast,
}

pub(crate) struct Shared {
    settings: Mutex<Settings>,
    next_id: AtomicU32,
    workers: Mutex<BTreeMap<u32, Worker>>,
    live: watch::Sender<usize>,
    phase: watch::Sender<Phase>,
    stop_requested: watch::Sender<Option<StopMode>>,
    pub(crate) listeners: Listeners,
    refusal: Refusal,
    pub(crate) handovers: Handovers,
    pub(crate) monitor: Monitor,
    dispatchers: Mutex<HashMap<SocketAddr, Arc<Dispatcher>>>,
    pub(crate) events: EventBus,
    callbacks: Callbacks<Cluster, Event>,
    callback_queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    spawner: Spawner,
    runtime: tokio::runtime::Handle,
    /// Installed by `setup_master`, before the first fork; taken by `run`.
    signals: Mutex<Option<MasterSignals>>,
    reloading: AtomicBool,
    /// Woken when a reload ends (the systemd notifier's cue, `systemd.rs`).
    reload_ended: Arc<tokio::sync::Notify>,
    /// Old worker id → the replacement a reload forked for it (see `rolling.rs`).
    replacements: Mutex<HashMap<u32, Worker>>,
    /// The worker whose `disconnect` or `exit` callbacks are running.
    dispatching_for: Mutex<Option<u32>>,
    /// The soft `RLIMIT_NOFILE` set at start-up, which workers inherit.
    pub(crate) nofile_limit: std::sync::atomic::AtomicU64,
    /// Workers that died before they were ready (see `boot_failures.rs`).
    pub(crate) boot_guard: crate::boot_failures::BootGuard,
    /// The default replacement recipe's memory (see `respawn.rs`).
    pub(crate) respawner: Mutex<crate::respawn::Respawner>,
    /// The live-connection table the workers share (see `load_slots.rs`).
    pub(crate) load_slots: Arc<crate::load_slots::LoadSlots>,
}

impl Shared {
    pub(crate) fn settings(&self) -> MutexGuard<'_, Settings> {
        lock(&self.settings)
    }

    /// The backlog, and how workers get their connections.
    pub(crate) fn listen_settings(&self) -> (i32, Grant) {
        let settings = self.settings();
        let grant = match settings.scheduling {
            Scheduling::Shared => Grant::Shared,
            Scheduling::ReusePort { .. } => Grant::ReusePort,
            // Sticky: the master chooses the worker differently, the worker takes it alike.
            Scheduling::RoundRobin | Scheduling::Sticky => Grant::RoundRobin,
        };
        (settings.backlog, grant)
    }

    /// The round-robin dispatcher of `address`, started with `listener` if it is new.
    pub(crate) fn dispatcher(
        &self,
        address: SocketAddr,
        listener: Option<&std::net::TcpListener>,
    ) -> Option<Arc<Dispatcher>> {
        let mut dispatchers = lock(&self.dispatchers);
        if let Some(dispatcher) = dispatchers.get(&address) {
            return Some(dispatcher.clone());
        }
        let (timeout, sticky) = {
            let settings = self.settings();
            (
                settings.dispatch_timeout,
                settings.scheduling == Scheduling::Sticky,
            )
        };
        let dispatcher =
            match Dispatcher::start(listener?, timeout, sticky, self.load_slots.clone()) {
                Ok(dispatcher) => dispatcher,
                Err(e) => {
                    tracing::error!(%address, "cannot start round-robin dispatching: {e}");
                    return None;
                }
            };
        dispatchers.insert(address, dispatcher.clone());
        Some(dispatcher)
    }

    /// Every round-robin dispatcher.
    pub(crate) fn dispatchers(&self) -> Vec<Arc<Dispatcher>> {
        lock(&self.dispatchers).values().cloned().collect()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.phase.borrow() != Phase::Running
    }

    /// Marks a reload as running; `None` if one already is. The guard ends it.
    pub(crate) fn begin_reload(self: &Arc<Self>) -> Option<ReloadGuard> {
        (!self.reloading.swap(true, Ordering::AcqRel)).then(|| ReloadGuard(self.clone()))
    }

    /// The first `fork` made by the callbacks of `old`'s `disconnect` or `exit` returns
    /// `new` instead of forking.
    pub(crate) fn credit_replacement(&self, old: u32, new: Worker) {
        lock(&self.replacements).insert(old, new);
    }

    /// The phase, to wait for its changes.
    pub(crate) fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Whether a [`Cluster::reload`] is running.
    pub(crate) fn is_reloading(&self) -> bool {
        self.reloading.load(Ordering::Acquire)
    }

    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// The workers not reaped yet.
    pub(crate) fn workers(&self) -> Vec<Worker> {
        lock(&self.workers).values().cloned().collect()
    }

    /// The worker with this id, if not reaped yet.
    pub(crate) fn worker(&self, id: u32) -> Option<Worker> {
        lock(&self.workers).get(&id).cloned()
    }

    /// Puts a just forked worker in the table and emits its `fork`.
    pub(crate) fn add_worker(&self, worker: &Worker) {
        {
            let mut workers = lock(&self.workers);
            workers.insert(worker.id(), worker.clone());
            self.live.send_replace(workers.len());
        }
        tracing::debug!(id = worker.id(), pid = worker.pid(), "forked worker");
        self.events.emit(Event::Fork(worker.clone()));
    }

    /// The spawner thread (every worker is forked from it).
    pub(crate) fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    pub(crate) fn remove_worker(&self, id: u32) {
        self.load_slots.release(id);
        let mut workers = lock(&self.workers);
        workers.remove(&id);
        let left = workers.len();
        drop(workers);
        self.live.send_replace(left);
    }
}

/// Ends the reload when dropped.
pub(crate) struct ReloadGuard(Arc<Shared>);

impl Drop for ReloadGuard {
    fn drop(&mut self) {
        self.0.reloading.store(false, Ordering::Release);
        self.0.reload_ended.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every lock here guards plain data that no panic can leave half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster master (Node's `cluster` in the primary). Cheap to clone.
///
/// Each worker's own events are also [`Worker::events`] and [`Worker::on`] (Node's
/// `worker.on(...)`), which need no `run`.
///
/// Callbacks registered with `on_*` see the events emitted after their registration; they
/// run inside [`Cluster::run`], one at a time and in event order, like Node's event loop,
/// and they may call [`Cluster::fork`]. [`Cluster::events`]
/// gives the same events as an async stream, independent of `run`.
///
/// [`Cluster::run`] also replaces the workers that fail ([`Settings::respawn`], on by
/// default), so callbacks are for the dispatch's own logic.
///
/// # Example
///
/// ```no_run
/// use cluster_core::{setup_master, Settings};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let cluster = setup_master(Settings::new().exec("./worker"))?;
///     cluster.on_disconnect(|_, worker| eprintln!("worker:{} disconnect!", worker.pid()));
///     cluster.on_exit(|_, worker, _| eprintln!("worker:{} exit!", worker.pid()));
///     cluster.fork(&[])?;
///     cluster.fork(&[])?;
///     cluster.run().await?; // forks a replacement for each worker that fails
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
}

/// Checks `settings` and makes a master (Node's `cluster.setupMaster`). Must be called
/// inside a tokio runtime. A bad setting is an error naming it.
///
/// The master's signal handlers are installed here, before the first fork, so a signal
/// that arrives while workers start is handled by [`Cluster::run`] instead of ending the
/// process (see `docs/SIGNALS.md`).
///
/// In a worker (a process a master started, see
/// [`cluster_ipc::handoff::started_by_master`]) it is an error: a binary that runs as both
/// master and worker must branch on `cluster_worker::is_worker()` first, or every worker
/// would start workers of its own (see the crate example).
pub fn setup_master(settings: Settings) -> Result<Cluster, SetupError> {
    refuse_in_a_worker()?;
    let settings = settings.validate()?;
    crate::upgrade::start();
    crate::activation::adopt_from_env();
    let nofile_limit = crate::nofile::apply(settings.nofile_limit)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
    crate::init::start();
    let spawner =
        Spawner::start(runtime.clone()).map_err(SetupError::io("start the spawner thread"))?;
    let signals =
        MasterSignals::install().map_err(SetupError::io("install the master's signal handlers"))?;
    let (events, callback_queue) = EventBus::new();
    let shared = Arc::new(Shared {
        settings: Mutex::new(settings),
        next_id: AtomicU32::new(1),
        workers: Mutex::new(BTreeMap::new()),
        live: watch::Sender::new(0),
        phase: watch::Sender::new(Phase::Running),
        stop_requested: watch::Sender::new(None),
        listeners: Listeners::default(),
        refusal: Refusal::default(),
        handovers: Handovers::default(),
        monitor: Monitor::default(),
        dispatchers: Mutex::new(HashMap::new()),
        events,
        callbacks: Callbacks::new(),
        callback_queue: tokio::sync::Mutex::new(callback_queue),
        spawner,
        runtime,
        signals: Mutex::new(Some(signals)),
        reloading: AtomicBool::new(false),
        reload_ended: Arc::new(tokio::sync::Notify::new()),
        replacements: Mutex::new(HashMap::new()),
        dispatching_for: Mutex::new(None),
        nofile_limit: std::sync::atomic::AtomicU64::new(nofile_limit),
        boot_guard: Default::default(),
        respawner: Default::default(),
        load_slots: Arc::new(crate::load_slots::LoadSlots::new()),
    });
    if shared.settings().respawn != crate::Respawn::Manual {
        // `run` replaces workers from the events it reads.
        shared.events.respawn_registered();
    }
    let first = Event::Setup(Arc::new(shared.settings().clone()));
    shared.events.emit(first);
    if let Some(notifier) = crate::systemd::Notifier::claim() {
        tokio::spawn(crate::systemd::follow_cluster(
            Arc::downgrade(&shared),
            shared.events.subscribe(),
            shared.phase.subscribe(),
            shared.reload_ended.clone(),
            notifier,
        ));
    }
    tokio::spawn(crate::monitor::run(
        Arc::downgrade(&shared),
        shared.monitor.bell(),
    ));
    let cluster = Cluster { shared };
    crate::foreign::bind(&cluster)?;
    if let Some(notifier) = crate::upgrade::take_notifier() {
        tokio::spawn(crate::upgrade::notify_when_cluster_ready(
            cluster.clone(),
            notifier,
        ));
    }
    let control = cluster.shared.settings().control_socket.clone();
    if let Some(path) = control {
        let name = cluster.shared.settings().name.clone();
        let target = crate::control::ClusterTarget::start(&cluster, name);
        crate::control::serve(&path, target).map_err(|reason| SettingsError {
            setting: "control_socket",
            reason,
        })?;
    }
    let metrics = cluster.shared.settings().metrics_address;
    if let Some(address) = metrics {
        let name = cluster.shared.settings().name.clone();
        let families = Arc::new(crate::metrics::Families::new());
        let source = crate::metrics::cluster_source(&cluster, name, families.clone());
        crate::metrics::serve(address, source, families).map_err(|reason| SettingsError {
            setting: "metrics_address",
            reason,
        })?;
    }
    Ok(cluster)
}

/// The error [`setup_master`] returns in a worker, naming what happened.
fn refuse_in_a_worker() -> Result<(), SetupError> {
    match cluster_ipc::handoff::started_by_master() {
        None => Ok(()),
        Some(master) => Err(SetupError::InWorker {
            worker: std::process::id(),
            master,
        }),
    }
}

impl Cluster {
    /// Starts a worker, with `env` added to its environment. Ids count from 1. Refused
    /// once the cluster is stopping.
    ///
    /// Called from the `disconnect` or `exit` callbacks of a worker that a [`Cluster::reload`]
    /// has already replaced, the first call returns that replacement instead of forking.
    /// Any other call from those callbacks is that worker's replacement: the master's own
    /// respawn ([`Settings::respawn`]) then forks nothing more for it.
    pub fn fork(&self, env: &[(&str, &str)]) -> Result<Worker, ForkError> {
        self.fork_for(env, None)
    }

    /// [`Cluster::fork`] of the replacement of worker `old` (the respawn's): it gets the
    /// sockets `old` was granted with its handoff (`handed_sockets.rs`).
    pub(crate) fn fork_replacing(
        &self,
        env: &[(&str, &str)],
        old: u32,
    ) -> Result<Worker, ForkError> {
        self.fork_for(env, Some(old))
    }

    fn fork_for(&self, env: &[(&str, &str)], old: Option<u32>) -> Result<Worker, ForkError> {
        if *self.shared.phase.borrow() != Phase::Running {
            return Err(ForkError::Stopping);
        }
        let shared = &self.shared;
        let replacing = *lock(&shared.dispatching_for);
        if let Some(old) = replacing {
            if let Some(replacement) = lock(&shared.replacements).remove(&old) {
                if !replacement.is_dead() {
                    return Ok(replacement);
                }
            }
        }
        let worker = self.fork_new(env, old.or(replacing))?;
        if let Some(old) = replacing {
            // A callback replaced `old`: the default respawn forks nothing more for it.
            lock(&shared.respawner).replaced_by_callback(old);
        }
        Ok(worker)
    }

    fn fork_new(
        &self,
        env: &[(&str, &str)],
        predecessor: Option<u32>,
    ) -> Result<Worker, ForkError> {
        let prepared = match self.prepare_fork(env, predecessor)? {
            Prepared::Started(worker) => return Ok(worker),
            Prepared::Ready(fork) => fork,
        };
        let prepared = *prepared;
        let child =
            self.shared
                .spawner
                .spawn(prepared.command, &prepared.worker_end, prepared.inherited);
        drop(prepared.worker_end);
        self.finish_fork(prepared.rest, child)
    }

    /// [`Cluster::fork`] without blocking the calling thread while the process starts
    /// (`fork` waits for the master's spawner thread, about a millisecond, which a
    /// current-thread runtime spends doing nothing else). Use it from async code; `fork`
    /// stays for the callbacks, which are not async. Called while the callbacks of a
    /// replaced worker run, or with foreign programs ([`Settings::foreign`]), it is `fork`.
    ///
    /// ```no_run
    /// # async fn demo(cluster: cluster_core::Cluster) -> Result<(), cluster_core::ForkError> {
    /// for _ in 0..4 {
    ///     cluster.fork_async(&[]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn fork_async(&self, env: &[(&str, &str)]) -> Result<Worker, ForkError> {
        if *self.shared.phase.borrow() != Phase::Running {
            return Err(ForkError::Stopping);
        }
        if lock(&self.shared.dispatching_for).is_some() {
            return self.fork(env);
        }
        let prepared = match self.prepare_fork(env, None)? {
            Prepared::Started(worker) => return Ok(worker),
            Prepared::Ready(fork) => fork,
        };
        let prepared = *prepared;
        let child = self
            .shared
            .spawner
            .spawn_async(prepared.command, &prepared.worker_end, prepared.inherited)
            .await;
        drop(prepared.worker_end);
        self.finish_fork(prepared.rest, child)
    }

    /// Everything of a fork before the process starts: the channel, the handoff, the
    /// command. A foreign program is started at once (`foreign.rs`).
    fn prepare_fork(
        &self,
        env: &[(&str, &str)],
        predecessor: Option<u32>,
    ) -> Result<Prepared, ForkError> {
        let shared = &self.shared;
        let _runtime = shared.runtime.enter();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        cluster_ipc::timing::phase("fork", id);
        let settings = shared.settings().clone();
        if let Some(foreign) = &settings.foreign {
            return crate::foreign::fork(shared, id, &settings, foreign, env)
                .map(Prepared::Started);
        }
        let options = ChannelOptions {
            serialization: settings.serialization,
            max_message_bytes: settings.max_message_bytes,
        };
        let (master_end, worker_end) = cluster_ipc::socketpair().map_err(ForkError::Channel)?;
        let (sender, receiver) =
            cluster_ipc::channel(master_end, options).map_err(ForkError::Channel)?;
        let handoff = WorkerHandoff {
            id,
            channel_fd: CHANNEL_FD,
            serialization: settings.serialization,
            max_message_bytes: settings.max_message_bytes,
            master_pid: std::process::id(),
            orphan_timeout_ms: settings.stop_timeout.as_millis() as u64,
            heartbeat_ms: settings.heartbeat_timeout.map_or(0, |t| {
                crate::watchdog::heartbeat_interval(t).as_millis() as u64
            }),
            max_requests: settings.recycling.request_limit(random(id)),
            sockets: Vec::new(),
            load_slot: shared.load_slots.claim(id),
        };
        let predecessor = predecessor.and_then(|old| lock(&shared.workers).get(&old).cloned());
        let handed = predecessor
            .map(|old| crate::handed_sockets::for_replacement(shared, &old))
            .unwrap_or_default();
        let handoff = WorkerHandoff {
            sockets: handed.iter().map(|h| h.socket.clone()).collect(),
            ..handoff
        };
        let command = worker_command(&settings, &handoff, env);
        let mut inherited = crate::handed_sockets::descriptors(&handed);
        inherited.extend(handoff.load_slot.map(|l| l.fd));
        let fork_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Prepared::Ready(Box::new(PreparedFork {
            command,
            worker_end,
            inherited,
            rest: ForkRest {
                id,
                settings,
                sender,
                receiver,
                fork_env,
                handed,
            },
        })))
    }

    /// Everything of a fork once the process started (or failed to).
    fn finish_fork(
        &self,
        rest: ForkRest,
        child: std::io::Result<tokio::process::Child>,
    ) -> Result<Worker, ForkError> {
        let shared = &self.shared;
        let _runtime = shared.runtime.enter();
        let ForkRest {
            id,
            settings,
            sender,
            receiver,
            fork_env,
            handed,
        } = rest;
        let mut child = child.map_err(|e| {
            shared.load_slots.release(id);
            ForkError::Spawn(e)
        })?;
        cluster_ipc::timing::phase("spawned", id);
        if settings.stdio == Stdio::Forward {
            crate::output::forward(&mut child, settings.name.as_deref().unwrap_or("worker"), id);
        }
        let pid = child.id().unwrap_or_default();
        let worker = Worker::new(id, pid, fork_env, sender, settings.stop_timeout);
        crate::handed_sockets::record(&worker, handed);
        shared.add_worker(&worker);
        tokio::spawn(supervise(shared.clone(), worker.clone(), receiver, child));
        Ok(worker)
    }

    /// Binds the shared socket for `address` now (workers asking for it later get this
    /// socket), so a bind error shows at start-up. Returns the bound address. The error
    /// names the address and keeps the OS's kind (`AddrInUse`, `PermissionDenied`…).
    pub fn listen(&self, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let (backlog, grant) = self.shared.listen_settings();
        let listener = self
            .shared
            .listeners
            .get_or_bind(
                &address.to_string(),
                0,
                backlog,
                cluster_ipc::ListenOptions::new(),
                grant == Grant::ReusePort,
            )
            .map_err(cluster_ipc::ListenFailure::into_io_error)?;
        listener.local_addr()
    }

    /// Binds the shared UDP socket for `address` now (workers calling
    /// `cluster_worker::bind_udp` for it later get this socket), so a bind error shows at
    /// start-up; the error keeps its kind. Returns the bound address.
    pub fn bind_udp(&self, address: SocketAddr) -> std::io::Result<SocketAddr> {
        self.shared
            .listeners
            .get_or_bind_udp(address, 0, cluster_ipc::ListenOptions::new())
            .map_err(cluster_ipc::ListenFailure::into_io_error)?
            .local_addr()
    }

    /// Binds the shared Unix socket at `path` now (workers asking for `unix:PATH` get it).
    /// Unix sockets are shared in every scheduling mode.
    pub fn listen_unix(&self, path: &std::path::Path) -> std::io::Result<()> {
        let (backlog, _) = self.shared.listen_settings();
        self.shared
            .listeners
            .get_or_bind_unix(path, 0, backlog)
            .map(drop)
            .map_err(cluster_ipc::ListenFailure::into_io_error)
    }

    /// The soft `RLIMIT_NOFILE` (open descriptors) the master set at start-up and its
    /// workers inherit ([`Settings::nofile_limit`]).
    pub fn nofile_limit(&self) -> u64 {
        self.shared.nofile_limit.load(Ordering::Relaxed)
    }

    /// The TCP addresses this cluster's shared sockets are bound to (a `:0` port resolved).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut addresses: Vec<SocketAddr> = self
            .shared
            .listeners
            .sockets(true)
            .iter()
            .filter_map(|socket| match socket {
                crate::refuse::Socket::Tcp(listener) => listener.local_addr().ok(),
                crate::refuse::Socket::Unix(_) => None,
            })
            .collect();
        addresses.sort();
        addresses
    }

    /// While `refuse` is true the master itself accepts every connection that reaches this
    /// cluster's listening sockets and resets it at once (TCP: `SO_LINGER` 0, the client
    /// sees "connection reset"; Unix: closed), so that while no worker can serve, clients and
    /// load balancers get a refusal they can fail over on instead of a wait in the accept
    /// queue. The master keeps the sockets, so nobody else can take the port. Connections
    /// already queued when it starts are refused too. `false` stops it: once this returns
    /// the master accepts nothing more, so call it before forking the worker that will
    /// serve. Covers the sockets bound when it starts; nothing to do in `ReusePort` mode
    /// (with no worker, nobody listens and the kernel refuses). In `RoundRobin` mode the
    /// master's dispatcher also resets the connections it holds while no worker takes any.
    /// `pm` groups do this by themselves.
    pub fn refuse_connections(&self, refuse: bool) {
        // Handed over by an upgrade: the new master's workers serve these sockets.
        let refuse = refuse && !crate::upgrade::handed_over();
        if refuse {
            let (_, grant) = self.shared.listen_settings();
            let sockets = self.shared.listeners.sockets(grant != Grant::ReusePort);
            self.shared.refusal.start(sockets, &self.shared.runtime);
        } else {
            self.shared.refusal.stop();
        }
        for dispatcher in self.shared.dispatchers() {
            dispatcher.set_refusing(refuse);
        }
    }

    /// The workers that have not been reaped yet, by id.
    pub fn workers(&self) -> Vec<Worker> {
        self.shared.workers()
    }

    /// The worker with this id, if it is alive.
    pub fn worker(&self, id: u32) -> Option<Worker> {
        self.shared.worker(id)
    }

    /// Every event from now on, as an async stream.
    pub fn events(&self) -> EventStream {
        self.shared.events.subscribe()
    }

    /// Where the master is in its life; `changed()` on the receiver waits for the next phase.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.shared.phase.subscribe()
    }

    /// Calls `callback` for every event emitted from now on, inside [`Cluster::run`].
    pub fn on(&self, callback: impl FnMut(&Cluster, &Event) + Send + 'static) {
        self.shared.callbacks.push(callback);
        self.shared.events.callbacks_registered();
    }

    /// Calls `callback` with the settings in force: first the latest ones, then at every
    /// [`Cluster::setup_master`].
    pub fn on_setup(&self, mut callback: impl FnMut(&Cluster, &Settings) + Send + 'static) {
        self.on(move |c, e| {
            if let Event::Setup(settings) = e {
                callback(c, settings)
            }
        });
    }

    /// Calls `callback` when a worker is forked.
    pub fn on_fork(&self, mut callback: impl FnMut(&Cluster, &Worker) + Send + 'static) {
        self.on(move |c, e| {
            if let Event::Fork(w) = e {
                callback(c, w)
            }
        });
    }

    /// Calls `callback` when a worker's runtime is up.
    pub fn on_online(&self, mut callback: impl FnMut(&Cluster, &Worker) + Send + 'static) {
        self.on(move |c, e| {
            if let Event::Online(w) = e {
                callback(c, w)
            }
        });
    }

    /// Calls `callback` when a worker's server accepts connections.
    pub fn on_listening(
        &self,
        mut callback: impl FnMut(&Cluster, &Worker, SocketAddr) + Send + 'static,
    ) {
        self.on(move |c, e| {
            if let Event::Listening(w, a) = e {
                callback(c, w, *a)
            }
        });
    }

    /// Calls `callback` when a worker starts going away ([`Event::Leaving`]): fork
    /// replacements here, they start before the old worker has drained.
    pub fn on_leaving(&self, mut callback: impl FnMut(&Cluster, &Worker) + Send + 'static) {
        self.on(move |c, e| {
            if let Event::Leaving(w) = e {
                callback(c, w)
            }
        });
    }

    /// Calls `callback` when a worker's channel is closed (Node's `disconnect`): after it
    /// closed its servers and drained, or because it died; `is_connected()` is false.
    pub fn on_disconnect(&self, mut callback: impl FnMut(&Cluster, &Worker) + Send + 'static) {
        self.on(move |c, e| {
            if let Event::Disconnect(w) = e {
                callback(c, w)
            }
        });
    }

    /// Calls `callback` when a worker has exited.
    pub fn on_exit(&self, mut callback: impl FnMut(&Cluster, &Worker, Exit) + Send + 'static) {
        self.on(move |c, e| {
            if let Event::Exit(w, x) = e {
                callback(c, w, *x)
            }
        });
    }

    /// Calls `callback` for every message a worker's code sends.
    pub fn on_message(
        &self,
        mut callback: impl FnMut(&Cluster, &Worker, &Message) + Send + 'static,
    ) {
        self.on(move |c, e| {
            if let Event::Message(w, m) = e {
                callback(c, w, m)
            }
        });
    }

    /// Stops the cluster. No worker is forked after this starts. A `Fast` request while a
    /// graceful stop runs turns it fast. Returns when every worker has exited.
    pub async fn stop(&self, mode: StopMode) {
        self.begin_stop(mode);
        let mut phase = self.shared.phase.subscribe();
        let _ = phase.wait_for(|p| *p == Phase::Stopped).await;
    }

    /// Starts (or escalates) a stop without waiting for it: from here on `fork` is refused.
    pub(crate) fn begin_stop(&self, mode: StopMode) {
        let shared = &self.shared;
        let escalated = shared.stop_requested.send_if_modified(|requested| {
            let escalates = requested.is_none_or(|current| mode > current);
            if escalates {
                *requested = Some(mode);
            }
            escalates
        });
        if escalated && *shared.phase.borrow() == Phase::Running {
            shared.phase.send_replace(Phase::Stopping);
            tokio::spawn(run_stop(shared.clone()));
        }
    }

    /// The master's loop: runs the callbacks in event order and handles signals, until the
    /// cluster is stopped or has no worker left and nothing more to do.
    ///
    /// Signals (the table is `docs/SIGNALS.md`): SIGTERM stops gracefully; SIGINT and
    /// SIGQUIT stop fast, and a second one during a graceful stop makes it fast; SIGHUP
    /// replaces every worker ([`Cluster::reload`]); SIGUSR1 is passed on to every worker
    /// (reopen log files); SIGUSR2 starts a hot upgrade ([`Cluster::upgrade`]); SIGTTIN, SIGTTOU (the worker count is the dispatch's,
    /// not the master's), SIGWINCH, SIGALRM and the others whose default would end the
    /// master are logged and ignored.
    pub async fn run(&self) -> Result<(), RunError> {
        let mut queue = self
            .shared
            .callback_queue
            .try_lock()
            .map_err(|_| RunError::AlreadyRunning)?;
        let taken = lock(&self.shared.signals).take();
        let mut signals = match taken {
            Some(signals) => signals,
            None => MasterSignals::install().map_err(RunError::Signals)?,
        };
        let mut live = self.shared.live.subscribe();
        let mut phase = self.shared.phase.subscribe();
        loop {
            let due = self.next_replacement_due();
            tokio::select! {
                // Signals first: a stop must be known before callbacks that would fork.
                biased;
                request = signals.recv() => self.handle_signal(request),
                Some(event) = queue.recv() => self.dispatch(&event),
                _ = sleep_until(due), if due.is_some() => self.fork_due_replacements(),
                _ = live.changed() => {}
                _ = phase.changed() => {}
            }
            // Done when stopped, or when nothing is left to supervise and no event is
            // waiting that could fork again.
            let stopped = *phase.borrow() == Phase::Stopped;
            let idle = *live.borrow() == 0 && self.next_replacement_due().is_none();
            if (stopped || idle) && queue.is_empty() {
                return match self.shared.boot_guard.gave_up() {
                    Some(reason) => Err(RunError::BootFailures(reason)),
                    None => Ok(()),
                };
            }
        }
    }

    fn handle_signal(&self, request: SignalRequest) {
        match request {
            SignalRequest::StopGraceful => self.request_stop(StopMode::Graceful),
            SignalRequest::StopFast => self.request_stop(StopMode::Fast),
            SignalRequest::Reload => {
                tracing::info!("SIGHUP: replacing every worker");
                let cluster = self.clone();
                tokio::spawn(async move {
                    match cluster.reload().await {
                        Ok(replaced) => tracing::info!(replaced, "reload done"),
                        Err(e) => tracing::error!("reload stopped: {e}"),
                    }
                });
            }
            SignalRequest::ReopenLogs => crate::signals::pass_reopen_logs(self.workers()),
            SignalRequest::Upgrade => {
                tracing::info!("SIGUSR2: hot upgrade of the master");
                let cluster = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = cluster.upgrade().await {
                        tracing::error!("upgrade failed, this master keeps serving: {e}");
                    }
                });
            }
            SignalRequest::ScaleUp | SignalRequest::ScaleDown => tracing::warn!(
                ?request,
                "ignored: a plain cluster's size is its dispatch's; pm scales groups"
            ),
            other => crate::signals::log_ignored(other),
        }
    }

    fn request_stop(&self, mode: StopMode) {
        tracing::info!(?mode, "stop requested by signal");
        self.begin_stop(mode);
    }

    /// Runs the callbacks for `event`. While those of a worker's `disconnect` or `exit`
    /// run, a `fork` may be answered with the replacement a reload made for it.
    fn dispatch(&self, event: &Event) {
        let retiring = match event {
            Event::Leaving(w) | Event::Disconnect(w) | Event::Exit(w, _) => Some(w.id()),
            _ => None,
        };
        *lock(&self.shared.dispatching_for) = retiring;
        self.shared.callbacks.run(self, event);
        *lock(&self.shared.dispatching_for) = None;
        self.respawn_after(event);
        if let Event::Exit(w, _) = event {
            lock(&self.shared.replacements).remove(&w.id());
        }
    }
}

/// The stop procedure; one runs per cluster.
async fn run_stop(shared: Arc<Shared>) {
    let mut requested = shared.stop_requested.subscribe();
    let mut live = shared.live.subscribe();
    let timeout = shared.settings().stop_timeout;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let kill_all = |shared: &Shared| {
        for worker in lock(&shared.workers).values() {
            worker.set_exit_reason(crate::ExitReason::Stop);
            worker.signal(Signal::SIGKILL);
        }
    };
    let mut killing = false;
    loop {
        let mode = *requested.borrow_and_update();
        if !killing && mode == Some(StopMode::Fast) {
            killing = true;
            kill_all(&shared);
        } else if !killing {
            for worker in lock(&shared.workers).values() {
                worker.set_exit_reason(crate::ExitReason::Stop);
                worker.request_disconnect();
            }
        }
        if *live.borrow_and_update() == 0 {
            break;
        }
        tokio::select! {
            _ = live.changed() => {}
            _ = requested.changed() => {}
            _ = &mut deadline, if !killing => {
                tracing::warn!(?timeout, "workers still running at the stop timeout; killing them");
                killing = true;
                kill_all(&shared);
            }
        }
    }
    shared.phase.send_replace(Phase::Stopped);
}

/// Sleeps until `at` (for ever if `None`: the branch is disabled then).
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Random bits for one worker (the jitter of its request limit).
fn random(id: u32) -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(id)
}

fn worker_command(settings: &Settings, handoff: &WorkerHandoff, env: &[(&str, &str)]) -> Command {
    let exec = settings
        .exec
        .clone()
        .unwrap_or_else(|| OsString::from("/proc/self/exe").into());
    let mut command = Command::new(exec);
    command.args(&settings.args);
    command.envs(settings.env.iter().map(|(k, v)| (k, v)));
    command.envs(env.iter().copied());
    command.envs(handoff.to_env());
    // What an old master handed this one in a hot upgrade is not the worker's.
    command.env_remove(crate::upgrade::ENV_INHERITED);
    command.env_remove(crate::upgrade::ENV_READY_FD);
    for key in crate::activation::MASTER_ONLY_ENV {
        command.env_remove(key);
    }
    crate::spawn::apply_settings(&mut command, settings);
    command
}

/// A fork up to the start of the process ([`Cluster::fork`], [`Cluster::fork_async`]).
enum Prepared {
    /// Started already (a foreign program).
    Started(Worker),
    /// The process to start.
    Ready(Box<PreparedFork>),
}

struct PreparedFork {
    command: tokio::process::Command,
    /// The worker's end of the channel: the child's descriptor 3; closed here once started.
    worker_end: std::os::fd::OwnedFd,
    /// Descriptors the child keeps under their own numbers: the handed sockets and the load
    /// table.
    inherited: Vec<std::os::fd::RawFd>,
    rest: ForkRest,
}

/// What the fork needs once the process has started.
struct ForkRest {
    id: u32,
    settings: Settings,
    sender: cluster_ipc::Sender,
    receiver: cluster_ipc::Receiver,
    fork_env: Vec<(String, String)>,
    handed: Vec<crate::handed_sockets::Handed>,
}
