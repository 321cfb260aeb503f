//! One task per worker: reads its channel, answers its requests, reaps it, and emits its
//! events in order.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use crate::signal::Signal;
use cluster_ipc::{Control, Grant, Incoming, ListenFailure, Receiver, RecvError};
use tokio::process::Child;

use crate::boot_failures::{Verdict, booting, died_booting};
use crate::cluster::Shared;
use crate::events::Event;
use crate::exit_reason::ExitReason;
use crate::round_robin::Answer;
use crate::worker::{Exit, Worker, WorkerState};

/// How long the master keeps reading a dead worker's channel for messages it sent just
/// before exiting.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

pub(crate) async fn supervise(
    shared: Arc<Shared>,
    worker: Worker,
    mut rx: Receiver,
    mut child: Child,
) {
    let mut channel_open = true;
    // A worker whose channel closes while it starts is probably dying at boot: its
    // `disconnect` waits for its exit (at most `BOOT_EXIT_WAIT`), so both can be held back
    // together by the boot-failure backoff.
    let mut disconnect_held = false;
    let hold_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(hold_deadline);
    let status = loop {
        tokio::select! {
            incoming = rx.recv(), if channel_open => {
                if !handle_incoming(&shared, &worker, incoming).await {
                    channel_open = false;
                    if boot_guarded(&shared) && booting(&worker) {
                        disconnect_held = true;
                        hold_deadline.as_mut().reset(tokio::time::Instant::now() + BOOT_EXIT_WAIT);
                    } else {
                        disconnected(&shared, &worker);
                    }
                }
            }
            status = child.wait() => break status,
            _ = &mut hold_deadline, if disconnect_held => {
                disconnect_held = false;
                disconnected(&shared, &worker);
            }
        }
    };
    if channel_open {
        // Read what the worker sent before it died, then report the disconnect.
        let drain = async { while handle_incoming(&shared, &worker, rx.recv().await).await {} };
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
        disconnected(&shared, &worker);
    }
    finish(&shared, &worker, status, disconnect_held).await;
}

/// The worker has been reaped: holds back a boot failure, reports the disconnect if it is
/// still `held` (`disconnect` then `exit`, in that order), and removes the worker.
pub(crate) async fn finish(
    shared: &Arc<Shared>,
    worker: &Worker,
    status: std::io::Result<std::process::ExitStatus>,
    held: bool,
) {
    let (shared, worker) = (shared.clone(), worker.clone());
    let disconnect_held = held;
    crate::init::untrack(worker.pid());
    let exit = match status {
        Ok(status) => Exit {
            code: status.code(),
            signal: status.signal().map(Signal::from_raw),
        },
        Err(e) => {
            tracing::error!(
                id = worker.id(),
                pid = worker.pid(),
                "waiting for the worker: {e}"
            );
            Exit {
                code: None,
                signal: None,
            }
        }
    };
    if boot_guarded(&shared) && died_booting(&worker, &exit) {
        hold_back_boot_failure(&shared, &worker, &exit).await;
    }
    if disconnect_held {
        disconnected(&shared, &worker);
    }
    worker.mark_dead(exit);
    if let Some(reason) = worker.replace_reason() {
        tracing::info!(
            id = worker.id(),
            pid = worker.pid(),
            "replaced worker {} (pid {}) exited with {exit} ({reason})",
            worker.id(),
            worker.pid()
        );
    }
    shared.events.emit(Event::Exit(worker.clone(), exit));
    shared.remove_worker(worker.id());
    shared.monitor.exited(&worker);
}

/// How long a starting worker's `disconnect` may wait for its exit.
const BOOT_EXIT_WAIT: Duration = Duration::from_secs(1);

/// True when the start-up failure guard is on and the cluster is running.
fn boot_guarded(shared: &Shared) -> bool {
    shared.settings().max_boot_failures.is_some() && !shared.is_stopping()
}

/// Counts a worker that died before it was ready: waits the backoff before its events are
/// reported (cut short by a stop), or stops the cluster past `max_boot_failures`.
async fn hold_back_boot_failure(shared: &Arc<Shared>, worker: &Worker, exit: &Exit) {
    let Some(limit) = shared.settings().max_boot_failures else {
        return;
    };
    match shared.boot_guard.failed(limit, worker, &exit.to_string()) {
        Verdict::GiveUp { .. } => {
            crate::Cluster {
                shared: shared.clone(),
            }
            .begin_stop(crate::StopMode::Graceful);
        }
        Verdict::ReportAfter(delay) if !delay.is_zero() => {
            let mut phase = shared.watch_phase();
            let _ = tokio::time::timeout(delay, phase.changed()).await;
        }
        Verdict::ReportAfter(_) => {}
    }
}

