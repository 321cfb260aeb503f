//! The worker the graceful tests start: graceful installed, one HTTP server on
//! `TEST_LISTEN`, and routes that fail in every way graceful must handle. It reports each
//! graceful step to the master as a `TestMsg { kind: "step", data }`.
//!
//! Settings from the environment: `TEST_LISTEN` (else the pm group's first address),
//! `KILL_TIMEOUT_MS`, `LAST_WORDS=1` (a hook that sends a `last-words` message 50 ms after it
//! starts), `TEST_ABORT=1` (abort right after the panic hook, as a `panic = "abort"` build
//! does), `BOOT_CRASH=1` (exit 1 at once, before being ready), `READY_DELAY_MS` (wait that
//! long after listening before calling `ready()`). It echoes every message.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cluster_tests::TestMsg;
use cluster_worker::Worker;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn report(worker: &Worker, kind: &str, data: String) {
    let worker = worker.clone();
    let message = TestMsg::new(kind, data);
    tokio::runtime::Handle::current().spawn(async move {
        let _ = worker.send(&message).await;
    });
}

#[tokio::main]
async fn main() {
    let worker = Worker::current().expect("started by a master");
    let runtime = tokio::runtime::Handle::current();
    let step_worker = worker.clone();
    let mut options = graceful::Options::new()
        .kill_timeout(env_ms("KILL_TIMEOUT_MS", 20_000))
        .idle_grace(Duration::from_millis(300))
        .report_only("harmless")
        .on_error(|report| {
            PANICS.store(report.count, Ordering::SeqCst);
        })
        .on_step(move |step| {
            let step_worker = step_worker.clone();
            runtime.spawn(async move {
                let _ = step_worker
                    .send(&TestMsg::new("step", format!("{step:?}")))
                    .await;
            });
        });
    if std::env::var("LAST_WORDS").is_ok() {
        let last = worker.clone();
        options = options.last_words(Duration::from_secs(2), move |panic| {
            let last = last.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = last.send(&TestMsg::new("last-words", panic.message)).await;
            }
        });
    }
    graceful::install(options).expect("install");
    if std::env::var("TEST_ABORT").is_ok() {
        let graceful_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            graceful_hook(info);
            std::process::abort();
        }));
    }

    if std::env::var("BOOT_CRASH").is_ok() {
        std::process::exit(1);
    }
    // A supervised group that listens on a Unix socket path serves that.
    let unix = cluster_worker::group_unix_listeners()
        .await
        .expect("group unix listeners")
        .pop();
    let listener = match (&unix, std::env::var("TEST_LISTEN")) {
        (Some(_), _) => None,
        (None, Ok(address)) => Some(
            cluster_worker::incoming(address.parse().expect("address"))
                .await
                .expect("incoming"),
        ),
        // A supervised group's worker: the group's first address.
        (None, Err(_)) => cluster_worker::group_incoming()
            .await
            .expect("group incoming")
            .into_iter()
            .next(),
    };
    if let Ok(ms) = std::env::var("READY_DELAY_MS") {
        tokio::time::sleep(Duration::from_millis(ms.parse().expect("READY_DELAY_MS"))).await;
    }
    // A worker retired while it boots finds its channel closed here; that is not an error.
    let _ = worker.ready().await;
    report(&worker, "ready", String::new());
    let echo = worker.clone();
    tokio::spawn(async move {
        while let Some(message) = echo.recv().await {
            let Ok(msg) = message.decode::<TestMsg>() else {
                continue;
            };
            if let Some(origin) = message.origin() {
                // From another worker, through the master: tell the master who sent it.
                let from = format!("{:?}:{}:{}", origin.group, origin.pid, msg.data);
                let _ = echo.send(&TestMsg::new("got", from)).await;
            } else if msg.kind == "relay" {
                let relayed = TestMsg::new("relayed", std::process::id().to_string());
                let _ = echo.send_to_group(&msg.data, &relayed).await;
            } else {
                let _ = echo.send(&TestMsg::new("echo", msg.data)).await;
            }
        }
    });
    let service = graceful::service_fn(|req| async { Ok::<_, Infallible>(route(req).await) });
    match (unix, listener) {
        (Some(unix), _) => graceful::serve(unix, service).await.expect("serve"),
        (None, Some(tcp)) => graceful::serve(tcp, service).await.expect("serve"),
        (None, None) => panic!("the group listens nowhere"),
    }
}

fn text(body: String) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from(body)))
}

async fn route(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let pid = std::process::id();
    match request.uri().path() {
        "/panic" => panic!("handler failed on purpose"),
        "/spawn-panic" => {
            graceful::spawn(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("spawned task failed on purpose");
            });
            std::future::pending().await
        }
        "/detached-hang" => {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                panic!("detached task failed on purpose");
            });
            std::future::pending().await
        }
        "/task-panic" => {
            tokio::spawn(async { panic!("background task failed on purpose") });
            text(format!("{pid}"))
        }
        "/thread-panic" => {
            std::thread::spawn(|| panic!("plain thread failed on purpose"));
            text(format!("{pid}"))
        }
        "/harmless-panic" => {
            std::thread::spawn(|| panic!("harmless: only reported"));
            text(format!("{pid}"))
        }
        "/double-panic" => {
            std::thread::spawn(|| panic!("first failure"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::thread::spawn(|| panic!("second failure, during the drain"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            text(format!("panics={}", PANICS.load(Ordering::SeqCst)))
        }
        "/hang" => {
            // Tell the master the request is in, so the test need not guess.
            if let Some(worker) = Worker::current() {
                let _ = worker.send(&TestMsg::new("hanging", "")).await;
            }
            std::future::pending().await
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            text(format!("{pid}"))
        }
        _ => text(format!("{pid}")),
    }
}
