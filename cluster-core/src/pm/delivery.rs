//! Sending to several workers at once, each bounded in time: one worker that does not read
//! its channel must not hold up the others (pm's `broadcast`).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;

use crate::SendError;
use crate::worker::Worker;

/// How long [`crate::pm::Master::broadcast`] and [`crate::pm::Master::send_to`] wait for one
/// worker's channel by default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// What a broadcast reached.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Pids of the workers the message was written to.
    pub reached: Vec<u32>,
    /// Workers it did not reach, and why (a full channel past the timeout is
    /// `SendError::Io` of kind `TimedOut`).
    pub unreached: Vec<Unreached>,
}

/// A worker a message did not reach.
#[derive(Debug)]
pub struct Unreached {
    /// The worker's pid.
    pub pid: u32,
    /// Why.
    pub error: SendError,
}

/// Sends `message` to `worker`, waiting at most `timeout` for its channel. A send cut off
/// in the middle of its frame closes that worker's channel (the stream would be out of
/// step): a worker that has not read for `timeout` with its channel full is treated as gone.
pub(crate) async fn send_within<T: Serialize + Sync + ?Sized>(
    worker: &Worker,
    message: &T,
    timeout: Duration,
) -> Result<(), SendError> {
    match tokio::time::timeout(timeout, worker.send(message)).await {
        Ok(sent) => sent,
        Err(_) => Err(SendError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

/// Sends `message` to every worker concurrently, each within `timeout`.
pub(crate) async fn send_to_all<T: Serialize + Sync + ?Sized>(
    workers: &[Worker],
    message: &T,
    timeout: Duration,
) -> Delivery {
    type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;
    let mut sends: Vec<Option<Sending<'_>>> = workers
        .iter()
        .map(|w| Some(Box::pin(send_within(w, message, timeout)) as Sending<'_>))
        .collect();
    let mut results: Vec<Option<Result<(), SendError>>> = workers.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, result) in sends.iter_mut().zip(results.iter_mut()) {
            if let Some(send) = slot {
                if let Poll::Ready(done) = send.as_mut().poll(cx) {
                    *result = Some(done);
                    *slot = None;
                }
            }
        }
        if sends.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let mut delivery = Delivery::default();
    for (worker, result) in workers.iter().zip(results) {
        match result {
            Some(Ok(())) => delivery.reached.push(worker.pid()),
            Some(Err(error)) => delivery.unreached.push(Unreached {
                pid: worker.pid(),
                error,
            }),
            None => delivery.unreached.push(Unreached {
                pid: worker.pid(),
                error: SendError::Closed,
            }),
        }
    }
    delivery
}
