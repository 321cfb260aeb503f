//! This process as a cluster worker (Node's `cluster.worker` in a worker).

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cluster_ipc::handoff::WorkerHandoff;
use cluster_ipc::pressure::LogThrottle;
use cluster_ipc::{
    ChannelOptions, Control, Grant, Incoming, ListenFailure, Message, Origin, Recipient, SendError,
    Sender,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connections::Connections;
use crate::env::handoff;
use crate::error::WorkerError;
use crate::served::{Served, Unit};

/// The master's answer to a listen request: its shared socket, or (ReusePort scheduling)
/// the address to bind a socket of our own on.
pub(crate) enum Granted {
    Shared(OwnedFd),
    BindOwn(std::net::SocketAddr),
    /// The master accepts and hands connections over to [`Worker::open_feed`]'s channel.
    RoundRobin(std::net::SocketAddr),
}

/// Where round-robin connections for one address go, and how many the server is waiting for
/// (a hand-over is taken only when the server asks for a connection).
#[derive(Clone)]
pub(crate) struct Feed {
    sender: mpsc::Sender<(std::net::TcpStream, std::net::SocketAddr)>,
    pub(crate) demand: Arc<tokio::sync::Semaphore>,
}

/// Puts a connection taken from the master in its feed, for the server's `accept`.
fn deliver(
    permit: mpsc::OwnedPermit<(std::net::TcpStream, std::net::SocketAddr)>,
    stream: std::net::TcpStream,
) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    permit.send((stream, peer));
}

type ListenReply = Result<(String, Granted), ListenFailure>;

/// Room for the round-robin connections the server asked for (its window, at most 4).
const FEED_CAPACITY: usize = 4;

struct Inner {
    id: u32,
    sender: Sender,
    messages: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    /// Where incoming user messages go; taken when the channel ends, so `recv` then ends.
    messages_tx: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    pending_listens: Mutex<HashMap<u64, oneshot::Sender<ListenReply>>>,
    listen_indexes: crate::listen_index::ListenIndexes,
    next_seq: AtomicU64,
    disconnecting: AtomicBool,
    /// True once servers must stop accepting.
    closing: watch::Sender<bool>,
    /// Registered servers that have not finished draining.
    open_servers: watch::Sender<usize>,
    /// True once the channel is closed.
    disconnected: watch::Sender<bool>,
    /// Round-robin connections' destinations, by address.
    feeds: Mutex<HashMap<String, Feed>>,
    /// Addresses the master relieved this worker of after a hand-over.
    relieved: watch::Sender<Vec<String>>,
    orphan_timeout: Duration,
    /// How many SIGUSR1 (reopen log files) have arrived.
    log_reopens: watch::Sender<u64>,
    /// Hand-overs refused because the descriptor table was full, for the log.
    no_room_log: Mutex<LogThrottle>,
    /// Requests or connections served (towards the master's `max_requests`, and reported
    /// with each heartbeat).
    served: Arc<Served>,
    /// Connections held now (heartbeat, and the balance between workers).
    connections: Arc<Connections>,
    /// Set at the first connection accepted (its time is a start-up phase, `cluster_ipc::timing`).
    accepted_one: AtomicBool,
    /// The sockets the master granted with the handoff, not taken by a `listen()` yet.
    handed: Mutex<Vec<Handed>>,
}

/// A socket granted with the handoff (`CLUSTER_LISTEN_SOCKETS`), adopted at start.
struct Handed {
    index: u32,
    requested: String,
    local: String,
    /// `None`: a round-robin address.
    fd: Option<OwnedFd>,
}

/// An open connection, counted until dropped ([`Worker::connection_opened`]).
pub struct ConnectionGuard {
    connections: Arc<Connections>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections.opened(false);
    }
}

/// This process's identity and channel as a cluster worker. Cheap to clone.
///
/// ```no_run
/// # async fn demo() {
/// if let Some(worker) = cluster_worker::Worker::current() {
///     worker.send(&format!("hello from worker {}", worker.id())).await.ok();
///     while let Some(message) = worker.recv().await {
///         let text: String = message.decode().unwrap_or_default();
///         if text == "bye" {
///             worker.disconnect();
///         }
///     }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

static CURRENT: OnceLock<Result<Option<Worker>, WorkerError>> = OnceLock::new();

/// This process as a worker, if [`Worker::current`] has connected it already (never
/// connects).
pub(crate) fn connected() -> Option<&'static Worker> {
    CURRENT.get()?.as_ref().ok()?.as_ref()
}

