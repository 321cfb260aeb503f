//! Balanced accepting on a socket shared by several workers.
//!
//! tokio registers a listener in its own epoll without `EPOLLEXCLUSIVE`, so every worker
//! wakes for every connection and the one already running (usually the one that just
//! answered) wins: with one client, one worker gets most connections. An `Acceptor` instead
//! accepts on a dedicated thread that waits with `EPOLLEXCLUSIVE`: the kernel wakes only the
//! first waiting worker in the socket's queue, and a worker re-queues at the back after each
//! accept, so the workers take turns; a worker whose previous connection has not been taken
//! by its server yet is not waiting, and is skipped.
//!
//! In a cluster the workers also balance the connections they hold (issue 13): before each
//! accept the thread reads the load table the workers share (`cluster_ipc::load_table`), and
//! a worker holding clearly more live connections than the others' average stays off the
//! socket's queue of waiters, so the others take the next connections; it looks again at
//! each new connection, and accepts anyway one left waiting [`GRACE`] (the others are
//! busy), so the balance never keeps a client waiting long. Round-robin workers write the
//! same table, and the master's dispatcher reads it.
//!
//! A dedicated accept thread is also faster than tokio's accept loop for a process alone on
//! its socket (measured: `Connection: close` 20–21k req/s against 14–15k on a multi-thread
//! runtime, see `docs/BENCHMARKS.md`), so [`crate::incoming`] uses it outside a cluster too.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster_ipc::pressure::{LogThrottle, accept_failed, is_listener_broken};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::connections::Connections;
use crate::worker::Worker;

const LISTENER: u64 = 0;
/// The largest [`Acceptor::with_window`].
const MAX_WINDOW: usize = 4;
const STOP: u64 = 1;

/// How long a crowded worker leaves a connection waiting for the others before it takes it.
const GRACE: Duration = Duration::from_millis(3);
/// How often a crowded worker looks at the table when no connection arrives.
const RECHECK: Duration = Duration::from_millis(50);

/// Puts this worker at the back of the socket's queue of exclusive waiters (it must not be
/// on it): the kernel wakes the front one for each connection, and a worker leaves the queue
/// after each accept, so the workers take turns.
fn queue_up(epoll: &Epoll, listener: &std::net::TcpListener) -> io::Result<()> {
    epoll.add(
        listener.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER),
    )?;
    Ok(())
}

/// A server's source of connections: a dedicated accept thread (see the module docs) or, in
/// round-robin scheduling, the master's hand-overs. A connection is accepted (or taken from
/// the master) only while [`Acceptor::accept`] waits for one, so a worker that is killed
/// loses at most the connections it was serving. Dropping it (or [`Acceptor::stop`]) stops
/// accepting.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = cluster_worker::listen("127.0.0.1:1337".parse().unwrap()).await?;
/// let mut acceptor = cluster_worker::Acceptor::new(listener)?;
/// while let Some((stream, peer)) = acceptor.accept().await {
///     // serve `stream`…
/// #   drop((stream, peer));
/// }
/// # Ok(()) }
/// ```
pub struct Acceptor {
    accepted: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    source: Source,
    /// Connections asked for that have not arrived yet.
    asked: usize,
    /// How many connections may be asked for ahead of the server.
    window: usize,
    local_addr: SocketAddr,
}

/// Who accepts.
enum Source {
    /// This worker, on a dedicated thread that accepts one connection per demand token.
    Thread {
        demand: Option<std::sync::mpsc::SyncSender<()>>,
        stop: EventFd,
        thread: Option<JoinHandle<()>>,
        /// Why the thread ended on its own, if it did.
        failed: Arc<Mutex<Option<io::Error>>>,
    },
    /// The master, which hands connections over (round-robin scheduling); one is taken per
    /// permit.
    Master {
        worker: Worker,
        demand: Arc<Semaphore>,
        /// Still counted as accepting (until the first stop).
        accepting: bool,
    },
}

