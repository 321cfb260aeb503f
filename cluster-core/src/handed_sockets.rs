//! Sockets a replacement gets with its handoff (issue 13): the TCP sockets its predecessor
//! was granted, mapped into the new process at fork (their descriptor numbers kept, no
//! longer close-on-exec in the child) and named in `CLUSTER_LISTEN_SOCKETS`, so the
//! replacement's `listen()` finds them without a `ListenRequest` round trip.
//!
//! The answer is the one a request would get: the same socket from the master's table
//! (`listeners.rs`, by address and index), after the same listen policy check, counted in
//! the new worker's quota (at most `max_listens_per_worker` are handed). Round-robin
//! addresses hand no descriptor (`fd` is `None`): the worker opens its feed and reports
//! `listening`, and the master's dispatcher adds it then, as after a request. ReusePort
//! sockets (each worker binds its own), Unix and UDP sockets still go through a request.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use cluster_ipc::Grant;
use cluster_ipc::handoff::{CHANNEL_FD, HandedSocket};

use crate::cluster::Shared;
use crate::worker::Worker;

/// One socket handed with a handoff.
pub(crate) struct Handed {
    /// What the handoff says about it.
    pub(crate) socket: HandedSocket,
    /// The key the new worker's listen quota counts it under.
    pub(crate) quota_key: String,
    /// Kept until the fork is done (the table holds it anyway).
    _listener: Arc<std::net::TcpListener>,
}

/// The sockets to hand to the replacement of `predecessor`: those it was granted that the
/// master still holds and the listen policy still allows, in the scheduling mode now in
/// force, at most the quota.
pub(crate) fn for_replacement(shared: &Shared, predecessor: &Worker) -> Vec<Handed> {
    let (_, grant) = shared.listen_settings();
    if grant == Grant::ReusePort {
        return Vec::new();
    }
    let (settings_max, policy_ok) = {
        let settings = shared.settings();
        let max = settings.max_listens_per_worker;
        let allowed: Vec<bool> = predecessor
            .granted_tcp()
            .iter()
            .map(|(address, _)| crate::listen_policy::check(&settings, address, true).is_ok())
            .collect();
        (max, allowed)
    };
    let mut handed = Vec::new();
    for ((requested, index), allowed) in predecessor.granted_tcp().into_iter().zip(policy_ok) {
        if !allowed || handed.len() >= settings_max {
            continue;
        }
        let Some(listener) = shared.listeners.bound_tcp(&requested, index) else {
            continue;
        };
        let Ok(local) = listener.local_addr() else {
            continue;
        };
        let fd = match grant {
            // Descriptor 3 becomes the channel in the child: that one goes by request.
            Grant::Shared if listener.as_raw_fd() == CHANNEL_FD => continue,
            Grant::Shared => Some(listener.as_raw_fd()),
            _ => {
                // The dispatcher exists since the first request; make sure of it.
                shared.dispatcher(local, Some(&listener));
                None
            }
        };
        handed.push(Handed {
            quota_key: crate::listen_quota::canonical(&requested, index),
            socket: HandedSocket {
                fd,
                index,
                requested,
                local: local.to_string(),
            },
            _listener: listener,
        });
    }
    handed
}

/// The descriptors the child must inherit for `handed`.
pub(crate) fn descriptors(handed: &[Handed]) -> Vec<RawFd> {
    handed.iter().filter_map(|h| h.socket.fd).collect()
}

/// Counts the handed sockets in the new worker's quota and granted list (its own
/// replacement gets them too).
pub(crate) fn record(worker: &Worker, handed: Vec<Handed>) {
    for h in handed {
        worker.listen_quota().record(h.quota_key);
        worker.record_granted_tcp(&h.socket.requested, h.socket.index);
    }
}
