//! Balanced accepting on a socket shared by several workers.
//!
//! tokio registers a listener in its own epoll without `EPOLLEXCLUSIVE`, so every worker
//! wakes for every connection and the one already running (usually the one that just
//! answered) wins: with one client, one worker gets most connections. An `Acceptor` instead
//! accepts on a dedicated thread that waits with `EPOLLEXCLUSIVE`: the kernel wakes only the
//! first waiting worker in the socket's queue, and a worker re-queues at the back after each
//! accept, so the workers take turns; a worker whose previous connection has not been taken
//! by its server yet is not waiting, and is skipped.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::thread::JoinHandle;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LISTENER: u64 = 0;
const STOP: u64 = 1;

/// Puts this worker at the back of the socket's queue of exclusive waiters: the kernel wakes
/// the front one for each connection, so re-queueing after every accept makes the workers
/// take turns.
fn queue_up(epoll: &Epoll, listener: &std::net::TcpListener) -> io::Result<()> {
    let _ = epoll.delete(listener.as_fd());
    epoll.add(
        listener.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER),
    )?;
    Ok(())
}

/// Accepts connections on a dedicated thread; see the module docs. Dropping it (or
/// [`Acceptor::stop`]) stops accepting.
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
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl Acceptor {
    /// Takes over `listener` (it is no longer polled by tokio) and starts the accept thread.
    pub fn new(listener: TcpListener) -> io::Result<Acceptor> {
        let listener = listener.into_std()?;
        let local_addr = listener.local_addr()?;
        let stop = EventFd::new()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        queue_up(&epoll, &listener)?;
        // Capacity 1: the thread accepts the next connection only once the server took
        // the previous one, so a busy worker leaves new connections to the others.
        let (tx, accepted) = mpsc::channel(1);
        let thread = std::thread::Builder::new()
            .name("cluster-acceptor".into())
            .spawn(move || accept_loop(&epoll, &listener, &tx))?;
        Ok(Acceptor {
            accepted,
            stop,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The next connection, ready for tokio; `None` once stopped and every connection
    /// accepted before the stop has been handed out.
    pub async fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let (stream, peer) = self.accepted.recv().await?;
            let converted = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            match converted {
                Ok(stream) => return Some((stream, peer)),
                Err(e) => tracing::warn!("accepted connection unusable: {e}"),
            }
        }
    }

    /// Stops accepting new connections. Connections the thread already accepted are still
    /// returned by [`Acceptor::accept`], which then returns `None`.
    pub fn stop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            tracing::error!("cannot stop the accept thread: {e}");
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
        if let Some(thread) = self.thread.take() {
            // The thread ends at once: it is stopped and its channel is closed.
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    epoll: &Epoll,
    listener: &std::net::TcpListener,
    tx: &mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
) {
    let mut events = [EpollEvent::empty(); 2];
    loop {
        let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => &events[..n],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("accept thread: epoll_wait failed: {e}");
                return;
            }
        };
        if ready.iter().any(|e| e.data() == STOP) {
            return;
        }
        match listener.accept() {
            Ok(accepted) => {
                if let Err(e) = queue_up(epoll, listener) {
                    tracing::error!("accept thread: cannot wait on the listener: {e}");
                    return;
                }
                if tx.blocking_send(accepted).is_err() {
                    // Only after a stop: the server no longer takes connections.
                    return;
                }
            }
            // Another worker took it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: the listener itself is fine.
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
