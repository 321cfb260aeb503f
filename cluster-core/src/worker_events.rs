//! One worker's own events (Node's `worker.on('exit' | 'message' | …)`), as a stream
//! ([`crate::Worker::events`]) and as callbacks ([`crate::Worker::on`] and the `on_*`
//! shorthands), independent of [`crate::Cluster::run`].
//!
//! Every event of a worker is recorded here as the cluster emits it, so the worker's own
//! order is the cluster's. A consumer that arrives late is not left without the start: its
//! lifecycle events so far (fork, online, listening, ready, replacing, leaving, disconnect,
//! exit) are replayed first, and so are the messages the worker sent before anybody
//! consumed its events (at most [`EARLY_MESSAGES`] and [`EARLY_MESSAGE_BYTES`]; later ones
//! are not kept, with a debug log; nor are messages that carry descriptors, which would stay
//! open), the way Node's listeners registered
//! right after `fork()` miss nothing. Messages sent after the first consumer arrived are
//! delivered live only. Callbacks run one at a time, in event order, on a task of their own
//! per worker; the stream and the task end after `Exit`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use cluster_ipc::Message;
use tokio::sync::mpsc;

use crate::events::Event;
use crate::replace::ReplaceReason;
use crate::worker::{Exit, Worker};

/// How many messages sent before the first consumer are kept for it (and at most
/// [`EARLY_MESSAGE_BYTES`] of them).
pub const EARLY_MESSAGES: usize = 1024;

/// How many payload bytes of messages sent before the first consumer are kept for it.
pub const EARLY_MESSAGE_BYTES: usize = 1 << 20;

/// One thing that happened to one worker. In order: `Fork`, `Online`, any `Listening*`,
/// `Ready` and `Message`, `Replacing` (if the master replaces it), `Leaving`, `Disconnect`,
/// `Exit`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WorkerEvent {
    /// The process was started.
    Fork,
    /// Its runtime is up.
    Online,
    /// One of its servers accepts connections on this address.
    Listening(SocketAddr),
    /// One of its servers accepts connections on this Unix socket.
    ListeningUnix(PathBuf),
    /// It reads datagrams on the cluster's UDP socket bound to this address.
    ListeningUdp(SocketAddr),
    /// It said it is ready to serve.
    Ready,
    /// Its code sent a message.
    Message(Message),
    /// The master replaces it on purpose, for this reason.
    Replacing(ReplaceReason),
    /// It is going away ([`Event::Leaving`]): still draining, or already gone.
    Leaving,
    /// Its channel is closed, after its servers closed or because it died (Node's
    /// `disconnect`); [`Worker::is_connected`] is false from here on.
    Disconnect,
    /// It exited and was reaped.
    Exit(Exit),
}

impl WorkerEvent {
    /// The worker a cluster event is about, and what it means for that worker.
    pub(crate) fn of(event: &Event) -> Option<(&Worker, WorkerEvent)> {
        Some(match event {
            Event::Fork(w) => (w, WorkerEvent::Fork),
            Event::Online(w) => (w, WorkerEvent::Online),
            Event::Listening(w, a) => (w, WorkerEvent::Listening(*a)),
            Event::ListeningUnix(w, p) => (w, WorkerEvent::ListeningUnix(p.clone())),
            Event::ListeningUdp(w, a) => (w, WorkerEvent::ListeningUdp(*a)),
            Event::Ready(w) => (w, WorkerEvent::Ready),
            Event::Message(w, m) => (w, WorkerEvent::Message(m.clone())),
            Event::Replacing(w, r) => (w, WorkerEvent::Replacing(*r)),
            Event::Leaving(w) => (w, WorkerEvent::Leaving),
            Event::Disconnect(w) => (w, WorkerEvent::Disconnect),
            Event::Exit(w, x) => (w, WorkerEvent::Exit(*x)),
            _ => return None,
        })
    }
}

/// The receiving end of [`Worker::events`]: the worker's events in order; `None` after
/// its `Exit`.
pub struct WorkerEvents {
    rx: mpsc::UnboundedReceiver<WorkerEvent>,
}

