//! `CatchPanic` on its own, as a plain hyper service wrapper and as a tower service.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::{Service as _, service_fn};
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

#[tokio::test]
async fn a_panicking_handler_and_a_panicking_spawned_task_both_answer_500() {
    let service =
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
                _ => Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))),
            }
        }));
    for (path, status, text) in [
        ("/", StatusCode::OK, "ok"),
        ("/sync", StatusCode::INTERNAL_SERVER_ERROR, "sync failure"),
        (
            "/spawned",
            StatusCode::INTERNAL_SERVER_ERROR,
            "spawned failure",
        ),
    ] {
        let request = Request::builder()
            .uri(path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(5), service.call(request))
            .await
            .expect("an answer")
            .expect("infallible");
        assert_eq!(response.status(), status, "{path}");
        let body = body_text(response).await;
        assert!(body.contains(text), "{path}: {body}");
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

    let mut service = graceful::CatchPanicLayer.layer(Panics);
    let response = Service::call(&mut service, Request::new(()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_text(response).await.contains("tower failure"));
}
