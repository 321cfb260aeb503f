//! Workers' stdout and stderr: inherited, discarded, or captured and forwarded by the master
//! line by line with the worker's name, id and pid in front (pm2's log capture).
//!
//! Forwarding never blocks a worker and never blocks the master's runtime: each pipe is
//! drained by a task as fast as the worker writes; complete lines go into a bounded queue
//! that one thread (`cluster-output`) writes to the master's stdout or stderr. When that
//! output is slow or broken (a full pipe, a log shipper that died) lines are dropped and
//! counted ([`dropped_output_lines`]); once writing works again a line says how many were
//! lost. A write error never ends the master.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;

/// Where a worker's stdout and stderr go.
///
/// ```
/// use cluster_core::{Settings, Stdio};
/// let settings = Settings::new().stdio(Stdio::Forward);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Stdio {
    /// The worker writes to the master's own stdout and stderr (the default).
    #[default]
    Inherit,
    /// Discarded (`/dev/null`).
    Null,
    /// Pipes owned by the master, forwarded line by line as `[name:id:pid] line` to the
    /// master's stdout and stderr. Bounded: when the master's output cannot keep up, lines
    /// are dropped and counted, and the worker never waits.
    Forward,
}

/// Lines queued for the output thread at most; beyond, lines are dropped.
const QUEUE_LINES: usize = 4096;
/// A longer line is forwarded in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy)]
enum Target {
    Stdout,
    Stderr,
}

struct Sink {
    queue: SyncSender<(Target, Vec<u8>)>,
}

static SINK: OnceLock<Option<Sink>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Pipes still read, and lines queued but not written yet (for [`flush_output`]).
static PUMPS: AtomicU64 = AtomicU64::new(0);
static QUEUED: AtomicU64 = AtomicU64::new(0);

/// Waits (at most `deadline`) until the forwarded output of the workers that have exited is
/// written: their pipes read to the end and the queue empty. A master calls it after its
/// `run` returned and before exiting, so the last lines of its workers (what they printed
/// as they stopped) are not lost with the process.
pub async fn flush_output(deadline: std::time::Duration) {
    let started = std::time::Instant::now();
    while (PUMPS.load(Ordering::Acquire) > 0 || QUEUED.load(Ordering::Acquire) > 0)
        && started.elapsed() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// How many lines of forwarded worker output this process has dropped because its own
/// output was too slow or broken.
pub fn dropped_output_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn sink() -> Option<&'static Sink> {
    SINK.get_or_init(|| {
        let (queue, lines) = std::sync::mpsc::sync_channel::<(Target, Vec<u8>)>(QUEUE_LINES);
        let started = std::thread::Builder::new()
            .name("cluster-output".into())
            .spawn(move || {
                let mut reported = 0;
                for (target, line) in lines {
                    let written = match target {
                        Target::Stdout => std::io::stdout().lock().write_all(&line),
                        Target::Stderr => std::io::stderr().lock().write_all(&line),
                    };
                    QUEUED.fetch_sub(1, Ordering::AcqRel);
                    if written.is_err() {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let dropped = DROPPED.load(Ordering::Relaxed);
                    if dropped > reported {
                        let notice = format!(
                            "[master:{}] {} lines of worker output dropped (output too slow or broken)\n",
                            std::process::id(),
                            dropped - reported
                        );
                        if std::io::stderr().lock().write_all(notice.as_bytes()).is_ok() {
                            reported = dropped;
                        }
                    }
                }
            });
        match started {
            Ok(_) => Some(Sink { queue }),
            Err(e) => {
                tracing::error!("cannot start the worker output thread: {e}; output dropped");
                None
            }
        }
    })
    .as_ref()
}

/// Starts forwarding the piped stdout and stderr of `child`, each line prefixed with
/// `[name:id:pid] `.
pub(crate) fn forward(child: &mut Child, name: &str, id: u32) {
    let pid = child.id().unwrap_or_default();
    let prefix = format!("[{name}:{id}:{pid}] ");
    if let Some(stdout) = child.stdout.take() {
        PUMPS.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(pump(stdout, prefix.clone(), Target::Stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        PUMPS.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(pump(stderr, prefix, Target::Stderr));
    }
}

/// Reads `pipe` until the worker (and whatever inherited the pipe) closes it.
async fn pump(mut pipe: impl AsyncRead + Unpin, prefix: String, target: Target) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let read = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            send(&prefix, &pending[start..start + end], target);
            start += end + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            send(&prefix, &pending[..MAX_LINE], target);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        send(&prefix, &pending, target);
    }
    PUMPS.fetch_sub(1, Ordering::AcqRel);
}

fn send(prefix: &str, line: &[u8], target: Target) {
    let Some(sink) = sink() else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(line);
    out.push(b'\n');
    QUEUED.fetch_add(1, Ordering::AcqRel);
    match sink.queue.try_send((target, out)) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            QUEUED.fetch_sub(1, Ordering::AcqRel);
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}
