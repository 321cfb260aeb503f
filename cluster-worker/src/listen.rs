//! `listen()` and `incoming()`: where a worker's connections come from.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::acceptor::Acceptor;
use crate::worker::{Granted, Worker};

/// What the master granted for an address.
enum Obtained {
    /// A listening socket to accept on (Shared, ReusePort, or outside a cluster).
    Listener(TcpListener),
    /// Round-robin: the master hands the connections over.
    FromMaster(Acceptor),
}

/// A listening socket on `address`. In a cluster it is the master's socket for that address,
/// shared with every worker that asks (bound by the master at the first request); outside a
/// cluster it is bound here with the same options. Errors name the address.
///
/// In `RoundRobin` scheduling the master accepts and there is no socket to give: use
/// [`incoming`], which works in every mode.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = cluster_worker::listen("127.0.0.1:1337".parse().unwrap()).await?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     // serve `stream`…
/// #   drop((stream, peer));
/// }
/// # }
/// ```
pub async fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    match obtain(address).await? {
        Obtained::Listener(listener) => Ok(listener),
        Obtained::FromMaster(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "listen on {address}: the cluster schedules round-robin (the master hands \
                 connections over); use cluster_worker::incoming"
            ),
        )),
    }
}

/// The connections for `address`, in any scheduling mode: accepted in turn with the other
/// workers on the shared socket, accepted on this worker's own socket (ReusePort), or handed
/// over by the master (RoundRobin). `graceful::serve` takes what this returns.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let mut incoming = cluster_worker::incoming("127.0.0.1:1337".parse().unwrap()).await?;
/// while let Some((stream, peer)) = incoming.accept().await {
///     // serve `stream`…
/// #   drop((stream, peer));
/// }
/// # Ok(()) }
/// ```
pub async fn incoming(address: SocketAddr) -> io::Result<Acceptor> {
    match obtain(address).await? {
        Obtained::Listener(listener) => Acceptor::new(listener),
        Obtained::FromMaster(acceptor) => Ok(acceptor),
    }
}

async fn obtain(address: SocketAddr) -> io::Result<Obtained> {
    let worker = Worker::try_current().map_err(io::Error::other)?;
    let Some(worker) = worker else {
        // Passed by systemd or the `cluster` command, else bound here.
        let own = match crate::activated::take_tcp(address) {
            Some(passed) => passed,
            None => cluster_ipc::bind_tcp(address, cluster_ipc::DEFAULT_BACKLOG)?,
        };
        return Ok(Obtained::Listener(TcpListener::from_std(own)?));
    };
    let (local, granted) = worker
        .request_listener(&address.to_string())
        .await
        .map_err(|reason| io::Error::new(io::ErrorKind::AddrNotAvailable, reason))?;
    let obtained = match granted {
        Granted::Shared(fd) => {
            let shared = std::net::TcpListener::from(fd);
            // The flag is shared with the master's copy, which set it already; set it anyway
            // in case another holder cleared it.
            shared.set_nonblocking(true)?;
            Obtained::Listener(TcpListener::from_std(shared)?)
        }
        // ReusePort scheduling: a socket of our own in the address's SO_REUSEPORT group.
        Granted::BindOwn(own) => Obtained::Listener(TcpListener::from_std(
            cluster_ipc::bind_tcp_reuse_port(own, cluster_ipc::DEFAULT_BACKLOG)?,
        )?),
        // The feed must exist before the master hears we listen and starts handing over.
        Granted::RoundRobin(local) => Obtained::FromMaster(Acceptor::from_master(&worker, local)),
    };
    worker.report_listening(local).await;
    Ok(obtained)
}

/// A Unix socket listening at `path`: the master's socket for that path inside a cluster
/// (shared by every worker that asks, in every scheduling mode), a socket of its own outside
/// one (replacing a socket file left there). Errors name the path.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = cluster_worker::listen_unix("/run/app.sock".as_ref()).await?;
/// let (stream, _) = listener.accept().await?;
/// # drop(stream); Ok(()) }
/// ```
pub async fn listen_unix(path: &std::path::Path) -> io::Result<tokio::net::UnixListener> {
    let worker = Worker::try_current().map_err(io::Error::other)?;
    let Some(worker) = worker else {
        let own = cluster_ipc::bind_unix(path, cluster_ipc::DEFAULT_BACKLOG)?;
        return tokio::net::UnixListener::from_std(own);
    };
    let address = format!("{}{}", cluster_ipc::UNIX_PREFIX, path.display());
    let (local, granted) = worker
        .request_listener(&address)
        .await
        .map_err(|reason| io::Error::new(io::ErrorKind::AddrNotAvailable, reason))?;
    let Granted::Shared(fd) = granted else {
        return Err(io::Error::other(format!(
            "listen on {address}: the master did not send the socket"
        )));
    };
    let shared = std::os::unix::net::UnixListener::from(fd);
    shared.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(shared)?;
    worker.report_listening(local).await;
    Ok(listener)
}
