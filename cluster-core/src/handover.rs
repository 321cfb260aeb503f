//! Hand-overs: a failing worker keeps accepting on each of its addresses until a worker
//! started after its hand-over accepts there too; then the master relieves it of that
//! address. A recycled worker goes the same way, and is disconnected once relieved of all.

use std::net::SocketAddr;
use std::sync::Mutex;

use cluster_ipc::Control;

use crate::worker::Worker;

#[derive(Default)]
pub(crate) struct Handovers {
    /// Handing-over workers and the addresses they still wait to be relieved of.
    waiting: Mutex<Vec<Waiting>>,
}

struct Waiting {
    worker: Worker,
    addresses: Vec<SocketAddr>,
    /// Recycled: disconnect it once relieved of every address.
    disconnect_when_relieved: bool,
}

impl Handovers {
    /// `worker` hands over. When the cluster is stopping no replacement will come, so it is
    /// relieved of everything at once.
    pub(crate) fn start(&self, worker: &Worker, stopping: bool) {
        let addresses = worker.addresses();
        if stopping {
            for address in addresses {
                relieve(worker, address);
            }
            return;
        }
        if !addresses.is_empty() {
            self.lock().push(Waiting {
                worker: worker.clone(),
                addresses,
                disconnect_when_relieved: false,
            });
        }
    }

    /// `worker` is recycled: it keeps serving until a worker started after now accepts on
    /// each of its addresses, then it is disconnected (at once if it has no address).
    pub(crate) fn start_recycle(&self, worker: &Worker) {
        let addresses = worker.addresses();
        if addresses.is_empty() {
            worker.request_disconnect();
            return;
        }
        self.lock().push(Waiting {
            worker: worker.clone(),
            addresses,
            disconnect_when_relieved: true,
        });
    }

    /// `worker` now accepts on `address`: relieve every other worker waiting on it.
    pub(crate) fn listening(&self, worker: &Worker, address: SocketAddr) {
        let mut waiting = self.lock();
        for entry in waiting.iter_mut() {
            if entry.worker.id() != worker.id() && entry.addresses.contains(&address) {
                entry.addresses.retain(|a| *a != address);
                relieve(&entry.worker, address);
                if entry.addresses.is_empty() && entry.disconnect_when_relieved {
                    entry.worker.request_disconnect();
                }
            }
        }
        waiting.retain(|entry| !entry.addresses.is_empty());
    }

    /// The worker's channel is gone; nothing more can be sent to it.
    pub(crate) fn forget(&self, worker: &Worker) {
        self.lock().retain(|entry| entry.worker.id() != worker.id());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn relieve(worker: &Worker, address: SocketAddr) {
    let Some(sender) = worker.sender() else {
        return;
    };
    tokio::spawn(async move {
        let relieved = Control::Relieved {
            address: address.to_string(),
        };
        if let Err(e) = sender.send_control(&relieved, &[]).await {
            tracing::debug!("relief for {address} not delivered: {e}");
        }
    });
}
