//! `listen()`: the master's shared socket inside a cluster, a socket of our own outside.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::worker::{Granted, Worker};

/// A listening socket on `address`. In a cluster it is the master's socket for that address,
/// shared with every worker that asks (bound by the master at the first request); outside a
/// cluster it is bound here with the same options. Errors name the address.
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
    let worker = Worker::try_current().map_err(io::Error::other)?;
    let Some(worker) = worker else {
        return TcpListener::from_std(cluster_ipc::bind_tcp(
            address,
            cluster_ipc::DEFAULT_BACKLOG,
        )?);
    };
    let (local, granted) = worker
        .request_listener(&address.to_string())
        .await
        .map_err(|reason| io::Error::new(io::ErrorKind::AddrNotAvailable, reason))?;
    let std_listener = match granted {
        Granted::Shared(fd) => {
            let shared = std::net::TcpListener::from(fd);
            // The flag is shared with the master's copy, which set it already; set it anyway
            // in case another holder cleared it.
            shared.set_nonblocking(true)?;
            shared
        }
        // ReusePort scheduling: a socket of our own in the address's SO_REUSEPORT group.
        Granted::BindOwn(own) => cluster_ipc::bind_tcp(own, cluster_ipc::DEFAULT_BACKLOG)?,
    };
    let listener = TcpListener::from_std(std_listener)?;
    worker.report_listening(local).await;
    Ok(listener)
}