impl WorkerEvents {
    /// The next event; `None` once the worker's `Exit` has been returned.
    pub async fn next(&mut self) -> Option<WorkerEvent> {
        self.rx.recv().await
    }
}

type Callback = Box<dyn FnMut(&Worker, &WorkerEvent) + Send>;

/// What the callback task of a worker reads, in order.
enum Dispatch {
    Event(WorkerEvent),
    /// A new callback, with the events that happened before it was registered.
    Register(Callback, Vec<WorkerEvent>),
}

#[derive(Default)]
struct LogState {
    history: Vec<WorkerEvent>,
    early_messages: usize,
    early_bytes: usize,
    /// Somebody has asked for the events: messages are no longer kept.
    consumed: bool,
    ended: bool,
    streams: Vec<mpsc::UnboundedSender<WorkerEvent>>,
    callbacks: Option<mpsc::UnboundedSender<Dispatch>>,
}

/// The per-worker record (a field of the worker).
pub(crate) struct WorkerLog {
    state: Mutex<LogState>,
    runtime: Option<tokio::runtime::Handle>,
}

impl WorkerLog {
    /// Made inside the master's runtime (by `fork`): callback tasks run there.
    pub(crate) fn new() -> Self {
        WorkerLog {
            state: Mutex::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, event: WorkerEvent) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        let keep = match event {
            // Descriptors are not held for a consumer that may never come: such a message
            // goes to the cluster's streams and callbacks, and to this worker's consumers
            // from the first one on.
            WorkerEvent::Message(ref message) if message.fd_count() > 0 => false,
            WorkerEvent::Message(ref message) if !state.consumed => {
                let bytes = state.early_bytes + message.payload().len();
                let keep = state.early_messages < EARLY_MESSAGES && bytes <= EARLY_MESSAGE_BYTES;
                if keep {
                    state.early_messages += 1;
                    state.early_bytes = bytes;
                } else {
                    tracing::debug!("no consumer of this worker's events yet: message not kept");
                }
                keep
            }
            WorkerEvent::Message(_) => false,
            _ => true,
        };
        if keep {
            state.history.push(event.clone());
        }
        state.streams.retain(|tx| tx.send(event.clone()).is_ok());
        let ended = matches!(event, WorkerEvent::Exit(_));
        if let Some(tx) = &state.callbacks {
            if tx.send(Dispatch::Event(event)).is_err() {
                state.callbacks = None;
            }
        }
        if ended {
            state.ended = true;
            state.streams.clear();
            state.callbacks = None;
        }
    }

    pub(crate) fn subscribe(&self) -> WorkerEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        state.consumed = true;
        for event in &state.history {
            let _ = tx.send(event.clone());
        }
        if !state.ended {
            state.streams.push(tx);
        }
        WorkerEvents { rx }
    }

    pub(crate) fn register(&self, worker: &Worker, callback: Callback) {
        let mut state = self.lock();
        state.consumed = true;
        let snapshot = state.history.clone();
        let tx = match &state.callbacks {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let Some(runtime) = &self.runtime else {
                    tracing::error!(
                        id = worker.id(),
                        "worker callbacks need the master's tokio runtime; not registered"
                    );
                    return;
                };
                let (tx, rx) = mpsc::unbounded_channel();
                runtime.spawn(run_callbacks(worker.clone(), rx));
                if !state.ended {
                    state.callbacks = Some(tx.clone());
                }
                tx
            }
        };
        let _ = tx.send(Dispatch::Register(callback, snapshot));
    }
}

/// Runs a worker's callbacks, one event at a time, until its `Exit` has been handled.
async fn run_callbacks(worker: Worker, mut rx: mpsc::UnboundedReceiver<Dispatch>) {
    let mut callbacks: Vec<Callback> = Vec::new();
    while let Some(dispatch) = rx.recv().await {
        match dispatch {
            Dispatch::Register(mut callback, before) => {
                for event in &before {
                    callback(&worker, event);
                }
                callbacks.push(callback);
            }
            Dispatch::Event(event) => {
                for callback in &mut callbacks {
                    callback(&worker, &event);
                }
            }
        }
    }
}
