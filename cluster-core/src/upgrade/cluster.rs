//! [`Cluster::upgrade`]: the hot upgrade of a plain cluster's master.

use crate::cluster::{Cluster, StopMode};

use super::{HAND_OFF_WITHIN, UpgradeError, hand_over, sockets_of};

impl Cluster {
    /// Hot upgrade (SIGUSR2): starts a new master from the program this one was started
    /// as, hands it every listening socket, and once its workers are all ready retires this
    /// master's workers through the graceful stop ([`Cluster::run`] then returns). Returns
    /// the new master's pid. If the new master fails (exits, or is not ready within
    /// [`crate::Settings::upgrade_timeout`]) it is killed and this master keeps serving.
    /// See `docs/SIGNALS.md`.
    pub async fn upgrade(&self) -> Result<u32, UpgradeError> {
        if self.shared.is_stopping() {
            return Err(UpgradeError::Stopping);
        }
        let sockets = sockets_of(&self.shared.listeners);
        let timeout = self.shared.settings().upgrade_timeout;
        let pid = hand_over(sockets, timeout, None).await?;
        crate::round_robin::hand_off(&self.shared.dispatchers(), HAND_OFF_WITHIN).await;
        tracing::info!(
            pid,
            "upgrade: the new master is ready; this one retires its workers"
        );
        self.begin_stop(StopMode::Graceful);
        Ok(pid)
    }
}
