//! The worker's heartbeat: proof, every interval, that the worker's runtime still polls
//! tasks. A runtime blocked by a `std::thread::sleep`, an endless loop or a deadlock stops
//! beating, so the master's watchdog notices; a runtime that is busy but still polls its
//! tasks keeps beating.
//!
//! A pacer thread (a plain OS thread, asleep between beats) injects one small beat task into
//! the runtime per interval, and the task sends the beat when the runtime first polls it. The
//! beat is therefore made *by* the runtime, but it is not scheduled from inside it. A beat
//! that a runtime timer wakes depends on one of the runtime's threads to drive the timer and
//! to run the woken task, and a thread that blocks right after a wake-up can hold both: the
//! woken task sits in its LIFO slot, out of reach of the other threads, and an idle thread
//! asleep on its condition variable is not handed the driver. Measured: a multi-thread
//! worker spinning in one handler, its second thread idle, was taken for hung in about one
//! run in eight under load. A task spawned from outside goes to the shared injection queue
//! and wakes an idle thread, which then also takes over the driver, so any thread that still
//! polls sends the beat. A current-thread runtime that blocks polls nothing, and the beat
//! waits for it as it should.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster_ipc::{Control, Sender};
use tokio::runtime::Handle;

use crate::connections::Connections;
use crate::served::Served;

/// Beats every `interval` (the first at once) until the channel is closed, each beat with
/// what `served` counts and the `connections` open. Must be called inside the worker's
/// runtime.
pub(crate) fn start(
    sender: Sender,
    served: Arc<Served>,
    connections: Arc<Connections>,
    interval: Duration,
) {
    let runtime = Handle::current();
    let pacer = Pacer {
        sender,
        served,
        connections,
        pending: Arc::new(AtomicBool::new(false)),
        ended: Arc::new(AtomicBool::new(false)),
    };
    let started = std::thread::Builder::new()
        .name("cluster-heartbeat".into())
        // It only sleeps and spawns: a small stack.
        .stack_size(64 * 1024)
        .spawn(move || pacer.run(&runtime, interval));
    if let Err(e) = started {
        // Without a heartbeat the master's watchdog replaces this worker after its
        // timeout; say why it will.
        tracing::error!(
            "cannot start the heartbeat thread, the watchdog will replace this worker: {e}"
        );
    }
}

struct Pacer {
    sender: Sender,
    served: Arc<Served>,
    connections: Arc<Connections>,
    /// A beat task is spawned and not polled yet: the runtime is late, and piling more
    /// tasks on it would only make the backlog longer.
    pending: Arc<AtomicBool>,
    /// The channel is closed: no more beats.
    ended: Arc<AtomicBool>,
}

impl Pacer {
    fn run(self, runtime: &Handle, interval: Duration) {
        while !self.ended.load(Ordering::Acquire) {
            if !self.pending.swap(true, Ordering::AcqRel) {
                self.spawn_beat(runtime);
            }
            std::thread::sleep(interval);
        }
    }

    fn spawn_beat(&self, runtime: &Handle) {
        let (sender, served) = (self.sender.clone(), self.served.clone());
        let connections = self.connections.clone();
        let (pending, ended) = (self.pending.clone(), self.ended.clone());
        // A runtime that has shut down drops the task unpolled; the process is ending then.
        runtime.spawn(async move {
            pending.store(false, Ordering::Release);
            let beat = Control::Heartbeat {
                served: served.served(),
                open_connections: connections.open(),
            };
            if let Err(e) = sender.send_control(&beat, &[]).await {
                tracing::debug!("heartbeats end: {e}");
                ended.store(true, Ordering::Release);
            }
        });
    }
}
