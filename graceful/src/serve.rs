//! An HTTP/1 accept loop tied to the cluster worker's lifecycle.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection finished before the deadline.
    Drained,
    /// Connections were still open at the deadline and were abandoned.
    TimedOut,
}

/// Serves HTTP/1 on `listener` with `handler` until the cluster worker starts closing (or
/// forever outside a cluster), then stops accepting, asks every connection to finish its
/// current request and close, and waits at most `drain_timeout` for them.
///
/// The server is registered with the worker, so `Worker::drained` waits for it.
pub async fn serve_http<H, Fut>(
    listener: TcpListener,
    handler: H,
    drain_timeout: Duration,
) -> DrainOutcome
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let worker = cluster_worker::Worker::current();
    let _registration = worker.as_ref().map(|w| w.register_server());
    let closing = async {
        match &worker {
            Some(worker) => worker.closing().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(closing);
    let shutdown = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and similar: the listener itself is fine.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut closing => break,
        };
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = shutdown.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    match tokio::time::timeout(drain_timeout, shutdown.shutdown()).await {
        Ok(()) => DrainOutcome::Drained,
        Err(_) => DrainOutcome::TimedOut,
    }
}