/// The channel is finished: close our end, report `leaving` if the worker did not announce
/// it already, then `disconnect` (Node's: the channel is closed, `is_connected()` false).
pub(crate) fn disconnected(shared: &Shared, worker: &Worker) {
    if let Some(sender) = worker.sender() {
        sender.close();
    }
    worker.advance(WorkerState::Disconnected);
    shared.handovers.forget(worker);
    for dispatcher in shared.dispatchers() {
        dispatcher.worker_gone(worker);
    }
    emit_leaving(shared, worker);
    if worker.take_disconnect_event() {
        shared.events.emit(Event::Disconnect(worker.clone()));
    }
}

/// `leaving` comes once per worker: when it announces it is going (so the dispatch can
/// fork its replacement at once), or when its channel closes, whichever is first.
pub(crate) fn emit_leaving(shared: &Shared, worker: &Worker) {
    if worker.take_leaving_event() {
        shared.events.emit(Event::Leaving(worker.clone()));
    }
}

/// Handles one read from the channel. False when the channel is finished: closed by the
/// worker, or broken by what it sent (the worker is then killed, with the reason logged).
async fn handle_incoming(
    shared: &Shared,
    worker: &Worker,
    incoming: Result<Option<Incoming>, RecvError>,
) -> bool {
    match incoming {
        Ok(Some(Incoming::User(message))) => {
            shared.events.emit(Event::Message(worker.clone(), message));
            true
        }
        Ok(Some(Incoming::Control(control, _fds))) => {
            match handle_control(shared, worker, control).await {
                Ok(()) => true,
                Err(reason) => {
                    end_worker(worker, &reason);
                    false
                }
            }
        }
        Ok(None) => false,
        Err(e) => {
            end_worker(worker, &e.to_string());
            false
        }
    }
}

fn end_worker(worker: &Worker, reason: &str) {
    tracing::warn!(
        id = worker.id(),
        pid = worker.pid(),
        "ending worker {} (pid {}): {reason}",
        worker.id(),
        worker.pid()
    );
    worker.signal(Signal::SIGKILL);
}