/// True when this process was started as a worker by a cluster master (Node's
/// `cluster.isWorker`).
pub fn is_worker() -> bool {
    matches!(handoff(), Ok(Some(_)))
}

impl Worker {
    /// This process as a worker, or `None` outside a cluster. The first call connects the
    /// channel and tells the master the worker is online; it must run inside a tokio
    /// runtime. A broken handoff is logged and treated as `None`: use
    /// [`Worker::try_current`] to see the error.
    pub fn current() -> Option<Worker> {
        match Self::try_current() {
            Ok(worker) => worker,
            Err(e) => {
                tracing::error!("not running as a cluster worker: {e}");
                None
            }
        }
    }

    /// Like [`Worker::current`], with the reason when this process was started as a worker
    /// but cannot be one.
    pub fn try_current() -> Result<Option<Worker>, WorkerError> {
        if let Some(done) = CURRENT.get() {
            return done.clone();
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(WorkerError::NoRuntime);
        }
        CURRENT.get_or_init(connect).clone()
    }

    /// The worker's id, as the master numbered it (from 1).
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// Sends a message to the master (it arrives as a `message` event).
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), SendError> {
        self.inner.sender.send(message).await
    }

    /// Sends a message with descriptors to the master (Node's `process.send(message,
    /// sendHandle)`): it arrives as a `message` event whose
    /// [`Message::take_fds`] hands the master its own copies (close-on-exec). The worker
    /// keeps its descriptors and may close them once this returns. At most
    /// [`cluster_ipc::MAX_FDS_PER_MESSAGE`] ([`SendError::TooManyFds`] otherwise; nothing is
    /// sent).
    ///
    /// ```no_run
    /// # async fn demo(worker: cluster_worker::Worker, stream: tokio::net::TcpStream) -> Result<(), cluster_worker::SendError> {
    /// use std::os::fd::AsFd;
    /// worker.send_with(&"take this client", &[stream.as_fd()]).await?;
    /// drop(stream);
    /// # Ok(()) }
    /// ```
    pub async fn send_with<T: Serialize + ?Sized>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        self.inner.sender.send_with(message, fds).await
    }

    /// Sends a message to every other live worker of `group`, through the master (pm's
    /// `broadcast` between workers). Receivers see its [`Message::origin`].
    pub async fn send_to_group<T: Serialize + ?Sized>(
        &self,
        group: &str,
        message: &T,
    ) -> Result<(), SendError> {
        self.forward(Recipient::Group(group.to_string()), message)
            .await
    }

    /// Sends a message to the worker with this pid, through the master.
    pub async fn send_to_pid<T: Serialize + ?Sized>(
        &self,
        pid: u32,
        message: &T,
    ) -> Result<(), SendError> {
        self.forward(Recipient::Pid(pid), message).await
    }

    async fn forward<T: Serialize + ?Sized>(
        &self,
        to: Recipient,
        message: &T,
    ) -> Result<(), SendError> {
        let payload = self.inner.sender.options().serialization.encode(message)?;
        let forward = Control::Forward { to, payload };
        self.inner.sender.send_control(&forward, &[]).await
    }

    /// The next message from the master, or from another worker through it (see
    /// [`Message::origin`]); `None` once the channel is closed.
    pub async fn recv(&self) -> Option<Message> {
        self.inner.messages.lock().await.recv().await
    }

    /// Starts a graceful disconnect (idempotent, returns at once; Node's
    /// `worker.disconnect()` in a worker): registered servers stop accepting and the master
    /// is told the exit is intended (its `leaving` event). Once every registered server is
    /// done ([`Worker::drained`]) the channel is closed, which the master sees as
    /// `disconnect`, as in Node. Connections already accepted are left to finish.
    pub fn disconnect(&self) {
        if self.inner.disconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(id = self.inner.id, "worker disconnecting");
        self.inner.closing.send_replace(true);
        let worker = self.clone();
        tokio::spawn(async move {
            if let Err(e) = worker
                .inner
                .sender
                .send_control(&Control::Disconnecting, &[])
                .await
            {
                tracing::debug!("could not tell the master about the disconnect: {e}");
            }
            worker.drained().await;
            worker.inner.sender.close();
            worker.inner.disconnected.send_replace(true);
        });
    }

    /// True while the channel to the master is open (Node's `worker.isConnected()`): false
    /// once the master is gone, or once this worker disconnected and drained.
    pub fn is_connected(&self) -> bool {
        !*self.inner.disconnected.borrow()
    }

    /// Ends this worker now, on purpose (Node's `worker.destroy()` in a worker): tells the
    /// master the exit is intended (waiting at most one second for the channel), then
    /// exits with code 0 without waiting for connections. The master reports it with
    /// `exited_after_disconnect` true, so its default respawn does not count it as a crash.
    pub fn destroy(&self) -> ! {
        self.inner.disconnecting.store(true, Ordering::Release);
        if let Err(e) = self
            .inner
            .sender
            .send_control_blocking(&Control::Disconnecting, Duration::from_secs(1))
        {
            tracing::debug!("could not tell the master about the exit: {e}");
        }
        std::process::exit(0)
    }

    /// [`Worker::destroy`] (Node's `worker.kill()` in a worker is the same call).
    pub fn kill(&self) -> ! {
        self.destroy()
    }

    /// Tells the master this worker is ready to serve (pm's `ready`): a supervisor counts it
    /// as started, and a reload waits for it before retiring the old workers.
    pub async fn ready(&self) -> Result<(), SendError> {
        self.inner.sender.send_control(&Control::Ready, &[]).await
    }

    /// Tells the master, from any thread and without awaiting (a panic hook may call it),
    /// that this worker has failed and is handing over: the master reports it as
    /// disconnecting at once, so a replacement can be forked, and relieves it of each
    /// address once a newer worker accepts there ([`Worker::relieved`]). Waits at most
    /// `timeout` for the channel.
    pub fn hand_over(&self, timeout: Duration) -> Result<(), SendError> {
        self.inner
            .sender
            .send_control_blocking(&Control::HandOver, timeout)
    }

    /// [`Worker::hand_over`], saying why: the master keeps the panic's `message` and
    /// `location` as this worker's exit reason (`clusterctl status`, the `exit` event).
    pub fn hand_over_after_panic(
        &self,
        message: &str,
        location: Option<&str>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let control = Control::HandOverPanic {
            message: message.to_string(),
            location: location.map(str::to_string),
        };
        self.inner.sender.send_control_blocking(&control, timeout)
    }

    /// Resolves when, after [`Worker::hand_over`], the master says a newer worker accepts on
    /// `address`; or once the channel to the master is closed (no relief can come then).
    pub async fn relieved(&self, address: std::net::SocketAddr) {
        let address = address.to_string();
        let mut relieved = self.inner.relieved.subscribe();
        let mut disconnected = self.inner.disconnected.subscribe();
        tokio::select! {
            _ = relieved.wait_for(|r| r.contains(&address)) => {}
            _ = disconnected.wait_for(|d| *d) => {}
        }
    }

    /// Resolves once servers must stop accepting (after [`Worker::disconnect`], or when the
    /// master is gone).
    pub async fn closing(&self) {
        let mut closing = self.inner.closing.subscribe();
        let _ = closing.wait_for(|c| *c).await;
    }

    /// True once servers must stop accepting.
    pub fn is_closing(&self) -> bool {
        *self.inner.closing.borrow()
    }

    /// Registers a server: [`Worker::drained`] waits until every guard is dropped after
    /// closing begins. Drop the guard when the server has stopped accepting and finished its
    /// connections.
    pub fn register_server(&self) -> ServerGuard {
        self.inner.open_servers.send_modify(|n| *n += 1);
        ServerGuard {
            inner: self.inner.clone(),
        }
    }

    /// Resolves when closing has begun and every registered server is done.
    pub async fn drained(&self) {
        self.closing().await;
        let mut open = self.inner.open_servers.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Resolves at the next SIGUSR1: the operator asks for log files to be reopened (after
    /// a rotation). The master passes its SIGUSR1 on to every worker that is online; the
    /// worker runtime catches it (it never ends the worker) and wakes this.
    ///
    /// ```no_run
    /// # async fn demo(worker: cluster_worker::Worker) {
    /// loop {
    ///     worker.log_reopen_requested().await;
    ///     // close and reopen the log file here
    /// }
    /// # }
    /// ```
    pub async fn log_reopen_requested(&self) {
        let mut reopens = self.inner.log_reopens.subscribe();
        reopens.mark_unchanged();
        let _ = reopens.changed().await;
    }

    /// This worker's server counts requests ([`Worker::request_served`]) towards the
    /// master's `max_requests`, rather than the connections its [`crate::Acceptor`]s hand
    /// out. `graceful::serve` calls it.
    pub fn count_requests(&self) {
        self.inner.served.count_requests();
    }

    /// Counts one request towards the master's `max_requests` (and counts requests from
    /// now on, see [`Worker::count_requests`]); at the limit the worker asks the master,
    /// once, to recycle it.
    pub fn request_served(&self) {
        self.count(Unit::Request);
    }

    /// Counts one accepted connection, unless a server counts requests.
    pub(crate) fn connection_accepted(&self) {
        if !self.inner.accepted_one.swap(true, Ordering::Relaxed) {
            cluster_ipc::timing::phase("first_accept", self.inner.id);
        }
        self.count(Unit::Connection);
    }

    /// Counts one connection open until the guard is dropped; the count goes to the master
    /// with each heartbeat (`clusterctl status`, metrics), and to the table the workers
    /// share to balance live connections: a server that counts its connections takes part
    /// in the balance (a worker holding clearly more than the others lets them accept
    /// first). `graceful::serve` does this for its connections.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.inner.connections.opened(true);
        ConnectionGuard {
            connections: self.inner.connections.clone(),
        }
    }

    /// This worker's server counts every connection it serves with
    /// [`Worker::connection_opened`]: the worker takes part in the balance of live
    /// connections from now on, before its first connection (an idle worker must be seen
    /// for the others to leave it connections). `graceful::serve` calls it.
    pub fn count_connections(&self) {
        self.inner.connections.counted_by_server();
    }

    /// This worker's live connections, shared with its accept loops.
    pub(crate) fn connections(&self) -> &Arc<Connections> {
        &self.inner.connections
    }

    fn count(&self, unit: Unit) {
        if let Some(served) = self.inner.served.add(unit) {
            crate::served::ask_recycling(&self.inner.sender, served);
        }
    }

    /// Resolves once the channel to the master is closed.
    pub async fn disconnected(&self) {
        let mut disconnected = self.inner.disconnected.subscribe();
        let _ = disconnected.wait_for(|d| *d).await;
    }

    /// The indexes of this worker's sockets per address (`listen_index.rs`).
    pub(crate) fn listen_indexes(&self) -> &crate::listen_index::ListenIndexes {
        &self.inner.listen_indexes
    }

    /// Asks the master for its listening socket on `address`, the `index`th this worker
    /// holds for it, bound with `options` if this request binds it.
    pub(crate) async fn request_listener(
        &self,
        address: &str,
        index: u32,
        options: cluster_ipc::ListenOptions,
    ) -> ListenReply {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        cluster_ipc::timing::phase("listen_asked", self.inner.id);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending_listens).insert(seq, tx);
        let request = Control::ListenRequest {
            seq,
            address: address.to_string(),
            index,
            options,
        };
        if let Err(e) = self.inner.sender.send_control(&request, &[]).await {
            lock(&self.inner.pending_listens).remove(&seq);
            return Err(ListenFailure::with_errno(
                nix::libc::ENOTCONN,
                format!("listen on {address}: asking the master failed: {e}"),
            ));
        }
        let reply = rx.await.unwrap_or_else(|_| {
            Err(ListenFailure::with_errno(
                nix::libc::ENOTCONN,
                format!("listen on {address}: the master is gone"),
            ))
        });
        cluster_ipc::timing::phase("listen_granted", self.inner.id);
        reply
    }

    /// What the master granted with the handoff for `requested` with `index`, once: the
    /// address bound and the grant, as a listen reply would say.
    pub(crate) fn take_handed(&self, requested: &str, index: u32) -> Option<(String, Granted)> {
        let mut handed = lock(&self.inner.handed);
        let at = handed
            .iter()
            .position(|h| h.index == index && h.requested == requested)?;
        let h = handed.swap_remove(at);
        let granted = match h.fd {
            Some(fd) => Granted::Shared(fd),
            None => Granted::RoundRobin(h.local.parse().ok()?),
        };
        cluster_ipc::timing::phase("listen_granted", self.inner.id);
        Some((h.local, granted))
    }

    pub(crate) async fn report_listening(&self, address: String) {
        if let Err(e) = self
            .inner
            .sender
            .send_control(&Control::Listening { address }, &[])
            .await
        {
            tracing::debug!("could not report listening: {e}");
        }
    }

    /// The master's channel is gone without a disconnect of ours: drain and exit.
    fn orphaned(&self) {
        if self.inner.disconnecting.load(Ordering::Acquire) {
            return;
        }
        tracing::warn!(
            id = self.inner.id,
            "the master is gone; draining and exiting"
        );
        self.disconnect();
        arm_exit_timer(self.inner.orphan_timeout);
    }
}

