//! [`crate::Cluster::disconnect`]: every worker drains and exits, and the cluster stays up
//! (Node's `cluster.disconnect()`); [`crate::Cluster::stop`] is the terminal one.

use crate::signal::Signal;

impl crate::Cluster {
    /// Disconnects every worker (Node's `cluster.disconnect()`): each closes its servers,
    /// finishes its connections and exits; those still running after `stop_timeout` are
    /// killed. Returns when all of them have exited. The cluster keeps running: [`fork`]
    /// starts a fresh set afterwards. The workers it ends are ended on purpose (as with
    /// [`crate::Worker::disconnect`]): the default respawn does not replace them, but a
    /// dispatch that forks in its callbacks does, as in Node. To end the cluster, use
    /// [`crate::Cluster::stop`].
    ///
    /// [`fork`]: crate::Cluster::fork
    pub async fn disconnect(&self) {
        let workers = self.workers();
        if workers.is_empty() {
            return;
        }
        let timeout = self.shared.settings().stop_timeout;
        for worker in &workers {
            worker.disconnect();
        }
        let all_exited = async {
            for worker in &workers {
                worker.exited().await;
            }
        };
        if tokio::time::timeout(timeout, all_exited).await.is_err() {
            tracing::warn!(
                ?timeout,
                "workers still running after a disconnect's stop timeout; killing them"
            );
            for worker in &workers {
                worker.signal(Signal::SIGKILL);
            }
            for worker in &workers {
                worker.exited().await;
            }
        }
    }
}
