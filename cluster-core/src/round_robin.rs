//! Round-robin scheduling: the master accepts on each address and hands every connection to
//! a ready worker, keeping its own copy until the worker says it took it, so a worker that
//! dies or refuses before that loses nothing (Node's `round_robin_handle.js`).
//!
//! "In turn" means the worker holding the fewest connections (live ones, from the table the
//! workers share, `load_slots.rs`, plus hand-overs not answered yet), ties going in turn:
//! with `Connection: close` traffic that is plain round robin, and long-lived connections
//! stay balanced when some close (nginx's `least_conn`).
//!
//! Batches: at each wake-up the dispatcher takes every connection ready at once (requeued
//! ones first, then the kernel's accept queue, until it is empty, [`MAX_BATCH`] are in hand,
//! or the next one would have to wait for a worker) and sends each worker its share in one
//! frame (`Control::Connections`, one descriptor per connection); the worker answers those
//! its server asked for already in one frame (`Control::ConnectionsTaken`). Everything else
//! (the answer per `seq`, the deadline, take-back, no-room) is per connection as before.
//! The master accepts with `accept4` on the listener (not registered with tokio, so no
//! `epoll_ctl` per connection) and sends the accepted descriptor itself, kept open by an
//! `Arc` until `sendmsg` has taken it, instead of a `dup`.
//!
//! In sticky mode ([`crate::Scheduling::Sticky`]) the same dispatcher chooses the worker by
//! the client's IP address (`sticky.rs`) instead of in turn; hand-over, answers, take-back
//! and re-dispatch are the same.
//!
//! Two guards keep one worker from holding clients it cannot serve:
//! - **Dispatch timeout.** A hand-over not answered within `dispatch_timeout` is taken back
//!   and given to another worker; the silent worker is not chosen again until it answers
//!   something, and the miss is counted on it ([`Worker::missed_handovers`]). The worker
//!   takes a hand-over only within half the timeout (`take_by_ns`), so a connection taken
//!   back is never also served by the worker that was late.
//! - **No room.** A worker whose descriptor table is full answers `ConnectionNoRoom`; the
//!   connection goes to a worker that has not said so for it, and is closed once every
//!   worker that could take it had no room (rather than bouncing between full workers).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_ipc::Control;
use cluster_ipc::pressure::{LogThrottle, accept_failed};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::load_slots::LoadSlots;
use crate::sticky::{self, Slots};
use crate::worker::{Worker, WorkerState};

/// No worker can take a connection and the cluster refuses them.
struct Refuse;

/// Resets a connection (`SO_LINGER` 0, then closed): the client sees "connection reset".
fn reset(stream: Arc<TcpStream>) {
    if let Err(e) = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("SO_LINGER 0 on a refused connection: {e}");
    }
}

/// Hand-overs a worker may have unanswered at once.
const MAX_IN_FLIGHT: usize = 4;
/// How long a connection waits for the worker holding the fewest connections (while it has
/// [`MAX_IN_FLIGHT`] hand-overs unanswered) before another takes it.
const PATIENCE: Duration = Duration::from_millis(10);

/// The same in sticky mode, where a busy worker's clients wait for it (the accept loop
/// with them) rather than go to another: a deeper queue keeps one slow answer from holding
/// up every client.
const STICKY_MAX_IN_FLIGHT: usize = 32;

/// Most connections one wake-up of the dispatcher hands over: at most this many
/// descriptors travel in one frame.
const MAX_BATCH: usize = cluster_ipc::MAX_FDS_PER_MESSAGE;

/// The connections one wake-up of the dispatcher hands over, by worker.
#[derive(Default)]
struct Batch {
    groups: Vec<Group>,
    count: usize,
    /// When they are taken back (`None`: never).
    deadline: Option<Instant>,
    /// When their workers must refuse them (`CLOCK_MONOTONIC` ns).
    take_by_ns: u64,
}

/// One worker's share of a batch: one frame.
struct Group {
    worker: Worker,
    /// Each hand-over's seq, and its stream, kept open until the frame is written.
    connections: Vec<(u64, Arc<TcpStream>)>,
}

/// A connection waiting for a worker.
struct Queued {
    /// Shared only while its hand-over is being written: the descriptor travels in the
    /// `sendmsg` (no `dup`), and stays open until then even if the hand-over is settled
    /// meanwhile.
    stream: Arc<TcpStream>,
    /// The client's address (sticky mode chooses by it); `None` if the kernel gave none.
    client: Option<IpAddr>,
    /// Workers that had no room for its descriptor.
    no_room: Vec<u32>,
}