/// Held by a registered server until it has finished; see [`Worker::register_server`].
pub struct ServerGuard {
    inner: Arc<Inner>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.inner
            .open_servers
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Exits the process with code 1 if it is still running after `timeout`.
fn arm_exit_timer(timeout: Duration) {
    let spawned = std::thread::Builder::new()
        .name("cluster-exit-timer".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            tracing::warn!(?timeout, "still running after the drain timeout; exiting");
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::error!("could not arm the exit timer: {e}");
    }
}

fn connect() -> Result<Option<Worker>, WorkerError> {
    let Some(handoff) = handoff().map_err(WorkerError::Handoff)? else {
        return Ok(None);
    };
    let channel_end = take_channel_end(handoff)?;
    let options = ChannelOptions {
        serialization: handoff.serialization,
        max_message_bytes: handoff.max_message_bytes,
    };
    let (sender, mut receiver) =
        cluster_ipc::channel(channel_end, options).map_err(WorkerError::from)?;
    let (messages_tx, messages_rx) = mpsc::unbounded_channel();
    let worker = Worker {
        inner: Arc::new(Inner {
            id: handoff.id,
            sender,
            messages: tokio::sync::Mutex::new(messages_rx),
            messages_tx: Mutex::new(Some(messages_tx)),
            pending_listens: Mutex::new(HashMap::new()),
            listen_indexes: Default::default(),
            next_seq: AtomicU64::new(1),
            disconnecting: AtomicBool::new(false),
            closing: watch::Sender::new(false),
            open_servers: watch::Sender::new(0),
            disconnected: watch::Sender::new(false),
            relieved: watch::Sender::new(Vec::new()),
            feeds: Mutex::new(HashMap::new()),
            orphan_timeout: Duration::from_millis(handoff.orphan_timeout_ms),
            log_reopens: watch::Sender::new(0),
            no_room_log: Mutex::new(LogThrottle::new()),
            served: Arc::new(Served::new(handoff.max_requests)),
            connections: Arc::new(Connections::new(adopt_load_table(handoff))),
            accepted_one: AtomicBool::new(false),
            handed: Mutex::new(adopt_handed(handoff)),
        }),
    };
    if let Some(started) = crate::runtime::started_ns() {
        cluster_ipc::timing::phase_at("runtime_start", handoff.id, started);
    }
    cluster_ipc::timing::phase("connected", handoff.id);
    if handoff.heartbeat_ms > 0 {
        crate::heartbeat::start(
            worker.inner.sender.clone(),
            worker.inner.served.clone(),
            worker.inner.connections.clone(),
            Duration::from_millis(handoff.heartbeat_ms),
        );
    }

    // Read the channel for the process's whole life.
    let reader = worker.clone();
    tokio::spawn(async move {
        loop {
            match receiver.recv().await {
                Ok(Some(Incoming::User(message))) => reader.deliver(message),
                Ok(Some(Incoming::Control(control, fds))) => reader.handle_control(control, fds),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("bad message from the master: {e}");
                    break;
                }
            }
        }
        lock(&reader.inner.pending_listens).clear();
        lock(&reader.inner.messages_tx).take();
        reader.inner.disconnected.send_replace(true);
        reader.orphaned();
    });

