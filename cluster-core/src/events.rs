//! What happens to workers, as callbacks and as an async stream.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cluster_ipc::Message;
use tokio::sync::mpsc;

use crate::worker::{Exit, Worker};

/// One thing that happened in the cluster. Per worker, events come in this order: `Fork`,
/// `Online`, any `Listening` and `Message`, `Replacing` (if the master replaces it),
/// `Disconnect`, `Exit`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// `setup_master` applied new settings.
    Setup,
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
    /// draining), or its channel closed because it crashed or was killed. Emitted exactly once
    /// for every worker, before its `Exit`, so a dispatch that forks on it replaces every
    /// worker once.
    Disconnect(Worker),
    /// The master replaces the worker on purpose, for this reason: the watchdog found it
    /// unresponsive (it is killed), or it is recycled (it drains and exits 0). `Disconnect`
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

/// The receiving end of [`crate::Cluster::events`]: every event from the moment it was
/// created, none dropped.
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
    /// The master's respawn reads the endings (`Disconnect`, `Exit`) in `run`: only those
    /// are queued when no callback is registered, so a `Message` (and the descriptors it
    /// carries) is never held for a `run` that may never come.
    queue_endings: AtomicBool,
    streams: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
}

impl EventBus {
    pub(crate) fn new() -> (EventBus, mpsc::UnboundedReceiver<Event>) {
        let (callbacks, queue) = mpsc::unbounded_channel();
        let bus = EventBus {
            callbacks,
            has_callbacks: AtomicBool::new(false),
            queue_endings: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        };
        (bus, queue)
    }

    pub(crate) fn emit(&self, event: Event) {
        tracing::trace!(?event, "cluster event");
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|tx| tx.send(event.clone()).is_ok());
        drop(streams);
        let ending = matches!(event, Event::Disconnect(_) | Event::Exit(..));
        if self.has_callbacks.load(Ordering::Acquire)
            || (ending && self.queue_endings.load(Ordering::Acquire))
        {
            // The queue lives as long as the cluster; a send can only fail while it is dropped.
            let _ = self.callbacks.send(event);
        }
    }

    pub(crate) fn callbacks_registered(&self) {
        self.has_callbacks.store(true, Ordering::Release);
    }

    /// The master's respawn is on: queue the workers' endings for `run`.
    pub(crate) fn respawn_registered(&self) {
        self.queue_endings.store(true, Ordering::Release);
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        EventStream { rx }
    }
}
