//! An axum 0.8 app as a cluster: one binary (`cluster_core::run`) that is the master
//! (binds the socket, forks 2 workers running this same binary; the master replaces each
//! one that hands over or dies) or a worker (the app, served by `graceful::serve` on the
//! master's shared socket).
//!
//! The app: `GET /` (this worker's pid and request count), `POST /notes` (a JSON note into
//! an in-memory store), `GET /notes`, `GET /panic` (panics in its handler) and
//! `GET /panic-in-task` (panics in a task the handler spawned with `graceful::spawn`); both
//! panics answer that request 500 and the worker hands over to its replacement and drains;
//! `tower-http`'s `TraceLayer` logs every request (`RUST_LOG=tower_http=debug`).
//!
//! `PORT` (default 3000), `WORKERS` (default 2). State lives in each worker process: the
//! workers share the socket, not memory (keep shared data in a database).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::trace::TraceLayer;

type Error = Box<dyn std::error::Error>;

fn env_number(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Error> {
    examples::init_logging();
    // This binary is the master, and each worker it starts.
    cluster_core::run(master, worker)
}

fn address() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, env_number("PORT", 3000)))
}

/// The master: binds the socket, forks the workers (this same binary); the master replaces
/// each one that hands over (a panic) or dies by itself; SIGTERM stops them all gracefully.
async fn master() -> Result<(), Error> {
    let cluster = cluster_core::setup_master(cluster_core::Settings::new())?;
    // A port in use fails here, not in every worker.
    cluster.listen(address())?;
    cluster.on_fork(|_, worker| examples::outln!("[master] worker {} forked", worker.pid()));
    cluster.on_exit(|_, worker, exit| {
        examples::outln!("[master] worker {} exited ({exit})", worker.pid())
    });
    for _ in 0..env_number("WORKERS", 2) {
        cluster.fork(&[])?;
    }
    cluster.run().await?;
    Ok(())
}

/// A worker (on one thread: the workers are the parallelism): the axum app on the master's
/// socket, with graceful.
async fn worker() -> Result<(), Error> {
    let app = app(AppState::default());
    // where `axum::serve(TcpListener::bind(address).await?, app)` was:
    graceful::install(graceful::Options::new())?;
    // The master's shared socket.
    let listener = cluster_worker::incoming(address()).await?;
    examples::outln!("[worker:{}] listening on {}", std::process::id(), address());
    // A panic: 500, hand-over to a new worker, drain.
    Ok(graceful::serve(listener, app).await?)
}

/// What the handlers share: an in-memory note store and a request counter.
#[derive(Clone, Default)]
struct AppState {
    notes: Arc<Mutex<Vec<Note>>>,
    hits: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

#[derive(Clone, Serialize)]
struct Note {
    id: usize,
    text: String,
    pid: u32,
}

#[derive(Serialize)]
struct Hello {
    pid: u32,
    hits: u64,
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/notes", get(list_notes).post(add_note))
        .route("/panic", get(panic_in_handler))
        .route("/panic-in-task", get(panic_in_task))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn hello(State(state): State<AppState>) -> Json<Hello> {
    let hits = state.hits.fetch_add(1, Ordering::Relaxed) + 1;
    Json(Hello {
        pid: std::process::id(),
        hits,
    })
}

async fn add_note(
    State(state): State<AppState>,
    Json(new): Json<NewNote>,
) -> (StatusCode, Json<Note>) {
    let mut notes = state.notes.lock().unwrap_or_else(|p| p.into_inner());
    let note = Note {
        id: notes.len() + 1,
        text: new.text,
        pid: std::process::id(),
    };
    notes.push(note.clone());
    (StatusCode::CREATED, Json(note))
}

async fn list_notes(State(state): State<AppState>) -> Json<Vec<Note>> {
    Json(
        state
            .notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    )
}

/// A bug in a handler: this request gets a 500 (without the message), the worker hands over.
async fn panic_in_handler(State(state): State<AppState>) -> String {
    // Note ids start at 1: note 0 never exists.
    let note = state
        .notes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|note| note.id == 0)
        .cloned();
    note.expect("note 0 exists").text
}

/// A bug in a task the handler spawned with `graceful::spawn`: the request that spawned it
/// gets the 500, at the moment the task panics.
async fn panic_in_task() -> String {
    let report = graceful::spawn(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        panic!("the report task failed");
    })
    .await;
    format!("{report:?}") // never reached: the request was answered 500 already
}
