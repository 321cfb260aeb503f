//! The worker the watchdog and recycling tests start: graceful `serve` on `TEST_LISTEN`
//! (else the pm group's first address), on `cluster_worker::runtime()` (one thread in a
//! cluster) or, with `TEST_RUNTIME=multi`, a multi-thread runtime. Every route answers the
//! worker's pid:
//!
//! - `/block`: tells the master (a `TestMsg` of kind `blocking`), then blocks the runtime
//!   with `std::thread::sleep` (60 s): a hung event loop.
//! - `/sleep?ms=N`: tells the master (`sleeping`), then answers N ms later (a long request
//!   on a live runtime).
//! - `/spin?ms=N`: keeps a CPU busy for N ms; with `&yield=1` it yields to the runtime
//!   every millisecond (a busy but live current-thread loop).
//! - `/grow?mb=N`: allocates N MiB, touches every page and keeps it (a leak).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

fn main() {
    let runtime = match std::env::var("TEST_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => cluster_worker::runtime(),
    }
    .expect("runtime");
    runtime.block_on(serve());
}

async fn serve() {
    graceful::install(
        graceful::Options::new()
            .kill_timeout(Duration::from_secs(20))
            .idle_grace(Duration::from_millis(300)),
    )
    .expect("install");
    let listener = match std::env::var("TEST_LISTEN") {
        Ok(address) => cluster_worker::incoming(address.parse().expect("TEST_LISTEN")).await,
        Err(_) => cluster_worker::group_incoming().await.and_then(|all| {
            all.into_iter()
                .next()
                .ok_or_else(|| std::io::Error::other("the group listens nowhere"))
        }),
    };
    // A worker stopped while it starts finds its channel closed: nothing to serve then.
    let Ok(listener) = listener else {
        return;
    };
    let service = graceful::service_fn(|req| async { Ok::<_, Infallible>(route(req).await) });
    graceful::serve(listener, service).await.expect("serve");
}

/// The value of `name` in the request's query.
fn query(request: &Request<Incoming>, name: &str) -> Option<u64> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

async fn route(request: Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/block" => {
            if let Some(worker) = cluster_worker::Worker::current() {
                let _ = worker
                    .send(&cluster_tests::TestMsg::new("blocking", ""))
                    .await;
            }
            std::thread::sleep(Duration::from_secs(60));
        }
        "/sleep" => {
            if let Some(worker) = cluster_worker::Worker::current() {
                let _ = worker
                    .send(&cluster_tests::TestMsg::new("sleeping", ""))
                    .await;
            }
            let ms = query(&request, "ms").unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "/spin" => {
            let until = Instant::now() + Duration::from_millis(query(&request, "ms").unwrap_or(0));
            let yields = query(&request, "yield") == Some(1);
            while Instant::now() < until {
                let slice = Instant::now() + Duration::from_millis(1);
                while Instant::now() < slice {
                    std::hint::spin_loop();
                }
                if yields {
                    tokio::task::yield_now().await;
                }
            }
        }
        "/grow" => {
            let bytes = query(&request, "mb").unwrap_or(0) as usize * 1024 * 1024;
            // Every page written, so it is resident.
            std::hint::black_box(Vec::leak(vec![1u8; bytes]));
        }
        _ => {}
    }
    Response::new(Full::new(Bytes::from(std::process::id().to_string())))
}
