//! What [`crate::serve`] serves: any tower service (an axum `Router` as it is), and the two
//! ways to hand it plain hyper code.
//!
//! `serve` takes tower services only. A hyper service and a tower service cannot both be
//! accepted by one generic parameter (Rust cannot know that no type is both, so the two
//! blanket implementations would conflict), and tower is what axum, tonic and every
//! `tower-http` middleware speak. For hyper code, [`service_fn`] replaces
//! `hyper::service::service_fn` word for word, and [`HyperService`] wraps any other hyper
//! service.

use std::future::Future;
use std::task::{Context, Poll};

/// A service from an async function of the request: the tower service [`crate::serve`]
/// takes, and a hyper service as well. Same shape as `hyper::service::service_fn`.
///
/// ```no_run
/// # use bytes::Bytes; use http_body_util::Full; use hyper::{Request, Response, body::Incoming};
/// # async fn demo(listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello\n"))))
/// }
/// graceful::serve(listener, graceful::service_fn(hello)).await
/// # }
/// ```
pub fn service_fn<F>(function: F) -> ServiceFn<F> {
    ServiceFn { function }
}

/// See [`service_fn`].
#[derive(Debug, Clone, Copy)]
pub struct ServiceFn<F> {
    function: F,
}

impl<F, Request, Fut, Response, Error> tower_service::Service<Request> for ServiceFn<F>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Result<Response, Error>>,
{
    type Response = Response;
    type Error = Error;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Fut {
        (self.function)(request)
    }
}

impl<F, Request, Fut, Response, Error> hyper::service::Service<Request> for ServiceFn<F>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Result<Response, Error>>,
{
    type Response = Response;
    type Error = Error;
    type Future = Fut;

    fn call(&self, request: Request) -> Fut {
        (self.function)(request)
    }
}

/// A hyper service as the tower service [`crate::serve`] takes (the reverse of
/// `hyper_util::service::TowerToHyperService`). A hyper service is always ready.
///
/// ```no_run
/// # async fn demo(listener: tokio::net::TcpListener, app: impl hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<http_body_util::Full<bytes::Bytes>>, Error = std::convert::Infallible, Future: Send + 'static> + Clone + Send + 'static) -> std::io::Result<()> {
/// graceful::serve(listener, graceful::HyperService(app)).await
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HyperService<S>(pub S);

impl<S, Request> tower_service::Service<Request> for HyperService<S>
where
    S: hyper::service::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> S::Future {
        self.0.call(request)
    }
}