    // SIGTERM (also what the master's death delivers) means: drain and exit.
    let on_term = worker.clone();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::spawn(async move {
                if sigterm.recv().await.is_some() {
                    tracing::info!("SIGTERM: draining and exiting");
                    on_term.disconnect();
                    arm_exit_timer(on_term.inner.orphan_timeout);
                }
            });
        }
        Err(e) => tracing::warn!("could not handle SIGTERM: {e}"),
    }

    // SIGUSR1 (the master passes its own on): reopen log files. Installed before `Online`,
    // which is how the master knows this worker will not die of it.
    let on_usr1 = worker.clone();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
        Ok(mut sigusr1) => {
            tokio::spawn(async move {
                while sigusr1.recv().await.is_some() {
                    tracing::info!("SIGUSR1: reopen log files");
                    on_usr1.inner.log_reopens.send_modify(|n| *n += 1);
                }
            });
        }
        Err(e) => tracing::warn!("could not handle SIGUSR1: {e}"),
    }

    // Written before this returns, so that `Online` reaches the master before anything the
    // worker's code sends next, even if it exits at once (Node's `online` precedes the
    // worker's messages). The channel is new and nobody else writes yet, so this does not
    // wait; should it fail, it is sent in the background as a fallback.
    if let Err(e) = worker
        .inner
        .sender
        .send_control_blocking(&Control::Online, Duration::from_secs(1))
    {
        tracing::debug!("could not report online at once ({e}); retrying in the background");
        let online = worker.inner.sender.clone();
        tokio::spawn(async move {
            if let Err(e) = online.send_control(&Control::Online, &[]).await {
                tracing::debug!("could not report online: {e}");
            }
        });
    }
    cluster_ipc::timing::phase("handlers_installed", handoff.id);
    Ok(Some(worker))
}