async fn handle_control(shared: &Shared, worker: &Worker, control: Control) -> Result<(), String> {
    match control {
        Control::Online => {
            worker.advance(WorkerState::Online);
            shared.events.emit(Event::Online(worker.clone()));
        }
        Control::ListenRequest {
            seq,
            address,
            index,
            options,
        } => {
            cluster_ipc::timing::phase("listen_request", worker.id());
            answer_listen(shared, worker, seq, address, index, options).await;
            cluster_ipc::timing::phase("listen_replied", worker.id());
        }
        Control::Listening { address } if cluster_ipc::udp_address(&address).is_some() => {
            let Some(Ok(bound)) = cluster_ipc::udp_address(&address) else {
                return Err(format!("reported bound to {address:?}, not an address"));
            };
            worker.advance(WorkerState::Listening);
            shared.boot_guard.ready();
            shared
                .events
                .emit(Event::ListeningUdp(worker.clone(), bound));
        }
        Control::Listening { address } if cluster_ipc::unix_path(&address).is_some() => {
            worker.advance(WorkerState::Listening);
            shared.boot_guard.ready();
            let path = cluster_ipc::unix_path(&address).map(|p| p.to_path_buf());
            if let Some(path) = path {
                shared
                    .events
                    .emit(Event::ListeningUnix(worker.clone(), path));
            }
        }
        Control::Listening { address } => {
            cluster_ipc::timing::phase("listening", worker.id());
            let address = address
                .parse()
                .map_err(|_| format!("reported listening on {address:?}, not an address"))?;
            worker.add_address(address);
            worker.advance(WorkerState::Listening);
            shared.boot_guard.ready();
            let wait_ready = shared.settings().wait_ready;
            if !wait_ready || worker.is_ready() {
                if let Some(dispatcher) = shared.dispatcher(address, None) {
                    dispatcher.add_target(worker);
                }
            }
            shared
                .events
                .emit(Event::Listening(worker.clone(), address));
            shared.handovers.listening(worker, address);
        }
        Control::ConnectionTaken { address, seq } => {
            answered(shared, worker, &address, seq, Answer::Taken)?
        }
        Control::ConnectionsTaken { address, seqs } => {
            if seqs.is_empty() || seqs.len() > cluster_ipc::MAX_FDS_PER_MESSAGE {
                return Err(format!(
                    "answered {} hand-overs in one frame (1 to {} may be)",
                    seqs.len(),
                    cluster_ipc::MAX_FDS_PER_MESSAGE
                ));
            }
            for seq in seqs {
                answered(shared, worker, &address, seq, Answer::Taken)?;
            }
        }
        Control::ConnectionRefused { address, seq } => {
            answered(shared, worker, &address, seq, Answer::Refused)?
        }
        Control::ConnectionNoRoom { address, seq } => {
            answered(shared, worker, &address, seq, Answer::NoRoom)?
        }
        Control::Disconnecting => {
            cluster_ipc::timing::phase("disconnecting", worker.id());
            for dispatcher in shared.dispatchers() {
                dispatcher.stop_sending_to(worker);
            }
            worker.mark_exited_after_disconnect();
            worker.advance(WorkerState::Disconnecting);
            emit_leaving(shared, worker);
        }
        Control::Forward { to, payload } => {
            shared.events.emit(Event::Forward {
                from: worker.clone(),
                to,
                payload: payload.into(),
            });
        }
        Control::Ready => {
            if worker.mark_ready() {
                shared.boot_guard.ready();
                // Round-robin work starts now for a worker that had to say it is ready.
                for address in worker.addresses() {
                    if let Some(dispatcher) = shared.dispatcher(address, None) {
                        dispatcher.add_target(worker);
                    }
                }
                shared.events.emit(Event::Ready(worker.clone()));
            }
        }
        Control::HandOverPanic { message, location } => {
            tracing::info!(
                id = worker.id(),
                pid = worker.pid(),
                location = location.as_deref().unwrap_or("unknown"),
                "worker panicked: {message}"
            );
            cluster_ipc::timing::phase("panic_reported", worker.id());
            worker.set_exit_reason(ExitReason::Panic { message, location });
            hand_over(shared, worker);
        }
        Control::Heartbeat {
            served,
            open_connections,
        } => worker.record_heartbeat(
            std::time::Instant::now(),
            crate::worker::WorkerLoad {
                served,
                open_connections,
            },
        ),
        Control::RequestLimit { served } => {
            shared
                .monitor
                .request_recycle(worker, crate::ReplaceReason::MaxRequests { served });
        }
        Control::HandOver => hand_over(shared, worker),
        other => return Err(format!("sent {other:?}, which only a master may send")),
    }
    Ok(())
}

/// The worker has failed and hands over: it is disconnecting on purpose, and its
/// replacement may start at once.
fn hand_over(shared: &Shared, worker: &Worker) {
    for dispatcher in shared.dispatchers() {
        dispatcher.stop_sending_to(worker);
    }
    worker.mark_exited_after_disconnect();
    worker.advance(WorkerState::Disconnecting);
    shared.handovers.start(worker, shared.is_stopping());
    emit_leaving(shared, worker);
}

