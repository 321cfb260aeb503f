//! The supervisor: named groups of workers kept alive, reloaded and scaled; signals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};

use crate::callbacks::Callbacks;
use crate::cluster::{Phase, StopMode, setup_master};
use crate::events::Event;
use crate::pm::delivery::{DEFAULT_SEND_TIMEOUT, Delivery, send_to_all, send_within};
use crate::pm::events::GroupEvent;
use crate::pm::group::{Group, MemberSnapshot};
use crate::pm::options::{GroupOptions, MasterOptions};
use crate::signals::{MasterSignals, SignalRequest};
use crate::worker::Worker;
use crate::{RunError, SendError};

struct State {
    groups: BTreeMap<String, Group>,
    dispatched: bool,
}

struct Inner {
    state: Mutex<State>,
    pidfile: Option<PathBuf>,
    /// Every group's cluster events, tagged with the group's name.
    incoming_tx: mpsc::UnboundedSender<(String, Event)>,
    incoming_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Event)>>,
    streams: Mutex<Vec<mpsc::UnboundedSender<GroupEvent>>>,
    callbacks: Callbacks<Master, GroupEvent>,
    queue_tx: mpsc::UnboundedSender<GroupEvent>,
    queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<GroupEvent>>,
    /// Something changed outside the loop (scale, reload…): re-read the deadlines.
    wake: Notify,
    phase: watch::Sender<Phase>,
    /// Installed by `new`, before any group forks; taken by `run`.
    signals: Mutex<Option<MasterSignals>>,
    send_timeout: Mutex<Duration>,
    /// Started by a hot upgrade: tells the old master once every group is ready.
    upgrade_ready: Mutex<Option<crate::upgrade::ReadyNotifier>>,
    /// Claimed by `new` when under a service manager; taken by `run` (`systemd.rs`).
    systemd: Mutex<Option<crate::systemd::Notifier>>,
}

