//! `listen()` and `incoming()`: where a worker's connections come from.

use std::io;
use std::net::SocketAddr;

use cluster_ipc::{DEFAULT_BACKLOG, ListenOptions};
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
/// In `RoundRobin` and `Sticky` scheduling the master accepts and there is no socket to give: use
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
///
/// # With axum's own server loop
///
/// The listener is a plain `tokio::net::TcpListener`, so `axum::serve` takes it as it is.
/// To drain when the worker disconnects (the master's request, a reload, SIGTERM, the
/// master's death), end axum's loop with the worker's [`Worker::closing`]: axum then stops
/// accepting, finishes the requests in flight and returns, and the worker exits.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" }));
/// let listener = cluster_worker::listen("127.0.0.1:3000".parse().unwrap()).await?;
/// let worker = cluster_worker::Worker::current(); // None when run alone
/// let _serving = worker.as_ref().map(|w| w.register_server());
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async move {
///         match worker {
///             Some(worker) => worker.closing().await,
///             None => std::future::pending().await,
///         }
///     })
///     .await
/// # }
/// ```
///
/// What axum's loop does not do, `graceful::serve` does (it takes the same `Router`): a
/// panicking request answered 500 (with axum's loop, add `graceful::CatchPanicLayer`), the
/// hand-over to a replacement after a panic, `Connection: close` on the last responses
/// rather than closing idle keep-alive connections at once (a client sending on one at
/// that moment loses its request: measured with 6 keep-alive clients, 6, 0 and 3 failed
/// requests in 3 disconnects under way; none with `graceful::serve`), and the master's
/// `max_requests` counted in requests.
pub async fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    listen_with(address, ListenOptions::new()).await
}

/// [`listen`] with the options of Node's `server.listen({ backlog, ipv6Only })`: they apply
/// when this request binds the socket (the first for this address and index in the
/// cluster), as in Node; a socket bound already is shared as it is.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use cluster_worker::ListenOptions;
/// let options = ListenOptions::new().backlog(4096).ipv6_only(true);
/// let listener = cluster_worker::listen_with("[::]:8080".parse().unwrap(), options).await?;
/// # drop(listener); Ok(()) }
/// ```
pub async fn listen_with(address: SocketAddr, options: ListenOptions) -> io::Result<TcpListener> {
    match obtain(address, options).await? {
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
    incoming_with(address, ListenOptions::new()).await
}

/// [`incoming`] with listen options (see [`listen_with`]).
pub async fn incoming_with(address: SocketAddr, options: ListenOptions) -> io::Result<Acceptor> {
    match obtain(address, options).await? {
        Obtained::Listener(listener) => Acceptor::new(listener),
        Obtained::FromMaster(acceptor) => Ok(acceptor),
    }
}

async fn obtain(address: SocketAddr, options: ListenOptions) -> io::Result<Obtained> {
    let worker = Worker::try_current().map_err(io::Error::other)?;
    let Some(worker) = worker else {
        // Passed by systemd or the `cluster` command (bound already: `options` were the
        // binder's), else bound here.
        let own = match crate::activated::take_tcp(address) {
            Some(passed) => passed,
            None => cluster_ipc::bind_tcp_with(address, DEFAULT_BACKLOG, options, false)?,
        };
        return Ok(Obtained::Listener(TcpListener::from_std(own)?));
    };
    let requested = address.to_string();
    // Dropped (the index freed) if this future is, or on an error.
    let reservation = worker.listen_indexes().reservation(&requested);
    let index = reservation.index();
    // A replacement has its predecessor's sockets from the handoff: no round trip.
    let obtained = match worker.take_handed(&requested, index) {
        Some((local, granted)) => open(&worker, granted, options).map(|o| (o, local)),
        None => obtain_from(&worker, &requested, index, options).await,
    };
    match &obtained {
        Ok((Obtained::Listener(listener), _)) => reservation.granted(listener),
        // Round-robin: no descriptor here to tell when the server is gone.
        Ok((Obtained::FromMaster(_), _)) | Err(_) => drop(reservation),
    }
    let (obtained, local) = obtained?;
    worker.report_listening(local).await;
    Ok(obtained)
}

/// The master's answer for the `index`th socket of this worker on `requested`, and the
/// address to report as listening.
async fn obtain_from(
    worker: &Worker,
    requested: &str,
    index: u32,
    options: ListenOptions,
) -> io::Result<(Obtained, String)> {
    let (local, granted) = worker
        .request_listener(requested, index, options)
        .await
        .map_err(cluster_ipc::ListenFailure::into_io_error)?;
    Ok((open(worker, granted, options)?, local))
}

/// What a grant gives to accept on.
fn open(worker: &Worker, granted: Granted, options: ListenOptions) -> io::Result<Obtained> {
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
            cluster_ipc::bind_tcp_with(own, DEFAULT_BACKLOG, options, true)?,
        )?),
        // The feed must exist before the master hears we listen and starts handing over.
        Granted::RoundRobin(local) => Obtained::FromMaster(Acceptor::from_master(worker, local)),
    };
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
    let path = in_workers_directory(path)?;
    let address = format!("{}{}", cluster_ipc::UNIX_PREFIX, path.display());
    let (fd, local) = shared_socket(&worker, &address, ListenOptions::new()).await?;
    let shared = std::os::unix::net::UnixListener::from(fd);
    shared.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(shared)?;
    worker.report_listening(local).await;
    Ok(listener)
}

