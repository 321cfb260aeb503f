//! Hand-overs: a failing worker keeps accepting on each of its addresses until a worker
//! started after its hand-over accepts there too; then the master relieves it of that
//! address.

use std::net::SocketAddr;
use std::sync::Mutex;

use cluster_ipc::Control;

use crate::worker::Worker;

#[derive(Default)]
pub(crate) struct Handovers {
    /// Handing-over workers and the addresses they still wait to be relieved of.
    waiting: Mutex<Vec<(Worker, Vec<SocketAddr>)>>,
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
            self.lock().push((worker.clone(), addresses));
        }
    }

    /// `worker` now accepts on `address`: relieve every other worker waiting on it.
    pub(crate) fn listening(&self, worker: &Worker, address: SocketAddr) {
        let mut waiting = self.lock();
        for (handing_over, addresses) in waiting.iter_mut() {
            if handing_over.id() != worker.id() && addresses.contains(&address) {
                addresses.retain(|a| *a != address);
                relieve(handing_over, address);
            }
        }
        waiting.retain(|(_, addresses)| !addresses.is_empty());
    }

    /// The worker's channel is gone; nothing more can be sent to it.
    pub(crate) fn forget(&self, worker: &Worker) {
        self.lock().retain(|(w, _)| w.id() != worker.id());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Worker, Vec<SocketAddr>)>> {
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
