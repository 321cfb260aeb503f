//! The seed's pm `worker.js` and `app.js`: graceful installed (kill timeout `KILL_TIMEOUT_MS`,
//! default 10000), the app on the group's address, `ready()` once it listens.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use examples::js_date;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// The seed's `app.js`: `/asyncerror` fails 10 ms later; anything else answers
/// `{url, pid}`.
async fn app(request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/asyncerror" {
        graceful::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("asyncError is not defined");
        });
        return std::future::pending().await;
    }
    let body = serde_json::json!({ "url": request.uri().to_string(), "pid": std::process::id() });
    Response::new(Full::new(Bytes::from(body.to_string())))
}

/// One thread in a cluster (the workers are the parallelism), all cores alone.
fn main() -> std::io::Result<()> {
    cluster_worker::runtime()?.block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let pid = std::process::id();
    let kill_timeout = std::env::var("KILL_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    graceful::install(
        graceful::Options::new()
            // The seed's error handler answers the message (`res.end(msg)`); a development
            // choice, kept here to reproduce its transcripts.
            .panic_message_in_body(true)
            .kill_timeout(Duration::from_millis(kill_timeout))
            .on_error(move |report| {
                examples::outln!("[{}] [worker:{pid}] error: {report}", js_date());
                examples::errln!("[uncaughtException] throw error {} times", report.count);
                examples::errln!("[panicked: {}]", report.message);
            })
            .on_step(examples::print_graceful_step),
    )
    .map_err(std::io::Error::other)?;

    let mut listeners = cluster_worker::group_incoming().await?;
    let listener = listeners
        .pop()
        .ok_or_else(|| std::io::Error::other("the group has no listen address"))?;
    if let Some(worker) = cluster_worker::Worker::current() {
        if let Err(e) = worker.ready().await {
            examples::errln!("[worker:{pid}] could not report ready: {e}");
        }
    }
    let service = graceful::service_fn(|req| async { Ok::<_, Infallible>(app(req).await) });
    graceful::serve(listener, service).await
}