/// A relative Unix path as the worker means it: in its own working directory (Node binds it
/// there). The master binds paths relative to its own directory, so a relative path is sent
/// as is while both directories are the same (it then names the same file, and matches a
/// socket the master bound by that relative path), and made absolute when they differ
/// (`Settings::cwd`).
fn in_workers_directory(
    path: &std::path::Path,
) -> io::Result<std::borrow::Cow<'_, std::path::Path>> {
    if path.is_absolute() {
        return Ok(path.into());
    }
    let here = std::env::current_dir()?;
    let masters = std::fs::read_link(format!("/proc/{}/cwd", std::os::unix::process::parent_id()));
    if masters.is_ok_and(|m| m == here) {
        return Ok(path.into());
    }
    Ok(here.join(path).into())
}

/// A UDP socket bound to `address`: the master's socket for that address inside a cluster,
/// shared by every worker that asks, like Node's `dgram` sockets in a cluster (the kernel
/// gives each datagram to one of the workers reading; a reply sent from any worker leaves
/// from the shared address); a socket of its own outside one. Port 0 gets one port for the
/// whole cluster. Errors keep their kind (`AddrInUse`, `PermissionDenied`…) and name the
/// address.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let socket = cluster_worker::bind_udp("127.0.0.1:5353".parse().unwrap()).await?;
/// let mut packet = [0u8; 1500];
/// let (length, peer) = socket.recv_from(&mut packet).await?;
/// socket.send_to(&packet[..length], peer).await?;
/// # Ok(()) }
/// ```
pub async fn bind_udp(address: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    bind_udp_with(address, ListenOptions::new()).await
}

/// [`bind_udp`] with `options`: `ipv6_only(true)` on an IPv6 address keeps the IPv4 port
/// free (Node's `ipv6Only` for `dgram`); the backlog does not apply to datagrams. The
/// options are used by whoever binds the socket: the master, when this request is the
/// first for the address.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use cluster_worker::ListenOptions;
/// let v6 = cluster_worker::bind_udp_with(
///     "[::]:5353".parse().unwrap(),
///     ListenOptions::new().ipv6_only(true),
/// )
/// .await?;
/// # drop(v6); Ok(()) }
/// ```
pub async fn bind_udp_with(
    address: SocketAddr,
    options: ListenOptions,
) -> io::Result<tokio::net::UdpSocket> {
    let worker = Worker::try_current().map_err(io::Error::other)?;
    let Some(worker) = worker else {
        return tokio::net::UdpSocket::from_std(cluster_ipc::bind_udp_with(address, options)?);
    };
    let requested = format!("{}{address}", cluster_ipc::UDP_PREFIX);
    let (fd, local) = shared_socket(&worker, &requested, options).await?;
    let shared = std::net::UdpSocket::from(fd);
    shared.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(shared)?;
    worker.report_listening(local).await;
    Ok(socket)
}

/// A UDP socket of this worker's own on `address`, with `SO_REUSEPORT`, bound here without
/// asking the master (Node's `dgram` with `reusePort: true`): every worker that does the
/// same shares the port, and the kernel spreads datagrams over their sockets by the
/// senders' addresses. Unlike [`bind_udp`], datagrams queued on a worker's socket are lost
/// with it if it dies, and the port is free while no worker holds one. The master still
/// hears that the worker listens (`Event::ListeningUdp`).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let socket = cluster_worker::bind_udp_reuse_port("0.0.0.0:5353".parse().unwrap()).await?;
/// # drop(socket); Ok(()) }
/// ```
pub async fn bind_udp_reuse_port(address: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let own = cluster_ipc::bind_udp_reuse_port(address, ListenOptions::new())?;
    let local = own.local_addr()?;
    let socket = tokio::net::UdpSocket::from_std(own)?;
    if let Some(worker) = Worker::try_current().map_err(io::Error::other)? {
        worker
            .report_listening(format!("{}{local}", cluster_ipc::UDP_PREFIX))
            .await;
    }
    Ok(socket)
}

/// The master's socket for a `unix:` or `udp:` address (shared in every scheduling mode),
/// the next index of this worker's for it, and the address to report as listening.
async fn shared_socket(
    worker: &Worker,
    requested: &str,
    options: ListenOptions,
) -> io::Result<(std::os::fd::OwnedFd, String)> {
    // Dropped (the index freed) if this future is, or on an error.
    let reservation = worker.listen_indexes().reservation(requested);
    let reply = worker
        .request_listener(requested, reservation.index(), options)
        .await;
    match reply {
        Ok((local, Granted::Shared(fd))) => {
            reservation.granted(&fd);
            Ok((fd, local))
        }
        Ok(_) => Err(io::Error::other(format!(
            "{requested}: the master did not send the socket"
        ))),
        Err(failure) => Err(failure.into_io_error()),
    }
}
