//! Round-robin scheduling: the master accepts on each address and hands every connection to
//! a ready worker, keeping its own copy until the worker says it took it, so a worker that
//! dies or refuses before that loses nothing (Node's `round_robin_handle.js`).

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_ipc::Control;
use tokio::sync::Notify;

use crate::worker::{Worker, WorkerState};

/// No worker can take a connection and the cluster refuses them.
struct Refuse;

/// Resets a connection (`SO_LINGER` 0, then closed): the client sees "connection reset".
fn reset(stream: TcpStream) {
    match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => {
            if let Err(e) = stream.set_zero_linger() {
                tracing::debug!("SO_LINGER 0 on a refused connection: {e}");
            }
        }
        Err(e) => tracing::debug!("refusing a connection: {e}"),
    }
}

/// Hand-overs a worker may have unanswered at once.
const MAX_IN_FLIGHT: usize = 4;

#[derive(Default)]
struct State {
    /// Workers accepting on this address, in turn order.
    targets: Vec<Worker>,
    next: usize,
    in_flight: HashMap<u32, usize>,
    /// Handed over, not answered yet: (worker id, the master's copy).
    pending: HashMap<u64, (u32, TcpStream)>,
    /// Connections to hand over again (refused, or their worker is gone).
    requeue: VecDeque<TcpStream>,
    next_seq: u64,
    /// Nobody can serve (`Cluster::refuse_connections`): connections with no worker to take
    /// them are reset instead of held.
    refusing: bool,
}

/// The dispatcher of one address.
pub(crate) struct Dispatcher {
    address: SocketAddr,
    state: Mutex<State>,
    wake: Notify,
}

impl Dispatcher {
    /// Starts accepting on `listener` (the master's socket for `address`).
    pub(crate) fn start(listener: &std::net::TcpListener) -> std::io::Result<Arc<Dispatcher>> {
        let address = listener.local_addr()?;
        let accept = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
        let dispatcher = Arc::new(Dispatcher {
            address,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        tokio::spawn(dispatcher.clone().run(accept));
        Ok(dispatcher)
    }

    /// `worker` accepts connections on this address from now on.
    pub(crate) fn add_target(&self, worker: &Worker) {
        let mut state = self.lock();
        if !state.targets.iter().any(|w| w.id() == worker.id()) {
            state.targets.push(worker.clone());
        }
        drop(state);
        self.wake.notify_one();
    }

    /// `worker` takes no new connections (it is closing); those it has not answered stay
    /// pending until it answers or its channel closes.
    pub(crate) fn stop_sending_to(&self, worker: &Worker) {
        self.lock().targets.retain(|w| w.id() != worker.id());
    }

    /// `worker`'s channel is closed: it can take nothing more, and every hand-over it did not
    /// answer is given to another worker.
    pub(crate) fn worker_gone(&self, worker: &Worker) {
        let mut state = self.lock();
        state.targets.retain(|w| w.id() != worker.id());
        state.in_flight.remove(&worker.id());
        let orphaned: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, (id, _))| *id == worker.id())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in orphaned {
            if let Some((_, stream)) = state.pending.remove(&seq) {
                state.requeue.push_back(stream);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Hand-over `seq` to `worker` did not happen: the connection goes back in line.
    fn undo(&self, worker: &Worker, seq: u64) {
        let mut state = self.lock();
        if let Some((_, stream)) = state.pending.remove(&seq) {
            state.requeue.push_front(stream);
        }
        if let Some(n) = state.in_flight.get_mut(&worker.id()) {
            *n = n.saturating_sub(1);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The worker answered hand-over `seq`.
    pub(crate) fn answered(&self, worker: &Worker, seq: u64, taken: bool) {
        let mut state = self.lock();
        let Some((id, stream)) = state.pending.remove(&seq) else {
            return;
        };
        if id != worker.id() {
            // Not its hand-over: put it back.
            state.pending.insert(seq, (id, stream));
            return;
        }
        if let Some(n) = state.in_flight.get_mut(&id) {
            *n = n.saturating_sub(1);
        }
        if taken {
            drop(stream); // the worker has its own descriptor
        } else {
            state.requeue.push_back(stream);
        }
        drop(state);
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resets, from now on, the connections no worker can take (or stops doing so). Once
    /// this returns with `false`, none is reset any more.
    pub(crate) fn set_refusing(&self, refusing: bool) {
        self.lock().refusing = refusing;
        self.wake.notify_one();
    }

    /// The next worker in turn that can take a connection; `Err` if there is none and the
    /// connection is to be refused.
    fn pick(&self) -> Result<Option<Worker>, Refuse> {
        let mut state = self.lock();
        let count = state.targets.len();
        for step in 0..count {
            let index = (state.next + step) % count;
            let worker = &state.targets[index];
            let busy = state.in_flight.get(&worker.id()).copied().unwrap_or(0);
            if worker.state() < WorkerState::Disconnecting && busy < MAX_IN_FLIGHT {
                let worker = worker.clone();
                state.next = index + 1;
                return Ok(Some(worker));
            }
        }
        if state.refusing && state.targets.is_empty() {
            return Err(Refuse);
        }
        Ok(None)
    }

    async fn next_connection(&self, listener: &tokio::net::TcpListener) -> TcpStream {
        loop {
            let wake = self.wake.notified();
            if let Some(stream) = self.lock().requeue.pop_front() {
                return stream;
            }
            tokio::select! {
                accepted = listener.accept() => match accepted.and_then(|(s, _)| s.into_std()) {
                    Ok(stream) => return stream,
                    Err(e) => {
                        tracing::warn!(address = %self.address, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = wake => {}
            }
        }
    }

    async fn next_worker(&self) -> Result<Worker, Refuse> {
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if let Some(worker) = self.pick()? {
                return Ok(worker);
            }
            // No worker can take it: the connection waits here, and the next ones in the
            // kernel's accept queue.
            wake.await;
        }
    }

    async fn run(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let stream = self.next_connection(&listener).await;
            let Ok(worker) = self.next_worker().await else {
                reset(stream);
                continue;
            };
            let Some(sender) = worker.sender() else {
                // Reaped: its channel was read to the end, nothing of it is pending.
                self.worker_gone(&worker);
                self.lock().requeue.push_front(stream);
                continue;
            };
            let fd = match stream.try_clone() {
                Ok(copy) => copy,
                Err(e) => {
                    // Out of descriptors: keep the connection and try again shortly.
                    tracing::warn!("cannot hand over a connection: {e}");
                    self.lock().requeue.push_front(stream);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let seq = {
                let mut state = self.lock();
                state.next_seq += 1;
                let seq = state.next_seq;
                *state.in_flight.entry(worker.id()).or_default() += 1;
                // Pending before it is sent: the answer may come back at once.
                state.pending.insert(seq, (worker.id(), stream));
                seq
            };
            let connection = Control::Connection {
                address: self.address.to_string(),
                seq,
            };
            if let Err(e) = sender.send_control(&connection, &[fd.as_fd()]).await {
                // This one never reached the worker: hand it to another. The worker's earlier
                // hand-overs stay pending: their answers may still be in the channel, and
                // they are settled when the channel has been read to its end.
                tracing::debug!(id = worker.id(), "hand-over not delivered: {e}");
                self.stop_sending_to(&worker);
                self.undo(&worker, seq);
            }
        }
    }
}
