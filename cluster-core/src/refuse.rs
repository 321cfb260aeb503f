//! Refusing connections while nobody can serve them: the master accepts what reaches its
//! listening sockets and resets it at once, so clients and load balancers get a refusal they
//! can fail over on, not a wait in the accept queue.
//!
//! `shutdown()` on a listening socket is no pause: it frees the port for anyone and does not
//! listen again. So the master keeps the socket (and the port) and, while refusing, is the
//! one accepting: TCP connections are reset (`SO_LINGER` 0: the client sees "connection
//! reset"), Unix ones closed. Everything is accepted under the gate's lock after checking it
//! is still shut, so once [`Refusal::stop`] has returned the master takes no more: the next
//! worker gets every connection that arrives from then on.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

/// A listening socket the master holds.
pub(crate) enum Socket {
    Tcp(Arc<TcpListener>),
    Unix(Arc<UnixListener>),
}

impl Socket {
    /// Its address, for the logs.
    fn describe(&self) -> String {
        match self {
            Socket::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string()),
            Socket::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "a Unix socket".into()),
        }
    }
}

/// Whether one cluster's sockets refuse connections now.
#[derive(Default)]
pub(crate) struct Refusal {
    /// One gate per socket while refusing; empty otherwise.
    gates: Mutex<Vec<Arc<Gate>>>,
}

impl Refusal {
    /// Starts refusing on `sockets`, unless already refusing.
    pub(crate) fn start(&self, sockets: Vec<Socket>, runtime: &tokio::runtime::Handle) {
        let mut gates = lock(&self.gates);
        if !gates.is_empty() {
            return;
        }
        let _runtime = runtime.enter();
        let mut addresses = Vec::new();
        for socket in sockets {
            let address = socket.describe();
            let gate = Arc::new(Gate {
                shut: Mutex::new(true),
                wake: Notify::new(),
                refused: AtomicU64::new(0),
            });
            let started = match socket {
                Socket::Tcp(listener) => tokio_tcp(&listener).map(|listener| {
                    tokio::spawn(refuse(gate.clone(), move |cx| {
                        listener.poll_accept(cx).map_ok(|(stream, _)| {
                            if let Err(e) = stream.set_zero_linger() {
                                tracing::debug!("SO_LINGER 0 on a refused connection: {e}");
                            }
                        })
                    }))
                }),
                Socket::Unix(listener) => tokio_unix(&listener).map(|listener| {
                    tokio::spawn(refuse(gate.clone(), move |cx| {
                        listener.poll_accept(cx).map_ok(drop)
                    }))
                }),
            };
            match started {
                Ok(_) => {
                    gates.push(gate);
                    addresses.push(address);
                }
                Err(e) => tracing::warn!("cannot refuse connections on {address}: {e}"),
            }
        }
        if !gates.is_empty() {
            tracing::info!("no worker can serve: refusing connections on {addresses:?}");
        }
    }

    /// Stops refusing. When this returns the master accepts nothing more.
    pub(crate) fn stop(&self) {
        let gates = std::mem::take(&mut *lock(&self.gates));
        if gates.is_empty() {
            return;
        }
        let mut refused = 0;
        for gate in gates {
            *lock(&gate.shut) = false;
            gate.wake.notify_one();
            refused += gate.refused.load(Ordering::Relaxed);
        }
        tracing::info!(
            refused,
            "serving again ({refused} connections refused meanwhile)"
        );
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        // The tasks hold copies of the sockets: end them, or the port stays bound.
        self.stop();
    }
}

/// One socket's refusing task and its switch.
struct Gate {
    /// True while refusing; held while accepting.
    shut: Mutex<bool>,
    wake: Notify,
    refused: AtomicU64,
}

impl Gate {
    /// Polls `accept` if still refusing, under the lock; `None` once not.
    fn accept_while_shut(
        &self,
        cx: &mut Context<'_>,
        accept: &mut impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<Option<io::Result<()>>> {
        let shut = lock(&self.shut);
        if !*shut {
            return Poll::Ready(None);
        }
        accept(cx).map(Some)
    }
}

/// Accepts and drops (resets) connections until the gate opens. `accept` accepts one and
/// prepares it to be reset when dropped.
async fn refuse(
    gate: Arc<Gate>,
    mut accept: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>> + Send + 'static,
) {
    loop {
        tokio::select! {
            biased;
            _ = gate.wake.notified() => {}
            accepted = std::future::poll_fn(|cx| gate.accept_while_shut(cx, &mut accept)) => {
                match accepted {
                    Some(Ok(())) => {
                        gate.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        // Out of descriptors, most likely: try again shortly.
                        tracing::debug!("accepting a connection to refuse: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    None => return,
                }
            }
        }
        if !*lock(&gate.shut) {
            return;
        }
    }
}

fn tokio_tcp(listener: &TcpListener) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(listener.try_clone()?)
}

fn tokio_unix(listener: &UnixListener) -> io::Result<tokio::net::UnixListener> {
    tokio::net::UnixListener::from_std(listener.try_clone()?)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data that no panic can leave half-updated.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
