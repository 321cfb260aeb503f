//! The worker's heartbeat: a task on the worker's own runtime that tells the master, every
//! interval, that the event loop still runs. A loop blocked by a `std::thread::sleep`, an
//! endless loop or a deadlock stops running it, so the master's watchdog notices; a loop
//! that is busy but still polls its tasks keeps beating.

use std::time::Duration;

use std::sync::Arc;

use cluster_ipc::{Control, Sender};

use crate::served::Served;
use tokio::time::MissedTickBehavior;

/// Beats every `interval` (the first at once) until the channel is closed, each beat with
/// what `served` counts.
pub(crate) fn start(sender: Sender, served: Arc<Served>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let beat = Control::Heartbeat {
                served: served.served(),
                open_connections: served.open_connections(),
            };
            if let Err(e) = sender.send_control(&beat, &[]).await {
                tracing::debug!("heartbeats end: {e}");
                return;
            }
        }
    });
}