/// A supervisor of named worker groups (pm's `createMaster()`). Cheap to clone.
///
/// # Example: the seed's pm `dispatch.js`
///
/// ```no_run
/// use cluster_core::pm::{GroupEvent, GroupOptions, Master};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let master = Master::new();
///     master.on(|master, event| match event {
///         GroupEvent::GiveUp { group, fatals, pause } => eprintln!(
///             "giveup to restart \"{group}\" process after {fatals} times. pm will try after {pause:?}."),
///         GroupEvent::Disconnect { group, worker } => {
///             if let Some(new) = master.fork(group) {
///                 eprintln!("worker:{} disconnect! new worker:{} fork", worker.pid(), new.pid());
///             }
///         }
///         _ => {}
///     });
///     master.register("web", GroupOptions::new()
///         .exec("./worker")
///         .listen("127.0.0.1:1984".parse()?)
///         .children(2))?;
///     master.dispatch();
///     master.run().await?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Master {
    /// A master with no groups yet and the default [`MasterOptions`] (no pidfile). Must be
    /// called inside a tokio runtime. The master's signal handlers are installed here,
    /// before any worker starts (see [`Master::run`]).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Master {
        Master::with_options(MasterOptions::new())
    }

    /// A master with no groups yet and these options (a pidfile, written at `dispatch`
    /// and removed at exit if it still holds this process's pid).
    pub fn with_options(options: MasterOptions) -> Master {
        let pidfile = options.pidfile;
        crate::upgrade::start();
        crate::activation::adopt_from_env();
        crate::init::start();
        let signals = MasterSignals::install()
            .inspect_err(|e| tracing::error!("could not install the signal handlers: {e}"))
            .ok();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        Master {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    groups: BTreeMap::new(),
                    dispatched: false,
                }),
                pidfile,
                incoming_tx,
                incoming_rx: tokio::sync::Mutex::new(incoming_rx),
                streams: Mutex::new(Vec::new()),
                callbacks: Callbacks::new(),
                queue_tx,
                queue_rx: tokio::sync::Mutex::new(queue_rx),
                wake: Notify::new(),
                phase: watch::Sender::new(Phase::Running),
                signals: Mutex::new(signals),
                send_timeout: Mutex::new(DEFAULT_SEND_TIMEOUT),
                upgrade_ready: Mutex::new(crate::upgrade::take_notifier()),
                systemd: Mutex::new(crate::systemd::Notifier::claim()),
            }),
        }
    }

    /// Registers the group `name` running [`GroupOptions::exec`] (default: this same
    /// executable, which then branches on `cluster_worker::is_worker()` or uses
    /// [`crate::run`]). Its listen addresses are bound now (an
    /// error names the one that failed); a bad restart policy is an error naming the setting. Registering a name again replaces that group's
    /// program and options through a reload: the old workers serve until the new ones are
    /// ready.
    pub fn register(&self, name: &str, options: GroupOptions) -> Result<(), crate::SetupError> {
        options.policy.validate()?;
        let mut settings = options.settings.clone();
        if let Some(exec) = &options.exec {
            settings = settings.exec(exec);
        }
        if settings.name.is_none() {
            settings = settings.name(name);
        }
        for arg in &options.args {
            settings = settings.arg(arg);
        }
        for (key, value) in &options.env {
            settings = settings.env(key, value);
        }
        // The group's restart policy (`policy.rs`) judges workers that die at start-up.
        settings = settings
            .env(cluster_ipc::handoff::ENV_GROUP, name)
            .max_boot_failures(None)
            .respawn(crate::Respawn::Manual);
        let mut state = lock(&self.inner.state);
        if let Some(group) = state.groups.get_mut(name) {
            let bound = bind_all(&group.cluster, &options)?;
            group
                .cluster
                .setup_master(settings.env(cluster_ipc::handoff::ENV_GROUP_LISTEN, bound))?;
            group.wanted = options.children;
            group.options = options;
            if state.dispatched {
                let now = Instant::now();
                if let Some(group) = state.groups.get_mut(name) {
                    group.start_reload(now);
                }
            }
            drop(state);
            self.inner.wake.notify_one();
            return Ok(());
        }
        let cluster = setup_master(settings.clone())?;
        let bound = bind_all(&cluster, &options)?;
        cluster.setup_master(settings.env(cluster_ipc::handoff::ENV_GROUP_LISTEN, bound))?;
        let mut events = cluster.events();
        let incoming = self.inner.incoming_tx.clone();
        let group_name = name.to_string();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if incoming.send((group_name.clone(), event)).is_err() {
                    break;
                }
            }
        });
        let mut group = Group::new(name.to_string(), cluster, options);
        if state.dispatched {
            group.converge(Instant::now());
        }
        state.groups.insert(name.to_string(), group);
        Ok(())
    }

    /// Starts every registered group (pm's `dispatch()`), and writes the pidfile.
    pub fn dispatch(&self) {
        if let Some(path) = &self.inner.pidfile {
            if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
                tracing::error!("cannot write the pidfile {}: {e}", path.display());
            }
        }
        let mut state = lock(&self.inner.state);
        state.dispatched = true;
        let now = Instant::now();
        for group in state.groups.values_mut() {
            group.converge(now);
        }
    }

    /// Makes sure `group` has its workers and returns its newest one (pm's `fork(name)`):
    /// forks only what is missing, so a dispatch that forks on `disconnect` while the master
    /// already replaces workers does not double them.
    /// `None` once the master is stopping.
    pub fn fork(&self, group: &str) -> Option<Worker> {
        if *self.inner.phase.borrow() != Phase::Running {
            return None;
        }
        let mut state = lock(&self.inner.state);
        let group = state.groups.get_mut(group)?;
        group.converge(Instant::now());
        group.newest()
    }

    /// The group's live workers.
    pub fn workers(&self, group: &str) -> Vec<Worker> {
        lock(&self.inner.state)
            .groups
            .get(group)
            .map(Group::workers)
            .unwrap_or_default()
    }

    /// The TCP addresses `group` listens on, as bound (a `:0` port resolved).
    pub fn addresses(&self, group: &str) -> Vec<std::net::SocketAddr> {
        lock(&self.inner.state)
            .groups
            .get(group)
            .map(|g| g.cluster.addresses())
            .unwrap_or_default()
    }

    /// Sets how many workers `group` runs; extra ones are disconnected gracefully.
    pub fn scale(&self, group: &str, children: usize) {
        let mut state = lock(&self.inner.state);
        if let Some(group) = state.groups.get_mut(group) {
            group.wanted = children;
            group.converge(Instant::now());
        }
        drop(state);
        self.inner.wake.notify_one();
    }

    /// Reloads `group` without downtime: new workers start, and the old ones are retired one
    /// at a time once every new one is ready and stable. If the new ones fail, they are
    /// retired instead and a `ReloadFailed` event says why. False if the group is unknown or
    /// already reloading.
    pub fn reload(&self, group: &str) -> bool {
        let mut state = lock(&self.inner.state);
        let started = state
            .groups
            .get_mut(group)
            .is_some_and(|g| g.start_reload(Instant::now()));
        drop(state);
        self.inner.wake.notify_one();
        started
    }

    /// Sends `message` to every live worker of `group` at once (pm's `broadcast`), waiting
    /// at most the send timeout ([`Master::set_send_timeout`]) for each; returns which
    /// workers it reached and which not, and why. A worker whose channel stays full for the
    /// whole timeout in the middle of the message has its channel closed (it is then
    /// replaced as any disconnected worker).
    pub async fn broadcast<T: Serialize + Sync + ?Sized>(
        &self,
        group: &str,
        message: &T,
    ) -> Delivery {
        send_to_all(&self.workers(group), message, self.send_timeout()).await
    }

    /// Every group: its name, wanted size, and live workers with their generation and
    /// readiness (for the control socket).
    pub(crate) fn group_snapshots(&self) -> Vec<(String, usize, Vec<MemberSnapshot>)> {
        lock(&self.inner.state)
            .groups
            .values()
            .map(|g| (g.name.clone(), g.wanted, g.members()))
            .collect()
    }

    /// Every group's cluster.
    pub(crate) fn group_clusters(&self) -> Vec<crate::Cluster> {
        lock(&self.inner.state)
            .groups
            .values()
            .map(|g| g.cluster.clone())
            .collect()
    }

    /// True if a group is registered under `name`.
    pub(crate) fn has_group(&self, name: &str) -> bool {
        lock(&self.inner.state).groups.contains_key(name)
    }

    /// Replaces worker `id` of `group` (see `Group::restart`); false if there is none.
    pub(crate) fn restart_worker(&self, group: &str, id: u32) -> bool {
        let restarted = lock(&self.inner.state)
            .groups
            .get_mut(group)
            .is_some_and(|g| g.restart(id, Instant::now()));
        self.inner.wake.notify_one();
        restarted
    }

    /// Where the master is in its life.
    pub(crate) fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// How long [`Master::broadcast`] and [`Master::send_to`] wait for one worker's channel
    /// (default [`DEFAULT_SEND_TIMEOUT`], 1 s).
    pub fn set_send_timeout(&self, timeout: Duration) {
        *lock(&self.inner.send_timeout) = timeout;
    }

    fn send_timeout(&self) -> Duration {
        *lock(&self.inner.send_timeout)
    }

    /// Sends `message` to the worker with this pid, in any group, waiting at most the send
    /// timeout for its channel (then `SendError::Io` of kind `TimedOut`).
    pub async fn send_to<T: Serialize + Sync + ?Sized>(
        &self,
        pid: u32,
        message: &T,
    ) -> Result<(), SendError> {
        let worker = {
            let state = lock(&self.inner.state);
            state
                .groups
                .values()
                .flat_map(Group::workers)
                .find(|w| w.pid() == pid)
        };
        match worker {
            Some(worker) => send_within(&worker, message, self.send_timeout()).await,
            None => Err(SendError::Closed),
        }
    }

    /// Every group event from now on, as an async stream.
    pub fn events(&self) -> mpsc::UnboundedReceiver<GroupEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.streams).push(tx);
        rx
    }

    /// Calls `callback` for every group event, inside [`Master::run`].
    pub fn on(&self, callback: impl FnMut(&Master, &GroupEvent) + Send + 'static) {
        self.inner.callbacks.push(callback);
    }

    /// Stops every group (graceful or fast) and returns when all workers are gone.
    pub async fn stop(&self, mode: StopMode) {
        if *self.inner.phase.borrow() == Phase::Running {
            self.inner.phase.send_replace(Phase::Stopping);
        }
        // Report what happens from now on, but restart nothing.
        for group in lock(&self.inner.state).groups.values_mut() {
            group.stopping = true;
        }
        let clusters: Vec<_> = lock(&self.inner.state)
            .groups
            .values()
            .map(|g| g.cluster.clone())
            .collect();
        let stops: Vec<_> = clusters
            .into_iter()
            .map(|c| tokio::spawn(async move { c.stop(mode).await }))
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
        self.inner.phase.send_replace(Phase::Stopped);
    }

    /// The master's loop: applies worker events to the groups (restarts, reloads), runs the
    /// callbacks, and handles signals until stopped (the table is `docs/SIGNALS.md`).
    /// SIGTERM: graceful stop; SIGINT/SIGQUIT: fast stop; SIGHUP: reload every group
    /// (readiness-gated); SIGUSR1: passed on to every worker (reopen logs);
    /// SIGTTIN/SIGTTOU: one worker more/less in every group; SIGUSR2: hot upgrade
    /// ([`Master::upgrade`]); SIGWINCH, SIGALRM and
    /// the others whose default would end the master: logged and ignored.
    pub async fn run(&self) -> Result<(), RunError> {
        let taken = lock(&self.inner.signals).take();
        let mut signals = match taken {
            Some(signals) => signals,
            None => MasterSignals::install().map_err(RunError::Signals)?,
        };
        let mut incoming = self
            .inner
            .incoming_rx
            .try_lock()
            .map_err(|_| RunError::AlreadyRunning)?;
        let mut queue = self
            .inner
            .queue_rx
            .try_lock()
            .map_err(|_| RunError::AlreadyRunning)?;
        let mut phase = self.inner.phase.subscribe();
        let mut stopping: Option<tokio::task::JoinHandle<()>> = None;
        let mut notifier = lock(&self.inner.systemd).take();
        loop {
            let deadline = self.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                request = signals.recv() => match request {
                    SignalRequest::StopGraceful => stopping = Some(self.begin_stop(stopping, StopMode::Graceful)),
                    SignalRequest::StopFast => stopping = Some(self.begin_stop(stopping, StopMode::Fast)),
                    other => self.handle_signal(other),
                },
                Some((group, event)) = incoming.recv() => self.apply(&group, event),
                Some(event) = queue.recv() => self.dispatch_callbacks(&event),
                _ = sleep => self.tick(),
                _ = self.inner.wake.notified() => {}
                _ = phase.changed() => {}
                _ = crate::systemd::watchdog_due(&mut notifier) => {}
            }
            if let Some(notifier) = &mut notifier {
                notifier.observe(&self.systemd_snapshot());
            }
            if *phase.borrow() == Phase::Stopped && queue.is_empty() {
                break;
            }
        }
        if let Some(path) = &self.inner.pidfile {
            remove_pidfile(path);
            crate::upgrade::remove_oldbin(path);
        }
        Ok(())
    }

    fn begin_stop(
        &self,
        running: Option<tokio::task::JoinHandle<()>>,
        mode: StopMode,
    ) -> tokio::task::JoinHandle<()> {
        tracing::info!(?mode, "stop requested by signal");
        if let Some(running) = running {
            if mode == StopMode::Graceful {
                return running;
            }
            // Escalate: each cluster turns its graceful stop fast.
        }
        let master = self.clone();
        tokio::spawn(async move { master.stop(mode).await })
    }

    fn handle_signal(&self, request: SignalRequest) {
        match request {
            SignalRequest::Reload => {
                tracing::info!("SIGHUP: reloading every group");
                self.reload_all();
            }
            SignalRequest::ReopenLogs => {
                let groups: Vec<String> = lock(&self.inner.state).groups.keys().cloned().collect();
                crate::signals::pass_reopen_logs(groups.iter().flat_map(|g| self.workers(g)));
            }
            SignalRequest::Upgrade => {
                tracing::info!("SIGUSR2: hot upgrade of the master");
                let master = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = master.upgrade().await {
                        tracing::error!("upgrade failed, this master keeps serving: {e}");
                    }
                });
            }
            SignalRequest::ScaleUp => self.scale_all(1),
            SignalRequest::ScaleDown => self.scale_all(-1),
            other => crate::signals::log_ignored(other),
        }
    }

    /// What the service manager is told about (`systemd.rs`): ready when every group has
    /// its wanted number of ready workers.
    fn systemd_snapshot(&self) -> crate::systemd::Snapshot {
        let state = lock(&self.inner.state);
        let mut snapshot = crate::systemd::Snapshot {
            all_ready: !state.groups.is_empty(),
            stopping: *self.inner.phase.borrow() != Phase::Running,
            handed_over: crate::upgrade::handed_over(),
            ..Default::default()
        };
        for group in state.groups.values() {
            let (workers, ready, reloading) = group.readiness();
            snapshot.workers += workers;
            snapshot.ready += ready;
            snapshot.all_ready &= ready >= group.wanted;
            snapshot.reloading |= reloading;
        }
        snapshot
    }

    fn reload_all(&self) {
        let names: Vec<String> = lock(&self.inner.state).groups.keys().cloned().collect();
        for name in names {
            self.reload(&name);
        }
    }

    fn scale_all(&self, delta: isize) {
        let names: Vec<(String, usize)> = lock(&self.inner.state)
            .groups
            .iter()
            .map(|(n, g)| (n.clone(), g.wanted))
            .collect();
        for (name, wanted) in names {
            self.scale(&name, wanted.saturating_add_signed(delta).max(1));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        lock(&self.inner.state)
            .groups
            .values()
            .filter_map(Group::next_deadline)
            .min()
    }

    fn apply(&self, group: &str, event: Event) {
        if let Event::Forward { from, to, payload } = event {
            self.route(group, from, to, payload);
            return;
        }
        let emitted = {
            let mut state = lock(&self.inner.state);
            match state.groups.get_mut(group) {
                Some(g) => g.handle(event, Instant::now()),
                None => Vec::new(),
            }
        };
        for event in emitted {
            self.emit(event);
        }
        self.notify_upgrade_if_ready();
    }

    /// Hot upgrade (SIGUSR2): starts a new master from the program this one was started
    /// as, hands it every group's listening sockets and moves the pidfile to
    /// `PIDFILE.oldbin`; once every group of the new master has its wanted workers ready,
    /// this master stops gracefully (its workers drain) and [`Master::run`] returns.
    /// Returns the new master's pid. If the new master fails (exits, or is not ready within
    /// the longest `upgrade_timeout` of the groups' settings) it is killed, the pidfile
    /// moves back, and this master keeps serving.
    pub async fn upgrade(&self) -> Result<u32, crate::UpgradeError> {
        if *self.inner.phase.borrow() != Phase::Running {
            return Err(crate::UpgradeError::Stopping);
        }
        let clusters = self.group_clusters();
        let sockets = clusters
            .iter()
            .flat_map(|c| crate::upgrade::sockets_of(&c.shared.listeners))
            .collect();
        let timeout = clusters
            .iter()
            .map(|c| c.shared.settings().upgrade_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        let pid =
            crate::upgrade::hand_over(sockets, timeout, self.inner.pidfile.as_deref()).await?;
        let dispatchers: Vec<_> = clusters
            .iter()
            .flat_map(|c| c.shared.dispatchers())
            .collect();
        crate::round_robin::hand_off(&dispatchers, crate::upgrade::HAND_OFF_WITHIN).await;
        tracing::info!(
            pid,
            "upgrade: the new master is ready; this one retires its workers"
        );
        let master = self.clone();
        tokio::spawn(async move { master.stop(StopMode::Graceful).await });
        Ok(pid)
    }

    /// Started by an upgrade: once every group has as many ready workers as it wants, tells
    /// the old master (once).
    fn notify_upgrade_if_ready(&self) {
        let mut slot = lock(&self.inner.upgrade_ready);
        if slot.is_none() {
            return;
        }
        let ready = {
            let state = lock(&self.inner.state);
            state.dispatched
                && state
                    .groups
                    .values()
                    .all(|g| g.members().iter().filter(|m| m.ready).count() >= g.wanted)
        };
        if let Some(notifier) = slot.take_if(|_| ready) {
            notifier.notify();
        }
    }

    /// Delivers a worker's message to its recipients, in the background.
    fn route(&self, group: &str, from: Worker, to: cluster_ipc::Recipient, payload: Arc<[u8]>) {
        let recipients: Vec<Worker> = {
            let state = lock(&self.inner.state);
            let all = state
                .groups
                .iter()
                .flat_map(|(name, g)| g.workers().into_iter().map(move |w| (name.clone(), w)));
            match &to {
                cluster_ipc::Recipient::Group(target) => all
                    .filter(|(name, w)| name == target && w.pid() != from.pid())
                    .map(|(_, w)| w)
                    .collect(),
                cluster_ipc::Recipient::Pid(pid) => all
                    .filter(|(_, w)| w.pid() == *pid)
                    .map(|(_, w)| w)
                    .collect(),
            }
        };
        if recipients.is_empty() {
            tracing::debug!(
                ?to,
                from = from.pid(),
                "no live recipient for a forwarded message"
            );
        }
        let from_group = Some(group.to_string());
        let from_pid = from.pid();
        tokio::spawn(async move {
            for worker in recipients {
                if let Err(e) = worker.deliver(from_group.clone(), from_pid, &payload).await {
                    tracing::debug!(to = worker.pid(), "forwarded message not delivered: {e}");
                }
            }
        });
    }

    fn tick(&self) {
        let now = Instant::now();
        let emitted: Vec<GroupEvent> = {
            let mut state = lock(&self.inner.state);
            state
                .groups
                .values_mut()
                .flat_map(|g| {
                    let out = g.step_reload(now);
                    g.converge(now);
                    out
                })
                .collect()
        };
        for event in emitted {
            self.emit(event);
        }
    }

    fn emit(&self, event: GroupEvent) {
        event.log();
        lock(&self.inner.streams).retain(|tx| tx.send(event.clone()).is_ok());
        let _ = self.inner.queue_tx.send(event);
    }

    fn dispatch_callbacks(&self, event: &GroupEvent) {
        self.inner.callbacks.run(self, event);
    }
}

/// Binds every address and Unix path now, so a bad one is an error at start-up; returns the
/// bound addresses, comma-separated, for the workers' environment.
fn bind_all(cluster: &crate::Cluster, options: &GroupOptions) -> Result<String, crate::SetupError> {
    let failed = crate::SetupError::io;
    let mut bound = Vec::new();
    for address in &options.listen {
        let local = cluster
            .listen(*address)
            .map_err(failed("bind the group's address"))?;
        bound.push(local.to_string());
    }
    for path in &options.listen_unix {
        cluster
            .listen_unix(path)
            .map_err(failed("bind the group's Unix socket"))?;
        bound.push(format!("{}{}", cluster_ipc::UNIX_PREFIX, path.display()));
    }
    Ok(bound.join(","))
}

fn remove_pidfile(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|content| content.trim() == std::process::id().to_string());
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove the pidfile {}: {e}", path.display());
        }
    }
}