impl Worker {
    /// A connection the master handed over (round-robin). It is taken once the server has
    /// room for it, and only after the master heard so; if the server is closing, or has
    /// not asked for a connection by `take_by_ns`, it is refused and the master hands it to
    /// another worker. Either way it is never served twice nor lost: until our answer reaches
    /// the master, the master keeps its copy, and it takes the copy back (to give to
    /// another worker) only after `take_by_ns`, when we no longer take it.
    fn take_connection(&self, address: String, seq: u64, take_by_ns: u64, fd: Option<OwnedFd>) {
        let Some(fd) = fd else {
            // The frame came without its descriptor: our table is full (`MSG_CTRUNC`).
            self.no_room_for(address, seq);
            return;
        };
        let stream = std::net::TcpStream::from(fd);
        let feed = lock(&self.inner.feeds).get(&address).cloned();
        let sender = self.inner.sender.clone();
        tokio::spawn(async move {
            let left = take_by_ns.saturating_sub(cluster_ipc::clock::monotonic_ns());
            // Wait until the server asks for a connection (a closed feed refuses), at most
            // until `take_by_ns`: later, the master gives it to another worker.
            let asked = match &feed {
                Some(feed) => {
                    let demand = feed.demand.clone().acquire_owned();
                    match tokio::time::timeout(Duration::from_nanos(left), demand).await {
                        Ok(Ok(asked)) => {
                            asked.forget();
                            true
                        }
                        _ => false,
                    }
                }
                None => false,
            };
            let permit = match (&feed, asked) {
                (Some(feed), true) => feed.sender.clone().reserve_owned().await.ok(),
                _ => None,
            };
            let taken = match permit {
                Some(_) => {
                    let taken = Control::ConnectionTaken {
                        address: address.clone(),
                        seq,
                    };
                    sender.send_control_by(&taken, take_by_ns).await
                }
                None => Ok(false),
            };
            if asked && !matches!(taken, Ok(true)) {
                // The server's ask stays open for the next hand-over.
                if let Some(feed) = &feed {
                    feed.demand.add_permits(1);
                }
            }
            let took = matches!(taken, Ok(true));
            let answered = match taken {
                Ok(true) => Ok(()),
                Ok(false) => {
                    let refused = Control::ConnectionRefused {
                        address: address.clone(),
                        seq,
                    };
                    sender.send_control(&refused, &[]).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = answered {
                // The master did not hear: it keeps the connection and re-dispatches it.
                tracing::debug!(%address, "could not answer a hand-over: {e}");
                return;
            }
            if let (true, Some(permit)) = (took, permit) {
                deliver(permit, stream);
            }
        });
    }

    /// Connections the master handed over in one frame (`fds` in the order of `seqs`; the
    /// last ones missing when our descriptor table was full). Those the server has asked for
    /// already are taken at once and answered together, in one frame; the others wait as
    /// [`Worker::take_connection`] says.
    fn take_connections(
        &self,
        address: String,
        seqs: Vec<u64>,
        take_by_ns: u64,
        fds: Vec<OwnedFd>,
    ) {
        let feed = lock(&self.inner.feeds).get(&address).cloned();
        let mut fds = fds.into_iter();
        let mut ready = Vec::new();
        for seq in seqs {
            let fd = fds.next();
            if let (Some(feed), Some(_)) = (&feed, &fd) {
                // Asked for, and room in the feed: no waiting.
                if let Ok(asked) = feed.demand.try_acquire() {
                    if let Ok(permit) = feed.sender.clone().try_reserve_owned() {
                        asked.forget();
                        if let Some(fd) = fd {
                            ready.push((seq, std::net::TcpStream::from(fd), permit));
                        }
                        continue;
                    }
                }
            }
            self.take_connection(address.clone(), seq, take_by_ns, fd);
        }
        // Descriptors beyond `seqs` (none from a sound master) are closed here.
        if ready.is_empty() {
            return;
        }
        let sender = self.inner.sender.clone();
        tokio::spawn(async move {
            let taken = match ready.as_slice() {
                [(seq, _, _)] => Control::ConnectionTaken {
                    address: address.clone(),
                    seq: *seq,
                },
                _ => Control::ConnectionsTaken {
                    address: address.clone(),
                    seqs: ready.iter().map(|(seq, _, _)| *seq).collect(),
                },
            };
            match sender.send_control_by(&taken, take_by_ns).await {
                Ok(true) => {
                    for (_, stream, permit) in ready {
                        deliver(permit, stream);
                    }
                }
                Ok(false) => {
                    // Too late: refused, and the server's asks stay open for the next ones.
                    if let Some(feed) = &feed {
                        feed.demand.add_permits(ready.len());
                    }
                    for (seq, _, _) in ready {
                        let refused = Control::ConnectionRefused {
                            address: address.clone(),
                            seq,
                        };
                        if let Err(e) = sender.send_control(&refused, &[]).await {
                            tracing::debug!(%address, "could not answer a hand-over: {e}");
                            return;
                        }
                    }
                }
                Err(e) => {
                    // The master did not hear: it keeps the connections and re-dispatches
                    // them.
                    if let Some(feed) = &feed {
                        feed.demand.add_permits(ready.len());
                    }
                    tracing::debug!(%address, "could not answer a hand-over: {e}");
                }
            }
        });
    }

    /// A hand-over whose descriptor did not fit in our descriptor table: the master gives
    /// it to another worker. Logged once per second at most, with the count and the limit.
    fn no_room_for(&self, address: String, seq: u64) {
        if let Some(count) = lock(&self.inner.no_room_log).event() {
            let limit = cluster_ipc::fd::nofile_limit()
                .map(|(soft, _)| soft.to_string())
                .unwrap_or_else(|e| e.to_string());
            tracing::warn!(
                %address,
                count,
                "refused {count} handed-over connection(s): this worker's descriptor table is \
                 full (RLIMIT_NOFILE {limit}); the master gives them to another worker"
            );
        }
        let sender = self.inner.sender.clone();
        tokio::spawn(async move {
            let no_room = Control::ConnectionNoRoom { address, seq };
            if let Err(e) = sender.send_control(&no_room, &[]).await {
                tracing::debug!("could not answer a hand-over: {e}");
            }
        });
    }

    /// Starts receiving round-robin connections for `address`; returns the receiver and
    /// the demand the server raises each time it waits for a connection.
    pub(crate) fn open_feed(
        &self,
        address: &str,
    ) -> (
        mpsc::Receiver<(std::net::TcpStream, std::net::SocketAddr)>,
        Arc<tokio::sync::Semaphore>,
    ) {
        let (sender, receiver) = mpsc::channel(FEED_CAPACITY);
        let demand = Arc::new(tokio::sync::Semaphore::new(0));
        let feed = Feed {
            sender,
            demand: demand.clone(),
        };
        lock(&self.inner.feeds).insert(address.to_string(), feed);
        (receiver, demand)
    }

    /// Stops receiving round-robin connections for `address`: hand-overs waiting for the
    /// server and the master's next ones are refused (and given to another worker).
    pub(crate) fn close_feed(&self, address: &str) {
        if let Some(feed) = lock(&self.inner.feeds).remove(address) {
            feed.demand.close();
        }
    }

    fn deliver(&self, message: Message) {
        if let Some(tx) = lock(&self.inner.messages_tx).as_ref() {
            let _ = tx.send(message);
        }
    }

    fn handle_control(&self, control: Control, mut fds: Vec<OwnedFd>) {
        match control {
            Control::ListenReply { seq, result, grant } => {
                let Some(reply) = lock(&self.inner.pending_listens).remove(&seq) else {
                    tracing::warn!(seq, "listen reply for no request");
                    return;
                };
                let result = result.and_then(|address| {
                    let parsed = || {
                        address.parse().map_err(|_| {
                            ListenFailure::from(format!("the master granted {address:?}"))
                        })
                    };
                    let granted = match grant {
                        Grant::ReusePort => Granted::BindOwn(parsed()?),
                        Grant::RoundRobin => Granted::RoundRobin(parsed()?),
                        Grant::Shared => match fds.pop() {
                            Some(fd) => Granted::Shared(fd),
                            None => {
                                return Err(format!(
                                    "the master's reply for {address} carried no socket"
                                )
                                .into());
                            }
                        },
                    };
                    Ok((address, granted))
                });
                let _ = reply.send(result);
            }
            Control::Disconnect => self.disconnect(),
            Control::Connection {
                address,
                seq,
                take_by_ns,
            } => self.take_connections(address, vec![seq], take_by_ns, fds),
            Control::Connections {
                address,
                seqs,
                take_by_ns,
            } => self.take_connections(address, seqs, take_by_ns, fds),
            Control::Deliver {
                from_group,
                from_pid,
                payload,
            } => {
                let serialization = self.inner.sender.options().serialization;
                let origin = Origin {
                    group: from_group,
                    pid: from_pid,
                };
                self.deliver(Message::forwarded(serialization, &payload, origin));
            }
            Control::Relieved { address } => {
                self.inner.relieved.send_modify(|r| r.push(address));
            }
            other => tracing::warn!(?other, "unexpected control message from the master"),
        }
    }
}

/// Takes ownership of the inherited channel end, after checking it is a socket.
fn take_channel_end(handoff: &WorkerHandoff) -> Result<OwnedFd, WorkerError> {
    let raw = handoff.channel_fd;
    if raw < 0 {
        return Err(WorkerError::Handoff(format!(
            "channel descriptor {raw} is negative"
        )));
    }
    // SAFETY: `raw` is non-negative and only borrowed for this check, during which nothing
    // closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    if !cluster_ipc::fd::is_socket(borrowed) {
        return Err(WorkerError::Handoff(format!(
            "descriptor {raw} is not the master's channel"
        )));
    }
    cluster_ipc::fd::set_cloexec(borrowed).map_err(WorkerError::from)?;
    // SAFETY: the master mapped our channel end to `raw` before exec and nothing else in
    // this process refers to it; `connect` runs once (OnceLock), so it is owned once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Takes ownership of descriptor `raw`, which the master left open across exec for this
/// worker and named once in the handoff (`what` it is, for the log), after checking that it
/// is open, not the channel nor a standard stream, and a socket if it `must_be_socket`;
/// close-on-exec from now on. `None` (logged) otherwise.
fn adopt_inherited(
    raw: RawFd,
    handoff: &WorkerHandoff,
    what: &str,
    must_be_socket: bool,
) -> Option<OwnedFd> {
    if raw == handoff.channel_fd || raw <= 2 {
        tracing::warn!(raw, "{what} descriptor {raw} is not usable; ignored");
        return None;
    }
    // SAFETY: `raw` is non-negative (the handoff parser checks it) and only borrowed for
    // these checks, during which nothing closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    if must_be_socket && !cluster_ipc::fd::is_socket(borrowed) {
        tracing::warn!(raw, "{what} descriptor {raw} is not a socket; ignored");
        return None;
    }
    if let Err(e) = cluster_ipc::fd::set_cloexec(borrowed) {
        tracing::warn!(raw, "{what} descriptor {raw}: {e}; ignored");
        return None;
    }
    // SAFETY: open (`set_cloexec` succeeded); the master left it open across exec for us
    // alone and named it once in the handoff; `connect` runs once (OnceLock), so it is
    // owned once.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Maps the shared load table the handoff names, with this worker's slot; `None` (logged)
/// if there is none or it is not usable: the worker then stays out of the balance.
fn adopt_load_table(handoff: &WorkerHandoff) -> Option<(cluster_ipc::LoadTable, usize)> {
    let load_slot = handoff.load_slot?;
    let fd = adopt_inherited(load_slot.fd, handoff, "load table", false)?;
    match cluster_ipc::LoadTable::open(fd) {
        Ok(table) => Some((table, load_slot.slot as usize)),
        Err(e) => {
            tracing::warn!("load table: {e}; this worker stays out of the balance");
            None
        }
    }
}

/// Takes ownership of the sockets the handoff names, after checking each is a socket; an
/// entry that is not is logged and left alone (`listen()` then asks the master).
fn adopt_handed(handoff: &WorkerHandoff) -> Vec<Handed> {
    let mut adopted = Vec::new();
    for socket in &handoff.sockets {
        let fd = match socket.fd {
            None => None,
            Some(raw) => match adopt_inherited(raw, handoff, "handed socket", true) {
                Some(fd) => Some(fd),
                None => continue,
            },
        };
        adopted.push(Handed {
            index: socket.index,
            requested: socket.requested.clone(),
            local: socket.local.clone(),
            fd,
        });
    }
    adopted
}
