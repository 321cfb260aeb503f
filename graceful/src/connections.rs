//! Where [`crate::serve`] gets its connections: TCP (through `cluster_worker::Acceptor`, in
//! any scheduling mode) or a Unix socket.

use std::future::Future;
use std::net::SocketAddr;

use cluster_ipc::pressure::{LogThrottle, accept_failed, is_listener_broken};
use cluster_worker::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A source of connections for [`crate::serve`].
pub trait Connections: Send {
    /// The connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection; `None` once stopped and drained.
    fn accept(&mut self) -> impl Future<Output = Option<Self::Stream>> + Send;

    /// Stops taking new connections; those already taken still come out of `accept`.
    fn stop(&mut self);

    /// The TCP address, for a hand-over's relief (none for Unix sockets).
    fn tcp_address(&self) -> Option<SocketAddr>;

    /// Why `accept` returned `None` without [`Connections::stop`], if it did: the listener
    /// cannot accept any more. [`crate::serve`] returns it. Taken once.
    fn take_error(&mut self) -> Option<std::io::Error> {
        None
    }
}

impl Connections for Acceptor {
    type Stream = TcpStream;

    async fn accept(&mut self) -> Option<TcpStream> {
        Acceptor::accept(self).await.map(|(stream, _)| stream)
    }

    fn stop(&mut self) {
        Acceptor::stop(self);
    }

    fn tcp_address(&self) -> Option<SocketAddr> {
        Some(self.local_addr())
    }

    fn take_error(&mut self) -> Option<std::io::Error> {
        Acceptor::take_error(self)
    }
}

/// Connections of a Unix socket (from `cluster_worker::listen_unix`).
pub struct UnixConnections {
    listener: Option<UnixListener>,
    failures: LogThrottle,
    failed: Option<std::io::Error>,
}

impl Connections for UnixConnections {
    type Stream = UnixStream;

    async fn accept(&mut self) -> Option<UnixStream> {
        loop {
            let listener = self.listener.as_ref()?;
            match listener.accept().await {
                Ok((stream, _)) => return Some(stream),
                Err(e) if is_listener_broken(&e) => {
                    self.listener = None;
                    self.failed = Some(e);
                    return None;
                }
                Err(e) => {
                    // Out of descriptors and the like: the listener itself is fine. A full
                    // descriptor table pauses accepting (connections wait in the queue).
                    let pause = accept_failed(&mut self.failures, "accept failed", &e);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    fn stop(&mut self) {
        // Our copy of the shared socket closes; the socket stays open in the master.
        self.listener = None;
    }

    fn tcp_address(&self) -> Option<SocketAddr> {
        None
    }

    fn take_error(&mut self) -> Option<std::io::Error> {
        self.failed.take()
    }
}

/// What [`crate::serve`] accepts from: a TCP listener (accepted on a dedicated thread, in
/// turn with the other workers), a `cluster_worker::Acceptor` (e.g. from
/// `cluster_worker::incoming`, which also covers round-robin scheduling), or a Unix
/// listener.
pub trait IntoConnections {
    /// The source it becomes.
    type Connections: Connections;

    /// Makes the source.
    fn into_connections(self) -> std::io::Result<Self::Connections>;
}

impl IntoConnections for TcpListener {
    type Connections = Acceptor;

    fn into_connections(self) -> std::io::Result<Acceptor> {
        Ok(Acceptor::new(self)?.with_window(2))
    }
}

impl IntoConnections for Acceptor {
    type Connections = Acceptor;

    fn into_connections(self) -> std::io::Result<Acceptor> {
        // Each connection goes to a task at once: one accepted ahead keeps the accept thread
        // from waiting for every ask.
        Ok(self.with_window(2))
    }
}

impl IntoConnections for UnixListener {
    type Connections = UnixConnections;

    fn into_connections(self) -> std::io::Result<UnixConnections> {
        Ok(UnixConnections {
            listener: Some(self),
            failures: LogThrottle::new(),
            failed: None,
        })
    }
}
