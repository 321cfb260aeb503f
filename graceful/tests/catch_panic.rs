//! `CatchPanic` on its own, as a plain hyper service wrapper and as a tower service.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

async fn body_text(response: Response<Full<Bytes>>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A service that panics in its handler (`/sync`) or in a task it spawned (`/spawned`, and
/// `/awaited`, whose handler awaits the task and would answer 200 after it).
fn panicking_service(
    message_in_body: bool,
) -> impl hyper::service::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
> {
    graceful::CatchPanic::new(service_fn(|request: Request<Full<Bytes>>| async move {
        match request.uri().path() {
            "/sync" => panic!("sync failure"),
            "/spawned" => {
                graceful::spawn(async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    panic!("spawned failure");
                });
                std::future::pending().await
            }
            "/awaited" => {
                let task = graceful::spawn(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    panic!("awaited failure");
                });
                let outcome: Option<()> = task.await.expect("the task's panic is caught");
                Ok(Response::new(Full::new(Bytes::from(format!(
                    "handled {outcome:?}"
                )))))
            }
            _ => Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))),
        }
    }))
    .panic_message_in_body(message_in_body)
}

async fn answer(
    service: &impl hyper::service::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
    >,
    path: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .uri(path)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), service.call(request))
        .await
        .expect("an answer")
        .expect("infallible");
    (response.status(), body_text(response).await)
}

#[tokio::test]
async fn a_panicking_handler_and_a_panicking_spawned_task_both_answer_a_generic_500() {
    let service = panicking_service(false);
    assert_eq!(answer(&service, "/").await, (StatusCode::OK, "ok".into()));
    for (path, message) in [("/sync", "sync failure"), ("/spawned", "spawned failure")] {
        let (status, body) = answer(&service, path).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(body, "500 Internal Server Error\n", "{path}");
        assert!(
            !body.contains(message),
            "{path}: the panic stays out of the body"
        );
    }
}

/// The task records its panic before it ends, so the handler awaiting it cannot answer
/// first, whichever the runtime polls first (repeated: the order used to be random).
#[tokio::test]
async fn a_handler_that_awaits_its_panicked_task_still_answers_500() {
    let service = panicking_service(false);
    for _ in 0..50 {
        let (status, body) = answer(&service, "/awaited").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    }
}

#[tokio::test]
async fn with_the_development_option_the_500_names_the_panic() {
    let service = panicking_service(true);
    for (path, message) in [("/sync", "sync failure"), ("/spawned", "spawned failure")] {
        let (status, body) = answer(&service, path).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(body.contains(message), "{path}: {body}");
        assert!(
            !body.contains("stack backtrace"),
            "no backtrace in the body"
        );
    }
}

#[tokio::test]
async fn the_tower_layer_answers_500_for_a_tower_service() {
    use std::future::Future;
    use std::pin::Pin;
    use tower_layer::Layer;
    use tower_service::Service;

    /// A tower service whose response future panics when polled.
    #[derive(Clone)]
    struct Panics;
    impl Service<Request<()>> for Panics {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            Box::pin(async { panic!("tower failure") })
        }
    }

    let mut service = graceful::CatchPanicLayer::new().layer(Panics);
    let response = Service::call(&mut service, Request::new(()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body_text(response).await.contains("tower failure"));

    let mut service = graceful::CatchPanicLayer::new()
        .panic_message_in_body(true)
        .layer(Panics);
    let response = Service::call(&mut service, Request::new(()))
        .await
        .expect("infallible");
    assert!(body_text(response).await.contains("tower failure"));
}