/// Answers a worker's `listen()`: the shared socket, a reserved port (ReusePort), or a
/// round-robin registration. A refusal or bind error goes back to the worker, naming the
/// address, with its error number so the worker's `io::Error` keeps its kind.
async fn answer_listen(
    shared: &Shared,
    worker: &Worker,
    seq: u64,
    address: String,
    index: u32,
    options: cluster_ipc::ListenOptions,
) {
    let (backlog, grant) = shared.listen_settings();
    let Some(sender) = worker.sender() else {
        return;
    };
    let reply = |result, grant| Control::ListenReply { seq, result, grant };
    let quota_key = crate::listen_quota::canonical(&address, index);
    if let Err(refused) = may_listen(shared, worker, &address, &quota_key) {
        tracing::warn!(id = worker.id(), pid = worker.pid(), "{refused}");
        if let Err(e) = sender.send_control(&reply(Err(refused), grant), &[]).await {
            tracing::debug!(id = worker.id(), "listen reply not delivered: {e}");
        }
        return;
    }
    if let Some(obtained) = always_shared(shared, &address, index, backlog, options) {
        let (result, fds) = match obtained {
            Ok((local, fd)) => {
                worker.listen_quota().record(quota_key);
                (Ok(local), vec![fd])
            }
            Err(failure) => {
                tracing::warn!(id = worker.id(), "{failure}");
                (Err(failure), vec![])
            }
        };
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        if let Err(e) = sender
            .send_control(&reply(result, Grant::Shared), &borrowed)
            .await
        {
            tracing::debug!(id = worker.id(), "listen reply not delivered: {e}");
        }
        return;
    }
    let bound =
        shared
            .listeners
            .get_or_bind(&address, index, backlog, options, grant == Grant::ReusePort);
    let (result, fds) = match &bound {
        Ok(listener) => match listener.local_addr() {
            Ok(local) => {
                worker.listen_quota().record(quota_key);
                if grant != Grant::ReusePort {
                    worker.record_granted_tcp(&address, index);
                }
                let fds = match grant {
                    Grant::Shared => vec![listener.as_fd()],
                    Grant::ReusePort => vec![],
                    Grant::RoundRobin => {
                        shared.dispatcher(local, Some(listener));
                        vec![]
                    }
                };
                (Ok(local.to_string()), fds)
            }
            Err(e) => (
                Err(ListenFailure {
                    errno: e.raw_os_error(),
                    reason: format!("listen on {address}: {e}"),
                }),
                vec![],
            ),
        },
        Err(failure) => {
            tracing::warn!(id = worker.id(), "{failure}");
            (Err(failure.clone()), vec![])
        }
    };
    if let Err(e) = sender.send_control(&reply(result, grant), &fds).await {
        tracing::debug!(id = worker.id(), "listen reply not delivered: {e}");
    }
}

/// The socket for a `udp:` or `unix:` address (`None` for a TCP one) and the address to
/// report: Unix and UDP sockets are shared in every scheduling mode (a Unix socket's queue
/// is the socket's, whoever dies; a datagram socket has no connections to hand over).
fn always_shared(
    shared: &Shared,
    address: &str,
    index: u32,
    backlog: i32,
    options: cluster_ipc::ListenOptions,
) -> Option<Result<(String, OwnedFd), ListenFailure>> {
    let owned = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| ListenFailure::from_io(&e))
    };
    if let Some(requested) = cluster_ipc::udp_address(address) {
        let requested = requested.map_err(|_| {
            ListenFailure::with_errno(
                nix::libc::EINVAL,
                format!("bind {address}: not an IP address with a port"),
            )
        });
        return Some(requested.and_then(|requested| {
            let socket = shared
                .listeners
                .get_or_bind_udp(requested, index, options)?;
            let local = socket
                .local_addr()
                .map_err(|e| ListenFailure::from_io(&e))?;
            Ok((
                format!("{}{local}", cluster_ipc::UDP_PREFIX),
                owned(socket.as_fd())?,
            ))
        }));
    }
    let path = cluster_ipc::unix_path(address)?;
    Some(
        options
            .backlog_or(backlog)
            .map_err(|e| ListenFailure::from_io(&e))
            .and_then(|backlog| shared.listeners.get_or_bind_unix(path, index, backlog))
            .and_then(|listener| Ok((address.to_string(), owned(listener.as_fd())?))),
    )
}

/// Whether `worker` may make the master listen on `address`: the listen policy
/// (`EACCES` when refused) and the worker's quota (`EDQUOT`; `quota_key` counts as one of
/// its sockets).
fn may_listen(
    shared: &Shared,
    worker: &Worker,
    address: &str,
    quota_key: &str,
) -> Result<(), ListenFailure> {
    let bound_by_master = shared.listeners.contains(address);
    crate::listen_policy::check(&shared.settings(), address, bound_by_master)
        .map_err(|reason| ListenFailure::with_errno(nix::libc::EACCES, reason))?;
    let max_listens = shared.settings().max_listens_per_worker;
    worker
        .listen_quota()
        .check(quota_key, max_listens)
        .map_err(|reason| ListenFailure::with_errno(nix::libc::EDQUOT, reason))
}

/// A worker answered a round-robin hand-over.
fn answered(
    shared: &Shared,
    worker: &Worker,
    address: &str,
    seq: u64,
    answer: Answer,
) -> Result<(), String> {
    let address = address
        .parse()
        .map_err(|_| format!("answered a hand-over on {address:?}, not an address"))?;
    if let Some(dispatcher) = shared.dispatcher(address, None) {
        dispatcher.answered(worker, seq, answer);
    }
    Ok(())
}
