//! The HTTP/1 accept loop that takes part in the graceful exit and in the worker's
//! ordinary disconnect.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::connections::{Connections, IntoConnections};
use crate::install::{ServerCount, State, state};
use crate::scope::{BoxFuture, answer_500_on_panic};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves HTTP/1 on `listener` with `service` until the server must close; returns when its
/// last connection is done.
///
/// `service` is any tower service of `Request<Incoming>`: an axum `Router` as it is (no
/// adapter), a router with `tower-http` layers, a `tower::service_fn`. Plain hyper code
/// uses [`crate::service_fn`] (in place of `hyper::service::service_fn`) or wraps its
/// service in [`crate::HyperService`]. Each request runs as [`crate::CatchPanic`] runs it: a
/// panic in the handler, or in a task it spawned with [`crate::spawn`], answers that request
/// 500 (naming the panic only with [`crate::Options::panic_message_in_body`]).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" }));
/// let listener = cluster_worker::incoming("127.0.0.1:3000".parse().unwrap()).await?;
/// graceful::serve(listener, app).await
/// # }
/// ```
///
/// The server closes when the worker disconnects (its own call, the master's request,
/// SIGTERM, the master's death): it stops accepting at once. After a panic, with graceful
/// [`crate::install`]ed, it keeps accepting until a replacement accepts on the same address
/// (or `handover_timeout`), then stops. Either way every response from then on carries
/// `Connection: close`, and a keep-alive connection idle for `idle_grace` is closed, so no
/// client that is sending has its connection reset. After a panic it does not return: the
/// process ends when graceful's exit sequence is done.
///
/// # Errors
///
/// `Ok(())` once it has closed as above and its connections are done. An error when it
/// cannot start accepting (the accept thread or its descriptors cannot be made), or when
/// the listener stops accepting for good (it was closed, or is not a listening socket:
/// `EINVAL`, `EBADF`, …); in that case the connections already accepted are served to
/// their end first. Passing accept failures (a connection aborted, descriptors short) are
/// logged and retried, never returned.
pub async fn serve<L, S, B>(listener: L, service: S) -> io::Result<()>
where
    L: IntoConnections,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let state = state();
    let worker = state
        .and_then(|s| s.worker().cloned())
        .or_else(cluster_worker::Worker::current);
    let _drain_registration = worker.as_ref().map(|w| w.register_server());
    // Requests, not connections, count towards the master's `max_requests`; the
    // connections open count towards the balance between workers.
    if let Some(worker) = &worker {
        worker.count_requests();
        worker.count_connections();
    }
    let counted = state.map(CountedServer::new);
    // A dedicated accept thread spreads connections evenly over the workers sharing the
    // socket (see `cluster_worker::Acceptor`).
    let mut acceptor = listener.into_connections().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("graceful::serve cannot start accepting: {e}"),
        )
    })?;
    let address = acceptor.tcp_address();
    let idle_grace = state.map_or(Duration::from_secs(1), |s| s.options_idle_grace());
    let message_in_body = state.is_some_and(|s| s.options_panic_message_in_body());

    let closing = watch::Sender::new(false);
    let stop_accepting = stop_accepting(state, worker.clone(), address, &closing);
    tokio::pin!(stop_accepting);
    let open = watch::Sender::new(0usize);
    let http = hyper::server::conn::http1::Builder::new();
    let spawn_connection = |stream: <L::Connections as Connections>::Stream| {
        let connection = Arc::new(ConnectionState::new());
        let service = Tracked {
            service: service.clone(),
            message_in_body,
            connection: connection.clone(),
            closing: closing.subscribe(),
            worker: worker.clone(),
        };
        let served = http.serve_connection(TokioIo::new(stream), service);
        let open_guard = OpenGuard::new(&open);
        let counted = worker.as_ref().map(|w| w.connection_opened());
        let closing = closing.subscribe();
        tokio::spawn(async move {
            let _open = (open_guard, counted);
            drive(served, connection, closing, idle_grace).await;
        });
    };
    let mut failed = None;
    loop {
        tokio::select! {
            accepted = acceptor.accept() => match accepted {
                Some(stream) => spawn_connection(stream),
                None => {
                    failed = acceptor.take_error();
                    break;
                }
            },
            _ = &mut stop_accepting => break,
        }
    }
    acceptor.stop();
    // Connections the accept thread took before the stop are served too: none is lost.
    while let Some(stream) = acceptor.accept().await {
        spawn_connection(stream);
    }
    drop(acceptor);
    if let Some(counted) = &counted {
        counted.stopped_accepting();
    }
    closing.send_replace(true);
    let _ = open.subscribe().wait_for(|n| *n == 0).await;
    drop(counted);
    // After a panic the process ends in graceful's exit sequence (last words, disconnect,
    // exit); returning now could let `main` end the process before that.
    if state.is_some_and(|s| *s.draining.borrow()) {
        std::future::pending::<()>().await;
    }
    match failed {
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!("graceful::serve: the listener stopped accepting: {e}"),
        )),
        None => Ok(()),
    }
}

