//! Request scope (what Node's `domain` tried): a panic in a handler, or in a task it spawned
//! with [`spawn`], answers 500 to that request.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Notify;

use crate::report::payload_message;

tokio::task_local! {
    static SCOPE: Arc<RequestScope>;
}

/// The panic of one request, if any part of it panicked.
#[derive(Default)]
struct RequestScope {
    panic: Mutex<Option<String>>,
    panicked: Notify,
}

impl RequestScope {
    fn record(&self, message: String) {
        let mut panic = self.panic.lock().unwrap_or_else(|p| p.into_inner());
        if panic.is_none() {
            *panic = Some(message);
        }
        drop(panic);
        self.panicked.notify_one();
    }

    fn recorded(&self) -> Option<String> {
        self.panic.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn wait(&self) -> String {
        loop {
            let notified = self.panicked.notified();
            if let Some(message) = self.recorded() {
                return message;
            }
            notified.await;
        }
    }
}

/// Polls a future inside `catch_unwind`: a panic while polling becomes `Err(message)`.
/// The future is boxed so no pin projection (and no `unsafe`) is needed.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    fn new(future: F) -> Self {
        CatchUnwind(Box::pin(future))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload_message(&*payload))),
        }
    }
}

/// Spawns `future` on the tokio runtime as part of the current request: if it panics, the
/// request that spawned it (through any depth of `spawn`) is answered 500. Outside a request
/// it is a plain spawn whose panic is still caught (and reported by the panic hook).
///
/// Returns the task's output, or `None` if it panicked.
///
/// ```no_run
/// # async fn handler() {
/// graceful::spawn(async {
///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///     panic!("foo is not defined"); // the request gets a 500
/// });
/// # }
/// ```
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<Option<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let scope = SCOPE.try_with(Arc::clone).ok();
    tokio::spawn(async move {
        let result = match &scope {
            Some(scope) => SCOPE.scope(scope.clone(), CatchUnwind::new(future)).await,
            None => CatchUnwind::new(future).await,
        };
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                if let Some(scope) = scope {
                    scope.record(message);
                }
                None
            }
        }
    })
}

/// Runs one request's handler in its own scope. A panic in it, or in a task it spawned with
/// [`spawn`], yields `Err(message)` as soon as it happens.
///
/// A handler that awaits the task it spawned sees `None` from its handle once the task has
/// panicked, and may then answer normally; the panic, recorded before the task ended, wins:
/// the request still gets its 500.
async fn run_scoped<F: Future>(handler: F) -> Result<F::Output, String> {
    let scope = Arc::new(RequestScope::default());
    let handler = SCOPE.scope(scope.clone(), CatchUnwind::new(handler));
    tokio::select! {
        biased;
        message = scope.wait() => Err(message),
        result = handler => match scope.recorded() {
            Some(message) => Err(message),
            None => result,
        },
    }
}

/// The 500 answered to a request whose handling panicked. The body names the panic's message
/// only when `message_in_body` is set (for development): a panic message can hold anything
/// the code had at hand, and it goes to the log either way (graceful's panic hook, or the
/// standard one).
fn internal_error<B: From<Bytes>>(message: &str, message_in_body: bool) -> Response<B> {
    let body = if message_in_body {
        format!("500 Internal Server Error: the request's handler panicked: {message}\n")
    } else {
        "500 Internal Server Error\n".to_string()
    };
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A service wrapper that answers 500 when handling a request panics (in the handler or in
/// a task spawned with [`spawn`]). Works with plain hyper (`hyper::service::Service`) and
/// with tower/axum (`tower_service::Service`, see [`CatchPanicLayer`]).
///
/// The 500's body is generic (`500 Internal Server Error`); the panic message goes to the log.
/// [`CatchPanic::panic_message_in_body`] puts it in the body too, for development.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
    message_in_body: bool,
}

impl<S> CatchPanic<S> {
    /// Wraps `inner`; the 500's body does not name the panic.
    pub fn new(inner: S) -> Self {
        CatchPanic {
            inner,
            message_in_body: false,
        }
    }

    /// With `true`, the 500's body names the panic's message (for development: the message
    /// can hold anything the code had at hand, so never where clients are not trusted).
    pub fn panic_message_in_body(mut self, message_in_body: bool) -> Self {
        self.message_in_body = message_in_body;
        self
    }
}

/// The tower layer of [`CatchPanic`], for servers other than [`crate::serve`] (which runs
/// every request this way already), e.g. `axum::serve`:
/// `Router::new().layer(CatchPanicLayer::new())`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer {
    message_in_body: bool,
}

impl CatchPanicLayer {
    /// The layer; the 500's body does not name the panic.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`CatchPanic::panic_message_in_body`].
    pub fn panic_message_in_body(mut self, message_in_body: bool) -> Self {
        self.message_in_body = message_in_body;
        self
    }
}

impl<S> tower_layer::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic::new(inner).panic_message_in_body(self.message_in_body)
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs a service's response future in its own request scope; a panic becomes a 500.
pub(crate) fn answer_500_on_panic<F, B, E>(
    future: F,
    message_in_body: bool,
) -> BoxFuture<Result<Response<B>, E>>
where
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: From<Bytes> + Send + 'static,
    E: Send + 'static,
{
    Box::pin(async move {
        match run_scoped(future).await {
            Ok(result) => result,
            Err(message) => Ok(internal_error(&message, message_in_body)),
        }
    })
}

impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for CatchPanic<S>
where
    S: hyper::service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResBody>, S::Error>>;

    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        answer_500_on_panic(self.inner.call(request), self.message_in_body)
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for CatchPanic<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        answer_500_on_panic(self.inner.call(request), self.message_in_body)
    }
}