impl Acceptor {
    /// Takes over `listener` (it is no longer polled by tokio) and starts the accept thread.
    pub fn new(listener: TcpListener) -> io::Result<Acceptor> {
        let listener = listener.into_std()?;
        let local_addr = listener.local_addr()?;
        let stop = EventFd::new()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        // The listener must be one epoll can wait on; the thread queues up when asked.
        queue_up(&epoll, &listener)?;
        epoll.delete(listener.as_fd())?;
        // A socket of our own in an `SO_REUSEPORT` group (ReusePort scheduling): the kernel
        // decides which connections reach it and nobody else can take them, so holding back
        // would only delay them.
        let own_queue =
            nix::sys::socket::getsockopt(&listener, nix::sys::socket::sockopt::ReusePort)
                .unwrap_or(false);
        let connections = crate::worker::connected()
            .filter(|_| !own_queue)
            .map(|w| w.connections().clone());
        let (tx, accepted) = mpsc::channel(MAX_WINDOW);
        let (demand, demanded) = std::sync::mpsc::sync_channel(MAX_WINDOW);
        let failed = Arc::new(Mutex::new(None));
        let thread_failed = failed.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-acceptor".into())
            .spawn(move || {
                let balance = connections.as_deref();
                if let Some(connections) = balance {
                    connections.accepting(true);
                }
                if let Err(e) = accept_loop(&epoll, &listener, &demanded, &tx, balance) {
                    tracing::error!("accept thread: the listener cannot accept: {e}");
                    *thread_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
                if let Some(connections) = balance {
                    connections.accepting(false);
                }
                // `tx` drops now: `accept` returns `None`, after the error is in place.
            })?;
        Ok(Acceptor {
            accepted,
            source: Source::Thread {
                demand: Some(demand),
                stop,
                thread: Some(thread),
                failed,
            },
            asked: 0,
            window: 1,
            local_addr,
        })
    }

    /// Connections the master hands over for `local_addr` (round-robin scheduling).
    pub(crate) fn from_master(worker: &Worker, local_addr: SocketAddr) -> Acceptor {
        let (accepted, demand) = worker.open_feed(&local_addr.to_string());
        worker.connections().accepting(true);
        Acceptor {
            accepted,
            source: Source::Master {
                worker: worker.clone(),
                demand,
                accepting: true,
            },
            asked: 0,
            window: 1,
            local_addr,
        }
    }

    /// The next connection, ready for tokio; `None` once stopped and every connection
    /// accepted before the stop has been handed out. Cancel-safe.
    pub async fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            while self.asked < self.window && self.ask() {
                self.asked += 1;
            }
            let (stream, peer) = self.accepted.recv().await?;
            self.asked = self.asked.saturating_sub(1);
            if let Source::Master { worker, .. } = &self.source {
                // The accept thread counts its own as it accepts.
                worker.connections().accepted();
            }
            let converted = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            match converted {
                Ok(stream) => {
                    if let Some(worker) = crate::worker::connected() {
                        worker.connection_accepted();
                    }
                    return Some((stream, peer));
                }
                Err(e) => tracing::warn!("accepted connection unusable: {e}"),
            }
        }
    }

    /// Lets the source take up to `window` connections ahead of the server (default 1, at
    /// most 4): a server that hands each connection to a task at once, like
    /// `graceful::serve`, goes faster with 2, at the price of one more connection lost if
    /// the worker is killed.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.clamp(1, MAX_WINDOW);
        self
    }

    /// Asks the source for one connection; false once stopped.
    fn ask(&self) -> bool {
        match &self.source {
            Source::Thread { demand, .. } => {
                demand.as_ref().is_some_and(|d| d.try_send(()).is_ok())
            }
            Source::Master { demand, .. } => {
                if demand.is_closed() {
                    return false;
                }
                demand.add_permits(1);
                true
            }
        }
    }

    /// Stops accepting new connections. A connection already on its way is still returned
    /// by [`Acceptor::accept`], which then returns `None`.
    pub fn stop(&mut self) {
        match &mut self.source {
            Source::Thread { demand, stop, .. } => {
                demand.take();
                if let Err(e) = stop.write(1) {
                    tracing::error!("cannot stop the accept thread: {e}");
                }
            }
            // Waiting and later hand-overs are refused and go to other workers.
            Source::Master {
                worker, accepting, ..
            } => {
                worker.close_feed(&self.local_addr.to_string());
                if std::mem::take(accepting) {
                    worker.connections().accepting(false);
                }
            }
        }
    }

    /// Why [`Acceptor::accept`] returned `None` without a stop, if it did: the listener
    /// could not accept any more (it was closed or is not listening: `EINVAL`, `EBADF`, …),
    /// or waiting on it failed. Taken once. Passing failures (a connection aborted early,
    /// descriptors short) never end the accept thread; they are logged and retried.
    pub fn take_error(&mut self) -> Option<io::Error> {
        match &self.source {
            Source::Thread { failed, .. } => {
                failed.lock().unwrap_or_else(|p| p.into_inner()).take()
            }
            Source::Master { .. } => None,
        }
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop();
        self.accepted.close();
        if let Source::Thread { thread, .. } = &mut self.source {
            if let Some(thread) = thread.take() {
                // The thread ends at once: it is stopped and its channel is closed.
                let _ = thread.join();
            }
        }
    }
}

