//! The HTTP side: one accept task, hyper HTTP/1 per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::families::Families;
use super::{Source, not_ready};
use crate::cluster::Phase;

/// OpenMetrics text, which Prometheus reads (prometheus-client writes it).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `address` and serves the endpoints until the master has stopped; returns the bound
/// address. Must be called inside a tokio runtime.
pub(crate) fn serve(
    address: SocketAddr,
    source: Arc<dyn Source>,
    families: Arc<Families>,
) -> Result<SocketAddr, String> {
    let bound = crate::upgrade::take_tcp(address)
        .map_or_else(|| std::net::TcpListener::bind(address), Ok)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .inspect(|l| {
            crate::upgrade::hand_over_too(l, crate::upgrade::Address::Tcp(address));
        })
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| format!("{address}: {e}"))?;
    let local = bound.local_addr().map_err(|e| format!("{address}: {e}"))?;
    tracing::info!(address = %local, "metrics and health endpoints listening");
    tokio::spawn(async move {
        let mut phase = source.phase();
        loop {
            tokio::select! {
                accepted = bound.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (source, families) = (source.clone(), families.clone());
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                let answer = respond(&request, source.as_ref(), &families);
                                async move { Ok::<_, Infallible>(answer) }
                            });
                            let connection = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = connection.await {
                                tracing::debug!("metrics connection: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = async { phase.wait_for(|p| *p == Phase::Stopped).await.map(drop) } => break,
            }
        }
    });
    Ok(local)
}

fn respond<B>(
    request: &Request<B>,
    source: &dyn Source,
    families: &Families,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => match families.encode(&source.groups(), &source.queues(), &source.loads()) {
            Ok(text) => answer(StatusCode::OK, METRICS_CONTENT_TYPE, text),
            Err(e) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot encode the metrics: {e}\n"),
            ),
        },
        "/healthz" => {
            // Answered by the master's runtime after reading its worker table.
            let groups = source.groups().len();
            answer(
                StatusCode::OK,
                "text/plain",
                format!("ok: {groups} groups\n"),
            )
        }
        "/readyz" => match not_ready(source) {
            None => answer(StatusCode::OK, "text/plain", "ready\n".into()),
            Some(reason) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        _ => answer(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