/// Resolves when this server must stop accepting, after setting `closing` (from which
/// point every response says `Connection: close`).
async fn stop_accepting(
    state: Option<&'static Arc<State>>,
    worker: Option<cluster_worker::Worker>,
    address: Option<SocketAddr>,
    closing: &watch::Sender<bool>,
) {
    let worker_closing = async {
        match &worker {
            Some(worker) => worker.closing().await,
            None => std::future::pending().await,
        }
    };
    let panicked = async {
        match state {
            Some(state) => {
                let _ = state.draining.subscribe().wait_for(|d| *d).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = worker_closing => closing.send_replace(true),
        _ = panicked => {
            closing.send_replace(true);
            // Keep accepting until a replacement accepts on this address.
            if let (Some(state), Some(worker), Some(address)) = (state, &worker, address) {
                let timeout = state.options_handover_timeout();
                if tokio::time::timeout(timeout, worker.relieved(address)).await.is_err() {
                    crate::log::warning!(
                        "no replacement accepts on {address} after {timeout:?}; closing anyway"
                    );
                }
            }
            false
        }
    };
}

/// Serves one connection; once the server closes, shuts it down when it has been idle for
/// `idle_grace` (a connection that keeps sending is closed by `Connection: close` instead).
async fn drive<F, E>(
    served: F,
    connection: Arc<ConnectionState>,
    closing: watch::Receiver<bool>,
    idle_grace: Duration,
) where
    F: Future<Output = Result<(), E>> + GracefulShutdown,
    E: std::fmt::Display,
{
    tokio::pin!(served);
    let idle = connection.idle_after_close(closing, idle_grace);
    tokio::pin!(idle);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended with an error: {e}");
                }
                return;
            }
            _ = &mut idle, if !shutting_down => {
                served.as_mut().start_graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

/// hyper's connection shutdown, named so `drive` can be generic over it.
trait GracefulShutdown {
    fn start_graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulShutdown for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
{
    fn start_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What the server knows of one connection: requests in progress and when it last did
/// anything.
struct ConnectionState {
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
}

impl ConnectionState {
    fn new() -> Self {
        ConnectionState {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.last_active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed(),
        )
    }

    /// Resolves once the server is closing and this connection has been idle for `grace`.
    async fn idle_after_close(&self, mut closing: watch::Receiver<bool>, grace: Duration) {
        let _ = closing.wait_for(|c| *c).await;
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= grace => return,
                Some(idle) => grace - idle,
                None => grace,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
        }
    }
}

/// Adds `Connection: close` once the server is closing, keeps the connection's in-flight
/// count and last activity, counts requests towards the worker's `max_requests`, and calls
/// the tower service (ready, then called, on a clone: the hyper connection calls through
/// `&self`) in its own request scope, so a panic answers 500.
struct Tracked<S> {
    service: S,
    message_in_body: bool,
    connection: Arc<ConnectionState>,
    closing: watch::Receiver<bool>,
    worker: Option<cluster_worker::Worker>,
}

/// Counts a request in flight until its response is ready (or the request is dropped).
struct InFlight(Arc<ConnectionState>);

impl InFlight {
    fn start(connection: &Arc<ConnectionState>) -> Self {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.touch();
        InFlight(connection.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: From<Bytes> + Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<B>, S::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.connection);
        if let Some(worker) = &self.worker {
            worker.request_served();
        }
        let closing = self.closing.clone();
        let mut service = self.service.clone();
        // Readiness and the call itself are inside the scope too: a panic in either is a 500.
        let response = answer_500_on_panic(
            async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(request).await
            },
            self.message_in_body,
        );
        Box::pin(async move {
            let mut response = response.await?;
            if *closing.borrow() {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            drop(in_flight);
            Ok(response)
        })
    }
}

/// Counts a connection as open until its task ends.
struct OpenGuard(watch::Sender<usize>);

impl OpenGuard {
    fn new(open: &watch::Sender<usize>) -> Self {
        open.send_modify(|n| *n += 1);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// This server in graceful's count: registered until it returns, accepting until it stops.
struct CountedServer {
    state: &'static Arc<State>,
    accepting: std::sync::atomic::AtomicBool,
}

impl CountedServer {
    fn new(state: &'static Arc<State>) -> Self {
        state.servers.send_modify(|s: &mut ServerCount| {
            s.registered += 1;
            s.accepting += 1;
        });
        CountedServer {
            state,
            accepting: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn stopped_accepting(&self) {
        if self.accepting.swap(false, Ordering::AcqRel) {
            self.state.servers.send_modify(|s| s.accepting -= 1);
        }
    }
}

impl Drop for CountedServer {
    fn drop(&mut self) {
        self.stopped_accepting();
        self.state.servers.send_modify(|s| s.registered -= 1);
    }
}