/// Accepts one connection per demand token, until stopped (`Ok`) or until the listener
/// cannot accept any more (`Err`). In a cluster, `balance` holds this worker's live
/// connections: before each accept it waits its turn ([`wait_for_turn`]) and it counts each
/// connection it accepts.
fn accept_loop(
    epoll: &Epoll,
    listener: &std::net::TcpListener,
    demanded: &std::sync::mpsc::Receiver<()>,
    tx: &mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
    balance: Option<&Connections>,
) -> io::Result<()> {
    let mut events = [EpollEvent::empty(); 2];
    let mut failures = LogThrottle::new();
    // Ends when the demand sender is dropped (stop).
    while demanded.recv().is_ok() {
        if let Some(connections) = balance {
            if !wait_for_turn(epoll, listener, connections) {
                return Ok(());
            }
        }
        // At the back of the socket's queue of exclusive waiters: the kernel wakes the front
        // one for each connection, so the workers take turns. Two `epoll_ctl` calls per
        // accept (this and the delete below): perf puts them at ~7% of the CPU under
        // `Connection: close` load, but turns of 4 accepts measured no faster (see
        // docs/BENCHMARKS.md).
        if let Err(e) = queue_up(epoll, listener) {
            tracing::error!("accept thread: cannot wait on the listener: {e}");
        }
        let accepted = loop {
            let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => &events[..n],
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::other(format!("epoll_wait failed: {e}"))),
            };
            if ready.iter().any(|e| e.data() == STOP) {
                return Ok(());
            }
            match listener.accept() {
                Ok(accepted) => break accepted,
                // Another worker took it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_listener_broken(&e) => return Err(e),
                Err(e) => {
                    // Out of descriptors and the like: the listener itself is fine.
                    if !pause_after(&e, &mut failures, epoll, listener) {
                        return Ok(());
                    }
                }
            }
        };
        // Off the queue until the server asks for the next one: the kernel wakes a worker
        // that waits.
        let _ = epoll.delete(listener.as_fd());
        if let Some(connections) = balance {
            connections.accepted();
        }
        if tx.blocking_send(accepted).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// While this worker is crowded (it holds clearly more live connections than the other
/// accepting workers), stays off the socket's queue of exclusive waiters, so that the
/// kernel wakes the others for the next connections. It still watches the socket (edge
/// triggered, not exclusive: a wake-up for each new connection, taken from nobody) and looks
/// at the table again at each one, and every [`RECHECK`] for its own connections closing. A
/// connection still waiting [`GRACE`] after it was seen is taken anyway: the others are busy
/// or gone. False when stopped meanwhile.
fn wait_for_turn(
    epoll: &Epoll,
    listener: &std::net::TcpListener,
    connections: &Connections,
) -> bool {
    if !connections.crowded() {
        return true;
    }
    let watch = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, LISTENER);
    if let Err(e) = epoll.add(listener.as_fd(), watch) {
        // Balancing is an optimisation: accept rather than stall.
        tracing::error!("accept thread: cannot watch the listener while balancing: {e}");
        return true;
    }
    let mut waiting_since: Option<Instant> = None;
    let mut events = [EpollEvent::empty(); 2];
    let turn = loop {
        let timeout = match waiting_since {
            Some(since) => GRACE.saturating_sub(since.elapsed()),
            None => RECHECK,
        };
        let timeout = EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::NONE);
        match epoll.wait(&mut events, timeout) {
            Ok(n) if events[..n].iter().any(|e| e.data() == STOP) => break false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("accept thread: epoll_wait failed while balancing: {e}");
                break true;
            }
        }
        if !connections.crowded() {
            break true;
        }
        if has_waiting_connection(listener) {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= GRACE {
                break true;
            }
        } else {
            waiting_since = None;
        }
    };
    let _ = epoll.delete(listener.as_fd());
    turn
}

/// Whether a connection waits in the listener's accept queue.
fn has_waiting_connection(listener: &std::net::TcpListener) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// After a failed accept: logs it (once per second at most, with the count) and waits,
/// [`ACCEPT_PAUSE`] when the descriptor table is full (nginx's pause; the connections wait
/// in the kernel's queue, and other workers take them meanwhile), 10 ms otherwise. While
/// paused this worker is off the socket's queue of waiters, so it takes no wake-up another
/// worker could use. False when stopped meanwhile.
fn pause_after(
    error: &io::Error,
    failures: &mut LogThrottle,
    epoll: &Epoll,
    listener: &std::net::TcpListener,
) -> bool {
    let pause = accept_failed(failures, "accept failed", error);
    let _ = epoll.delete(listener.as_fd());
    let deadline = Instant::now() + pause;
    let mut events = [EpollEvent::empty(); 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let timeout = EpollTimeout::try_from(left).unwrap_or(EpollTimeout::NONE);
        match epoll.wait(&mut events, timeout) {
            Ok(0) => break,
            Ok(_) if events[0].data() == STOP => return false,
            // The listener still woke us: it was not taken off the wait list (a failed
            // delete); take it off again and keep pausing rather than end the accept thread.
            Ok(_) => {
                let _ = epoll.delete(listener.as_fd());
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("accept thread: epoll_wait failed: {e}");
                return false;
            }
        }
    }
    if let Err(e) = queue_up(epoll, listener) {
        tracing::error!("accept thread: cannot wait on the listener: {e}");
        return false;
    }
    true
}
