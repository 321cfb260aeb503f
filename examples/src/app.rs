//! The seed's `app.js`: answers every request with what it saw, as JSON, and fails on
//! purpose on `/asycerror` (the seed's spelling), `/asyncerror` and `/asycerror-detached`.
//! It knows nothing of clusters; its only tie to graceful is `graceful::spawn`, the
//! request-scoped spawn that the seed's `setTimeout` could not have.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};

/// The seed's `foo.bar()` on an undefined `foo`.
fn foo_bar() {
    panic!("foo is not defined");
}

/// `{method, url, headers, Connection, pid}` for any request, except the failing routes.
pub async fn app(request: Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/asycerror" | "/asyncerror" => {
            // Fails 10 ms later in a task tied to this request: the request gets a 500.
            graceful::spawn(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                foo_bar();
            });
            return std::future::pending().await;
        }
        "/asycerror-detached" => {
            // Fails in a task nobody ties to the request, as in the seed: the worker still
            // exits gracefully, and this request ends when the worker does.
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                foo_bar();
            });
            return std::future::pending().await;
        }
        _ => {}
    }
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value.into())
        })
        .collect();
    let connection = request
        .headers()
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.eq_ignore_ascii_case("close"))
        .unwrap_or("keep-alive");
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "url": request.uri().to_string(),
        "headers": headers,
        "Connection": connection,
        "pid": std::process::id(),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/json"));
    response
}

/// The seed's second server (`restapi`), which has no routes of its own.
pub async fn rest_api(_request: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "service": "rest api", "pid": std::process::id() });
    Response::new(Full::new(Bytes::from(body.to_string())))
}