/// Handed over, not answered yet.
struct Pending {
    worker: Worker,
    queued: Queued,
    /// When it is taken back (`None`: never).
    deadline: Option<Instant>,
}

/// After a hot upgrade gave the sockets to a new master: every dispatcher stops accepting
/// (the new master's accept the queue from now on), then this waits, at most `within`,
/// until the connections they accepted have been taken by this master's workers, which are
/// still serving. Only then may the workers be retired, or a connection accepted in the
/// last moment would be held by a dispatcher with no worker left to take it.
pub(crate) async fn hand_off(dispatchers: &[Arc<Dispatcher>], within: Duration) {
    for dispatcher in dispatchers {
        dispatcher.stop_accepting();
    }
    let deadline = tokio::time::Instant::now() + within;
    while !dispatchers.iter().all(|d| d.settled()) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("upgrade: connections still being handed over after {within:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How a worker answered a hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The connection is the worker's now.
    Taken,
    /// The worker cannot take it (closing, or too late): another worker gets it.
    Refused,
    /// Its descriptor found no room in the worker's table.
    NoRoom,
}

#[derive(Default)]
struct State {
    /// Workers accepting on this address, in turn order.
    targets: Vec<Worker>,
    next: usize,
    in_flight: HashMap<u32, usize>,
    pending: HashMap<u64, Pending>,
    /// Connections to hand over again (refused, taken back, or their worker is gone).
    requeue: VecDeque<Queued>,
    /// Workers that let a hand-over pass its deadline and have not answered since.
    silent: HashSet<u32>,
    /// Workers a connection waited [`PATIENCE`] for in vain and that have not answered
    /// since: no connection waits for them again until they do (a hung worker holding the
    /// fewest would otherwise slow every dispatch to one per `PATIENCE`).
    waited_for: HashSet<u32>,
    /// The deadline task found nothing pending and waits to be woken.
    deadline_task_parked: bool,
    next_seq: u64,
    /// Nobody can serve (`Cluster::refuse_connections`): connections with no worker to take
    /// them are reset instead of held.
    refusing: bool,
    /// A hot upgrade gave the socket to a new master: accept nothing more.
    handed_off: bool,
    /// The run loop holds a connection it has not placed yet (with a worker or requeued).
    in_hand: bool,
    /// Sticky mode: each target's place in the hash.
    slots: Slots,
}

impl State {
    /// The target at `index` takes this turn; the next turn starts after it.
    fn take_turn(&mut self, index: usize) -> Worker {
        self.next = index + 1;
        self.targets[index].clone()
    }
}

/// Log lines that would repeat for every connection under pressure.
#[derive(Default)]
struct Throttles {
    accept: LogThrottle,
    no_room: LogThrottle,
    missed: LogThrottle,
}

/// The dispatcher of one address.
pub(crate) struct Dispatcher {
    address: SocketAddr,
    timeout: Option<Duration>,
    /// Chooses by client address (sticky sessions) rather than in turn.
    sticky: bool,
    /// The workers' live connections.
    loads: Arc<LoadSlots>,
    state: Mutex<State>,
    throttles: Mutex<Throttles>,
    wake: Notify,
    /// Wakes the deadline task when the first hand-over is pending.
    deadline_wake: Notify,
}

impl Dispatcher {
    /// Starts accepting on `listener` (the master's socket for `address`); hand-overs not
    /// answered within `timeout` are taken back. `sticky`: each client address goes to the
    /// same worker while it accepts (`sticky.rs`), instead of the one holding the fewest
    /// connections in `loads`.
    pub(crate) fn start(
        listener: &std::net::TcpListener,
        timeout: Option<Duration>,
        sticky: bool,
        loads: Arc<LoadSlots>,
    ) -> std::io::Result<Arc<Dispatcher>> {
        let address = listener.local_addr()?;
        let accept = listener.try_clone()?;
        accept.set_nonblocking(true)?;
        // Accepted with `accept4` here, never registered with tokio: a connection costs no
        // `epoll_ctl` in the master.
        // SAFETY: `accept` is an open listening socket the AsyncFd owns from here on; nothing
        // else closes or replaces its descriptor while the AsyncFd lives.
        let accept =
            unsafe { AsyncFd::register_with_interest(accept, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let dispatcher = Arc::new(Dispatcher {
            address,
            timeout,
            sticky,
            loads,
            state: Mutex::new(State::default()),
            throttles: Mutex::new(Throttles::default()),
            wake: Notify::new(),
            deadline_wake: Notify::new(),
        });
        tokio::spawn(dispatcher.clone().run(accept));
        if timeout.is_some() {
            tokio::spawn(dispatcher.clone().take_back_late());
        }
        Ok(dispatcher)
    }

    /// `worker` accepts connections on this address from now on.
    pub(crate) fn add_target(&self, worker: &Worker) {
        let mut state = self.lock();
        if !state.targets.iter().any(|w| w.id() == worker.id()) {
            state.targets.push(worker.clone());
            if self.sticky {
                state.slots.join(worker.id());
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// `worker` takes no new connections (it is closing); those it has not answered stay
    /// pending until it answers or its channel closes.
    pub(crate) fn stop_sending_to(&self, worker: &Worker) {
        let mut state = self.lock();
        state.targets.retain(|w| w.id() != worker.id());
        state.slots.leave(worker.id());
    }

    /// `worker`'s channel is closed: it can take nothing more, and every hand-over it did not
    /// answer is given to another worker.
    pub(crate) fn worker_gone(&self, worker: &Worker) {
        let mut state = self.lock();
        state.targets.retain(|w| w.id() != worker.id());
        state.slots.leave(worker.id());
        state.in_flight.remove(&worker.id());
        state.silent.remove(&worker.id());
        state.waited_for.remove(&worker.id());
        let orphaned: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| p.worker.id() == worker.id())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in orphaned {
            if let Some(pending) = state.pending.remove(&seq) {
                state.requeue.push_back(pending.queued);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Hand-over `seq` to `worker` did not happen: the connection goes back in line.
    fn undo(&self, worker: &Worker, seq: u64) {
        let mut state = self.lock();
        if let Some(pending) = state.pending.remove(&seq) {
            state.requeue.push_front(pending.queued);
        }
        if let Some(n) = state.in_flight.get_mut(&worker.id()) {
            *n = n.saturating_sub(1);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The worker answered hand-over `seq`.
    pub(crate) fn answered(&self, worker: &Worker, seq: u64, answer: Answer) {
        let mut state = self.lock();
        // It answers again: it may be chosen again, and waited for.
        state.silent.remove(&worker.id());
        state.waited_for.remove(&worker.id());
        let Some(pending) = state.pending.remove(&seq) else {
            drop(state);
            if answer == Answer::Taken {
                // Cannot happen while the worker honours `take_by_ns` (half the timeout).
                tracing::error!(
                    id = worker.id(),
                    seq,
                    "a worker took a hand-over after it was taken back; the connection may \
                     be served twice"
                );
            }
            // Answers to taken-back hand-overs, which are another worker's now.
            self.wake.notify_one();
            return;
        };
        if pending.worker.id() != worker.id() {
            // Not its hand-over: put it back.
            state.pending.insert(seq, pending);
            return;
        }
        if let Some(n) = state.in_flight.get_mut(&worker.id()) {
            *n = n.saturating_sub(1);
        }
        let mut queued = pending.queued;
        match answer {
            Answer::Taken => drop(queued), // the worker has its own descriptor
            Answer::Refused => state.requeue.push_back(queued),
            Answer::NoRoom => {
                queued.no_room.push(worker.id());
                let room_left = state.targets.iter().any(|w| {
                    w.state() < WorkerState::Disconnecting && !queued.no_room.contains(&w.id())
                });
                if room_left {
                    state.requeue.push_back(queued);
                } else {
                    drop(state);
                    drop(queued); // the client sees the connection closed
                    if let Some(count) = self.throttle(|t| &mut t.no_room) {
                        tracing::warn!(
                            address = %self.address,
                            count,
                            "closed {count} connection(s) no worker had room for (every \
                             worker's descriptor table is full; see RLIMIT_NOFILE)"
                        );
                    }
                    return;
                }
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an event in one of the throttles; `Some(count)` when it is time to log.
    fn throttle(&self, which: impl FnOnce(&mut Throttles) -> &mut LogThrottle) -> Option<u64> {
        let mut throttles = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
        which(&mut throttles).event()
    }

    /// Resets, from now on, the connections no worker can take (or stops doing so). Once
    /// this returns with `false`, none is reset any more.
    pub(crate) fn set_refusing(&self, refusing: bool) {
        self.lock().refusing = refusing;
        self.wake.notify_one();
    }

    /// The socket is another master's now (a hot upgrade handed it over): accept nothing
    /// more. What this dispatcher accepted already still goes to this master's workers.
    pub(crate) fn stop_accepting(&self) {
        self.lock().handed_off = true;
        self.wake.notify_one();
    }

    /// Whether every connection this dispatcher accepted has been taken by a worker.
    fn settled(&self) -> bool {
        let state = self.lock();
        !state.in_hand && state.pending.is_empty() && state.requeue.is_empty()
    }

    /// The worker to hand `queued` to: the one holding the fewest connections (ties in
    /// turn), or in sticky mode the one its client's address maps to; `Ok(None)` to wait for
    /// one, `Err` if there is none and the connection is to be refused. When the one holding
    /// the fewest has [`MAX_IN_FLIGHT`] hand-overs unanswered, a `patient` dispatcher waits
    /// for it (once per silence of that worker); an impatient one gives the connection to
    /// the next fewest that can take it.
    fn pick(&self, queued: &Queued, patient: bool) -> Result<Option<Worker>, Refuse> {
        if self.sticky {
            return self.pick_sticky(queued);
        }
        let mut state = self.lock();
        let count = state.targets.len();
        // One read of the table for every target (one lock, not one per worker).
        let live = self.loads.live_of(state.targets.iter().map(Worker::id));
        // (connections held, index, can take one now), in turn order from `next`.
        let mut candidates = Vec::with_capacity(count);
        for step in 0..count {
            let index = (state.next + step) % count;
            let worker = &state.targets[index];
            if worker.state() < WorkerState::Disconnecting && !state.silent.contains(&worker.id()) {
                let busy = state.in_flight.get(&worker.id()).copied().unwrap_or(0);
                let holds = live[index] as usize + busy;
                candidates.push((holds, index, busy < MAX_IN_FLIGHT));
            }
        }
        let fewest = |able_only: bool| {
            candidates
                .iter()
                .filter(|c| c.2 || !able_only)
                .min_by_key(|c| c.0)
                .copied()
        };
        let chosen = match (fewest(false), fewest(true)) {
            (Some((_, index, true)), _) => Some(index),
            // The one holding the fewest has hand-overs enough unanswered: wait for it a
            // while (it is taking a burst) rather than load another, unless a connection
            // already waited for it in vain.
            (Some((_, busy, false)), Some((_, index, _))) => {
                let id = state.targets[busy].id();
                if !patient {
                    state.waited_for.insert(id);
                }
                (!patient || state.waited_for.contains(&id)).then_some(index)
            }
            _ => None,
        };
        if let Some(index) = chosen {
            return Ok(Some(state.take_turn(index)));
        }
        if state.refusing && state.targets.is_empty() {
            return Err(Refuse);
        }
        Ok(None)
    }

    /// Sticky mode: among the workers that can take connections (not closing, not silent,
    /// not out of room for this one), the one the client's address maps to. If it has
    /// [`STICKY_MAX_IN_FLIGHT`] hand-overs unanswered, the connection waits for it.
    fn pick_sticky(&self, queued: &Queued) -> Result<Option<Worker>, Refuse> {
        let state = self.lock();
        let candidates = state.targets.iter().filter_map(|worker| {
            let able = worker.state() < WorkerState::Disconnecting
                && !state.silent.contains(&worker.id())
                && !queued.no_room.contains(&worker.id());
            let slot = state.slots.slot_of(worker.id())?;
            able.then_some((slot, worker))
        });
        let client = queued.client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        match sticky::choose(client, candidates) {
            Some(worker) => {
                let busy = state.in_flight.get(&worker.id()).copied().unwrap_or(0);
                Ok((busy < STICKY_MAX_IN_FLIGHT).then(|| worker.clone()))
            }
            None if state.refusing && state.targets.is_empty() => Err(Refuse),
            None => Ok(None),
        }
    }

    /// The next connection to hand over: one to hand over again, else a new one (none once
    /// the socket is handed off). Marks it in hand.
    async fn next_connection(&self, listener: &AsyncFd<std::net::TcpListener>) -> Queued {
        loop {
            let wake = self.wake.notified();
            let handed_off = match self.requeued() {
                Ok(queued) => return queued,
                Err(handed_off) => handed_off,
            };
            if handed_off {
                wake.await;
                continue;
            }
            tokio::select! {
                ready = listener.readable() => {
                    let accepted = match ready {
                        Ok(mut guard) => match guard.try_io(|l| l.get_ref().accept()) {
                            Ok(accepted) => accepted,
                            Err(_would_block) => continue,
                        },
                        Err(e) => Err(e),
                    };
                    match accepted {
                        Ok(accepted) => return self.in_hand(accepted),
                        Err(e) => self.under_pressure("accept failed", &e).await,
                    }
                },
                _ = wake => {}
            }
        }
    }

    /// After `what` failed: out of descriptors, stop for [`ACCEPT_PAUSE`] (connections wait
    /// in the kernel's queue), otherwise 10 ms; logged once per second at most.
    async fn under_pressure(&self, what: &str, e: &std::io::Error) {
        let what = format!("{what} on {}:", self.address);
        let pause = {
            let mut throttles = self.throttles.lock().unwrap_or_else(|p| p.into_inner());
            accept_failed(&mut throttles.accept, &what, e)
        };
        tokio::time::sleep(pause).await;
    }

    /// Waits for a worker to take `queued`; for [`PATIENCE`] it waits for the worker holding
    /// the fewest connections rather than hand it to another.
    async fn next_worker(&self, queued: &Queued) -> Result<Worker, Refuse> {
        let patient_until = Instant::now() + PATIENCE;
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let patient = Instant::now() < patient_until;
            if let Some(worker) = self.pick(queued, patient)? {
                return Ok(worker);
            }
            // No worker can take it: the connection waits here, and the next ones in the
            // kernel's accept queue.
            if patient {
                tokio::select! {
                    _ = wake => {}
                    _ = tokio::time::sleep_until(patient_until) => {}
                }
            } else {
                wake.await;
            }
        }
    }

    /// A connection ready now, without waiting: one to hand over again, else one in the
    /// kernel's accept queue (none once the socket is handed off, or on an error: the
    /// waiting path in [`Dispatcher::next_connection`] meets it again and pauses). Marks it
    /// in hand.
    fn ready_connection(&self, listener: &AsyncFd<std::net::TcpListener>) -> Option<Queued> {
        match self.requeued() {
            Ok(queued) => return Some(queued),
            Err(true) => return None,
            Err(false) => {}
        }
        // Tries only while tokio has seen the listener readable; a `WouldBlock` clears that.
        let accepted = listener.try_io(tokio::io::Interest::READABLE, |l| l.accept());
        accepted.ok().map(|accepted| self.in_hand(accepted))
    }

    /// A connection to hand over again, marked in hand; else whether the socket is handed
    /// off (`Err(true)`: nothing new is accepted).
    fn requeued(&self) -> Result<Queued, bool> {
        let mut state = self.lock();
        match state.requeue.pop_front() {
            Some(queued) => {
                state.in_hand = true;
                Ok(queued)
            }
            None => Err(state.handed_off),
        }
    }

    /// A connection just accepted, marked in hand.
    fn in_hand(&self, (stream, peer): (TcpStream, SocketAddr)) -> Queued {
        self.lock().in_hand = true;
        Queued {
            stream: Arc::new(stream),
            client: Some(peer.ip()),
            no_room: Vec::new(),
        }
    }

    /// Makes `queued` a pending hand-over to `worker`, in that worker's group of this batch.
    fn assign(&self, batch: &mut Batch, worker: Worker, queued: Queued) {
        let stream = queued.stream.clone();
        let mut state = self.lock();
        state.next_seq += 1;
        let seq = state.next_seq;
        *state.in_flight.entry(worker.id()).or_default() += 1;
        // Pending before it is sent: the answer may come back at once.
        state.pending.insert(
            seq,
            Pending {
                worker: worker.clone(),
                queued,
                deadline: batch.deadline,
            },
        );
        if std::mem::take(&mut state.deadline_task_parked) {
            self.deadline_wake.notify_one();
        }
        drop(state);
        batch.count += 1;
        match batch
            .groups
            .iter_mut()
            .find(|g| g.worker.id() == worker.id())
        {
            Some(group) => group.connections.push((seq, stream)),
            None => batch.groups.push(Group {
                worker,
                connections: vec![(seq, stream)],
            }),
        }
    }

    /// Sends each group of the batch to its worker, one frame per worker with all its
    /// descriptors.
    async fn send_batch(&self, batch: &mut Batch) {
        for group in batch.groups.drain(..) {
            let worker = group.worker;
            let Some(sender) = worker.sender() else {
                // Reaped: its channel was read to the end; this group is pending with it,
                // so it is handed over again now.
                self.worker_gone(&worker);
                continue;
            };
            let seqs: Vec<u64> = group.connections.iter().map(|(seq, _)| *seq).collect();
            let address = self.address.to_string();
            let take_by_ns = batch.take_by_ns;
            let control = match seqs.as_slice() {
                [seq] => Control::Connection {
                    address,
                    seq: *seq,
                    take_by_ns,
                },
                _ => Control::Connections {
                    address,
                    seqs: seqs.clone(),
                    take_by_ns,
                },
            };
            // The streams stay open until `sendmsg` has taken them, whatever happens to the
            // hand-overs meanwhile (the `Arc`s in `group`).
            let fds: Vec<_> = group.connections.iter().map(|(_, s)| s.as_fd()).collect();
            if let Err(e) = sender.send_control(&control, &fds).await {
                // These never reached the worker: hand them to another. The worker's earlier
                // hand-overs stay pending: their answers may still be in the channel, and
                // they are settled when the channel has been read to its end.
                tracing::debug!(id = worker.id(), "hand-over not delivered: {e}");
                self.stop_sending_to(&worker);
                for seq in seqs.iter().rev() {
                    self.undo(&worker, *seq);
                }
            }
        }
        batch.count = 0;
    }

    async fn run(self: Arc<Self>, listener: AsyncFd<std::net::TcpListener>) {
        let mut batch = Batch::default();
        loop {
            // The previous connections are placed: with a worker, requeued, or reset.
            self.lock().in_hand = false;
            let queued = self.next_connection(&listener).await;
            let Ok(worker) = self.next_worker(&queued).await else {
                reset(queued.stream);
                continue;
            };
            // One deadline for the batch, set before any of it is sent: a send that waits
            // only shortens the worker's time to take it, never the master's margin.
            let now = Instant::now();
            batch.deadline = self.timeout.map(|t| now + t);
            // The worker must answer within half the timeout, by the clock all processes
            // share; the other half covers the answer's way back.
            batch.take_by_ns = self.timeout.map_or(u64::MAX, |t| {
                cluster_ipc::clock::monotonic_ns().saturating_add(t.as_nanos() as u64 / 2)
            });
            self.assign(&mut batch, worker, queued);
            // More connections ready at once go in the same frames, as long as a worker can
            // take them without waiting.
            while batch.count < MAX_BATCH {
                let Some(queued) = self.ready_connection(&listener) else {
                    break;
                };
                match self.pick(&queued, true) {
                    Ok(Some(worker)) => self.assign(&mut batch, worker, queued),
                    Ok(None) => {
                        // It waits for a worker, first in line, once this batch is out.
                        self.lock().requeue.push_front(queued);
                        break;
                    }
                    Err(Refuse) => reset(queued.stream),
                }
            }
            self.send_batch(&mut batch).await;
        }
    }

    /// Takes back every hand-over left unanswered past its deadline, for as long as the
    /// dispatcher runs. Sleeps until the earliest deadline; parks while nothing is pending.
    async fn take_back_late(self: Arc<Self>) {
        loop {
            let earliest = {
                let mut state = self.lock();
                let earliest = state.pending.values().filter_map(|p| p.deadline).min();
                state.deadline_task_parked = earliest.is_none();
                earliest
            };
            match earliest {
                Some(at) => tokio::time::sleep_until(at).await,
                None => self.deadline_wake.notified().await,
            }
            self.take_back_expired(Instant::now());
        }
    }

    fn take_back_expired(&self, now: Instant) {
        let mut state = self.lock();
        let late: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(seq, _)| *seq)
            .collect();
        if late.is_empty() {
            return;
        }
        let mut missed = Vec::new();
        for seq in late {
            let Some(pending) = state.pending.remove(&seq) else {
                continue;
            };
            let id = pending.worker.id();
            if let Some(n) = state.in_flight.get_mut(&id) {
                *n = n.saturating_sub(1);
            }
            state.silent.insert(id);
            // First in line: this client has waited longest.
            state.requeue.push_front(pending.queued);
            missed.push((pending.worker.clone(), seq));
        }
        drop(state);
        for (worker, seq) in missed {
            let total = worker.record_missed_handover();
            if let Some(count) = self.throttle(|t| &mut t.missed) {
                tracing::warn!(
                    address = %self.address,
                    id = worker.id(),
                    pid = worker.pid(),
                    seq,
                    missed = total,
                    count,
                    "worker {} (pid {}) did not answer a hand-over within {:?}: taken back and \
                     given to another worker; it gets none until it answers ({count} taken \
                     back since the last line, {total} from this worker)",
                    worker.id(),
                    worker.pid(),
                    self.timeout.unwrap_or_default()
                );
            }
        }
        self.wake.notify_one();
    }
}
