//! What happens to workers, as callbacks and as an async stream.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cluster_ipc::Message;
use tokio::sync::mpsc;

use crate::worker::{Exit, Worker};

/// One thing that happened in the cluster. Per worker, events come in this order: `Fork`,
/// `Online`, any `Listening` and `Message`, `Replacing` (if the master replaces it),
/// `Leaving`, `Disconnect`, `Exit`. Each worker's own events are also
/// [`Worker::events`] and [`Worker::on`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// These settings apply to the workers forked from now on: emitted by [`crate::setup_master`]
    /// and by every [`crate::Cluster::setup_master`]. A new [`crate::Cluster::events`]
    /// stream, and the callbacks registered first, start with the latest one, so the first
    /// is never lost.
    Setup(std::sync::Arc<crate::Settings>),
    /// A worker process was started.
    Fork(Worker),
    /// The worker's runtime is up.
    Online(Worker),
    /// One of the worker's servers accepts connections on this address.
    Listening(Worker, SocketAddr),
    /// One of the worker's servers accepts connections on this Unix socket.
    ListeningUnix(Worker, std::path::PathBuf),
    /// The worker reads datagrams on the cluster's UDP socket bound to this address
    /// (`cluster_worker::bind_udp`; Node's `listening` for a `dgram` socket).
    ListeningUdp(Worker, SocketAddr),
    /// The worker said it is ready to serve (`Worker::ready` in `cluster-worker`).
    Ready(Worker),
    /// The worker is going away: it announced a disconnect or a hand-over (then it is still
    /// draining, and may serve for a while), or its channel closed because it crashed or was
    /// killed. Emitted exactly once for every worker, before its `Disconnect` and `Exit`, so
    /// a dispatch that forks on it replaces every worker once, and at once: this is the
    /// event to fork replacements on (Node has no such event; its programs fork on
    /// `disconnect` or `exit`, later). The master's own respawn uses it.
    Leaving(Worker),
    /// The worker's channel is closed (Node's `disconnect`): after it closed its servers and
    /// drained, or because it died. [`Worker::is_connected`] is false from here on.
    /// Exactly once per worker, after `Leaving`, before `Exit`.
    Disconnect(Worker),
    /// The master replaces the worker on purpose, for this reason: the watchdog found it
    /// unresponsive (it is killed), or it is recycled (it drains and exits 0). `Leaving`
    /// follows at once, so the dispatch forks the replacement.
    Replacing(Worker, crate::replace::ReplaceReason),
    /// The worker process ended and was reaped.
    Exit(Worker, Exit),
    /// The worker's code sent a message for other workers (`send_to_group`, `send_to_pid`
    /// in `cluster-worker`). A [`crate::pm::Master`] delivers it; a plain cluster only
    /// reports it.
    Forward {
        /// The sender.
        from: Worker,
        /// Who it is for.
        to: cluster_ipc::Recipient,
        /// The encoded user message.
        payload: std::sync::Arc<[u8]>,
    },
    /// The worker's code sent a message.
    Message(Worker, Message),
}

/// The receiving end of [`crate::Cluster::events`]: the latest `Setup`, then every event
/// from the moment it was created, none dropped.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event; `None` once the cluster is gone.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// Fans every event out to the callback queue and every stream.
pub(crate) struct EventBus {
    callbacks: mpsc::UnboundedSender<Event>,
    /// Nothing is queued for callbacks until one is registered, so a master that only uses
    /// streams does not accumulate events.
    has_callbacks: AtomicBool,
    /// The master's respawn reads the endings (`Leaving`, `Exit`) in `run`: only those
    /// are queued when no callback is registered, so a `Message` (and the descriptors it
    /// carries) is never held for a `run` that may never come.
    queue_endings: AtomicBool,
    streams: Mutex<Streams>,
}

#[derive(Default)]
struct Streams {
    list: Vec<mpsc::UnboundedSender<Event>>,
    /// The latest `Setup`, replayed to new streams and to the first callbacks.
    last_setup: Option<Event>,
}

impl EventBus {
    pub(crate) fn new() -> (EventBus, mpsc::UnboundedReceiver<Event>) {
        let (callbacks, queue) = mpsc::unbounded_channel();
        let bus = EventBus {
            callbacks,
            has_callbacks: AtomicBool::new(false),
            queue_endings: AtomicBool::new(false),
            streams: Mutex::default(),
        };
        (bus, queue)
    }

    pub(crate) fn emit(&self, event: Event) {
        tracing::trace!(?event, "cluster event");
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock too, so a worker's own events are in the cluster's order (lock
        // order: the bus, then the worker's log).
        if let Some((worker, own)) = crate::worker_events::WorkerEvent::of(&event) {
            worker.record(own);
        }
        if let Event::Setup(_) = event {
            streams.last_setup = Some(event.clone());
        }
        streams.list.retain(|tx| tx.send(event.clone()).is_ok());
        // Under the lock, so `callbacks_registered` cannot queue this `Setup` a second time.
        let ending = matches!(event, Event::Leaving(_) | Event::Exit(..));
        if self.has_callbacks.load(Ordering::Acquire)
            || (ending && self.queue_endings.load(Ordering::Acquire))
        {
            // The queue lives as long as the cluster; a send can only fail while it is dropped.
            let _ = self.callbacks.send(event);
        }
        drop(streams);
    }

    pub(crate) fn callbacks_registered(&self) {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if !self.has_callbacks.swap(true, Ordering::AcqRel) {
            // The first callbacks start with the settings, like the first streams.
            if let Some(setup) = &streams.last_setup {
                let _ = self.callbacks.send(setup.clone());
            }
        }
    }

    /// The master's respawn is on: queue the workers' endings for `run`.
    pub(crate) fn respawn_registered(&self) {
        self.queue_endings.store(true, Ordering::Release);
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(setup) = &streams.last_setup {
            let _ = tx.send(setup.clone());
        }
        streams.list.push(tx);
        EventStream { rx }
    }
}
