//! What a master tells a worker it starts, through the worker's environment (Node's
//! `NODE_UNIQUE_ID` and `NODE_CHANNEL_FD`).

use std::os::fd::RawFd;

use crate::codec::Serialization;

/// The worker's id, from 1.
pub const ENV_WORKER_ID: &str = "CLUSTER_WORKER_ID";
/// The descriptor number of the worker's end of its channel.
pub const ENV_CHANNEL_FD: &str = "CLUSTER_CHANNEL_FD";
/// `json` or `binary`.
pub const ENV_SERIALIZATION: &str = "CLUSTER_SERIALIZATION";
/// The largest message payload, in bytes.
pub const ENV_MAX_MESSAGE_BYTES: &str = "CLUSTER_MAX_MESSAGE_BYTES";
/// The master's pid: a process whose parent is not this pid is not the worker (it may be a
/// worker's child that inherited the environment).
pub const ENV_MASTER_PID: &str = "CLUSTER_MASTER_PID";
/// How long a worker whose master is gone may drain before it exits, in milliseconds.
pub const ENV_ORPHAN_TIMEOUT_MS: &str = "CLUSTER_ORPHAN_TIMEOUT_MS";

/// How often the worker's runtime sends a heartbeat, in milliseconds (0: never).
pub const ENV_HEARTBEAT_MS: &str = "CLUSTER_HEARTBEAT_MS";
/// After how many requests (or connections) the worker asks to be recycled (0: never).
pub const ENV_MAX_REQUESTS: &str = "CLUSTER_MAX_REQUESTS";

/// The listening sockets handed over with the handoff, so that `listen()` finds them without
/// asking the master: entries `FD,INDEX,REQUESTED,LOCAL` separated by spaces (`FD` is `-`
/// for a round-robin address, where the master accepts and there is no descriptor).
pub const ENV_LISTEN_SOCKETS: &str = "CLUSTER_LISTEN_SOCKETS";

/// The table of live connections the workers share (`load_table.rs`) and this worker's slot
/// in it: `FD,SLOT`. Unset: the worker does not take part in the balance.
pub const ENV_LOAD_TABLE: &str = "CLUSTER_LOAD_TABLE";

/// The name of the group a supervised worker belongs to (set by `cluster_core::pm`).
pub const ENV_GROUP: &str = "CLUSTER_GROUP";
/// The group's listen addresses, comma-separated (set by `cluster_core::pm`).
pub const ENV_GROUP_LISTEN: &str = "CLUSTER_GROUP_LISTEN";

/// The descriptor number a worker's channel end is mapped to.
pub const CHANNEL_FD: RawFd = 3;

/// The default largest message payload: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Everything a worker learns from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHandoff {
    /// The worker's id, from 1.
    pub id: u32,
    /// The channel end's descriptor number.
    pub channel_fd: RawFd,
    /// The cluster's message encoding.
    pub serialization: Serialization,
    /// The largest message payload.
    pub max_message_bytes: usize,
    /// The master's pid.
    pub master_pid: u32,
    /// Drain time allowed once the master is gone, in milliseconds.
    pub orphan_timeout_ms: u64,
    /// The heartbeat interval in milliseconds; 0 sends none.
    pub heartbeat_ms: u64,
    /// Requests (or connections) after which the worker asks to be recycled; 0 never.
    pub max_requests: u64,
    /// Sockets the master granted with the handoff (a replacement gets those its predecessor
    /// had): the worker's `listen()` takes them without a request.
    pub sockets: Vec<HandedSocket>,
    /// The shared table of live connections and this worker's slot in it.
    pub load_slot: Option<LoadSlot>,
}

/// Where a worker finds the shared [`crate::LoadTable`] and which slot is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSlot {
    /// The table's descriptor number in the worker (not close-on-exec until the worker
    /// maps it).
    pub fd: RawFd,
    /// The worker's slot, below [`crate::load_table::SLOTS`].
    pub slot: u32,
}

impl std::str::FromStr for LoadSlot {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        let (fd, slot) = value.split_once(',').ok_or(())?;
        let fd: RawFd = fd.parse().map_err(drop)?;
        let slot: u32 = slot.parse().map_err(drop)?;
        if fd < 0 || slot as usize >= crate::load_table::SLOTS {
            return Err(());
        }
        Ok(LoadSlot { fd, slot })
    }
}

/// One listening socket granted with the handoff: the answer the master would give to a
/// listen request for `requested` with `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedSocket {
    /// The descriptor number in the worker (not close-on-exec until the worker adopts it);
    /// `None` for a round-robin address (the master hands the connections over).
    pub fd: Option<RawFd>,
    /// Which of the worker's sockets for `requested` it is (Node's per-worker index).
    pub index: u32,
    /// The address as a worker asks for it (`127.0.0.1:8080`, `[::]:0`).
    pub requested: String,
    /// The address the socket is bound to (what the worker reports as listening).
    pub local: String,
}

impl HandedSocket {
    fn to_entry(&self) -> String {
        let fd = self.fd.map_or("-".to_string(), |fd| fd.to_string());
        format!("{fd},{},{},{}", self.index, self.requested, self.local)
    }

    fn from_entry(entry: &str) -> Option<HandedSocket> {
        let mut parts = entry.split(',');
        let fd = match parts.next()? {
            "-" => None,
            fd => Some(fd.parse().ok().filter(|fd: &RawFd| *fd >= 0)?),
        };
        let index = parts.next()?.parse().ok()?;
        let requested = parts.next()?.to_string();
        let local = parts.next()?.to_string();
        if parts.next().is_some() || requested.is_empty() || local.is_empty() {
            return None;
        }
        Some(HandedSocket {
            fd,
            index,
            requested,
            local,
        })
    }
}

/// The handed sockets from the value of [`ENV_LISTEN_SOCKETS`].
fn parse_sockets(value: Option<String>) -> Result<Vec<HandedSocket>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split_whitespace()
        .map(|entry| {
            HandedSocket::from_entry(entry).ok_or_else(|| {
                format!("{ENV_LISTEN_SOCKETS}: {entry:?} is not FD,INDEX,REQUESTED,LOCAL")
            })
        })
        .collect()
}

impl WorkerHandoff {
    /// Every environment variable of the handoff, for the master to set.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_WORKER_ID, self.id.to_string()),
            (ENV_CHANNEL_FD, self.channel_fd.to_string()),
            (ENV_SERIALIZATION, self.serialization.as_str().to_string()),
            (ENV_MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (ENV_MASTER_PID, self.master_pid.to_string()),
            (ENV_ORPHAN_TIMEOUT_MS, self.orphan_timeout_ms.to_string()),
            (ENV_HEARTBEAT_MS, self.heartbeat_ms.to_string()),
            (ENV_MAX_REQUESTS, self.max_requests.to_string()),
            (
                ENV_LISTEN_SOCKETS,
                self.sockets
                    .iter()
                    .map(HandedSocket::to_entry)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (
                ENV_LOAD_TABLE,
                self.load_slot
                    .map_or(String::new(), |l| format!("{},{}", l.fd, l.slot)),
            ),
        ]
    }

    /// Every variable name the handoff uses.
    pub const VARIABLES: [&'static str; 10] = [
        ENV_WORKER_ID,
        ENV_CHANNEL_FD,
        ENV_SERIALIZATION,
        ENV_MAX_MESSAGE_BYTES,
        ENV_MASTER_PID,
        ENV_ORPHAN_TIMEOUT_MS,
        ENV_HEARTBEAT_MS,
        ENV_MAX_REQUESTS,
        ENV_LISTEN_SOCKETS,
        ENV_LOAD_TABLE,
    ];

    /// Reads the handoff with `get` (usually `std::env::var`). `Ok(None)` when this process
    /// was not started as a worker; an error names the variable that is wrong.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(id) = get(ENV_WORKER_ID) else {
            return Ok(None);
        };
        fn parse<T: std::str::FromStr>(name: &str, value: Option<String>) -> Result<T, String> {
            let value = value.ok_or_else(|| format!("{name} is not set"))?;
            value
                .parse()
                .map_err(|_| format!("{name}={value:?} is not valid"))
        }
        Ok(Some(WorkerHandoff {
            id: parse(ENV_WORKER_ID, Some(id))?,
            channel_fd: parse(ENV_CHANNEL_FD, get(ENV_CHANNEL_FD))?,
            serialization: parse(ENV_SERIALIZATION, get(ENV_SERIALIZATION))?,
            max_message_bytes: parse(ENV_MAX_MESSAGE_BYTES, get(ENV_MAX_MESSAGE_BYTES))?,
            master_pid: parse(ENV_MASTER_PID, get(ENV_MASTER_PID))?,
            orphan_timeout_ms: parse(ENV_ORPHAN_TIMEOUT_MS, get(ENV_ORPHAN_TIMEOUT_MS))?,
            heartbeat_ms: parse(ENV_HEARTBEAT_MS, get(ENV_HEARTBEAT_MS))?,
            max_requests: parse(ENV_MAX_REQUESTS, get(ENV_MAX_REQUESTS))?,
            sockets: parse_sockets(get(ENV_LISTEN_SOCKETS))?,
            load_slot: match get(ENV_LOAD_TABLE).filter(|v| !v.is_empty()) {
                None => None,
                value => Some(parse(ENV_LOAD_TABLE, value)?),
            },
        }))
    }
}

/// The pid of the master that started this process as its worker, or `None`. It does not rely
/// on the `CLUSTER_*` variables alone (a program may have cleared them): either [`ENV_MASTER_PID`] names this process's parent, or descriptor
/// [`CHANNEL_FD`] is a Unix stream socket pair made by the parent (the channel).
///
/// A process started by a worker is not a worker: its parent is the worker, not the master.
pub fn started_by_master() -> Option<u32> {
    let parent = std::os::unix::process::parent_id();
    if parent <= 1 {
        return None; // orphaned, or started by init: no master is waiting on it
    }
    let named = std::env::var(ENV_MASTER_PID)
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok());
    let by_environment = named == Some(parent) && std::env::var_os(ENV_CHANNEL_FD).is_some();
    let by_channel = crate::sys::stream_pair_peer_pid(CHANNEL_FD) == Some(parent);
    (by_environment || by_channel).then_some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_environment() {
        let handoff = WorkerHandoff {
            id: 7,
            channel_fd: 3,
            serialization: Serialization::Binary,
            max_message_bytes: 1 << 20,
            master_pid: 42,
            orphan_timeout_ms: 1500,
            heartbeat_ms: 250,
            max_requests: 1000,
            sockets: vec![
                HandedSocket {
                    fd: Some(7),
                    index: 0,
                    requested: "[::]:8080".into(),
                    local: "[::]:8080".into(),
                },
                HandedSocket {
                    fd: None,
                    index: 1,
                    requested: "127.0.0.1:0".into(),
                    local: "127.0.0.1:40001".into(),
                },
            ],
            load_slot: Some(LoadSlot { fd: 9, slot: 1023 }),
        };
        let vars = handoff.to_env();
        let read = WorkerHandoff::read(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        });
        assert_eq!(read, Ok(Some(handoff)));
    }

    #[test]
    fn absent_id_means_not_a_worker_and_bad_values_are_named() {
        assert_eq!(WorkerHandoff::read(|_| None), Ok(None));
        let err = WorkerHandoff::read(|name| match name {
            ENV_WORKER_ID => Some("1".into()),
            ENV_CHANNEL_FD => Some("three".into()),
            _ => Some("0".into()),
        })
        .unwrap_err();
        assert!(err.contains(ENV_CHANNEL_FD), "{err}");
    }

    #[test]
    fn a_load_slot_out_of_the_table_is_named() {
        for bad in ["9,1024", "-1,0", "9", "9,x"] {
            let err = WorkerHandoff::read(|name| match name {
                ENV_SERIALIZATION => Some("json".into()),
                ENV_LOAD_TABLE => Some(bad.into()),
                ENV_LISTEN_SOCKETS => None,
                _ => Some("1".into()),
            })
            .unwrap_err();
            assert!(err.contains(ENV_LOAD_TABLE), "{bad}: {err}");
        }
        let none = WorkerHandoff::read(|name| match name {
            ENV_SERIALIZATION => Some("json".into()),
            ENV_LOAD_TABLE => Some(String::new()),
            ENV_LISTEN_SOCKETS => None,
            _ => Some("1".into()),
        });
        assert_eq!(none.map(|h| h.and_then(|h| h.load_slot)), Ok(None));
    }

    #[test]
    fn a_bad_socket_entry_is_named() {
        let err = parse_sockets(Some("7,0,127.0.0.1:80".into())).unwrap_err();
        assert!(
            err.contains(ENV_LISTEN_SOCKETS) && err.contains("127.0.0.1:80"),
            "{err}"
        );
        assert!(parse_sockets(Some("-1,0,a,b".into())).is_err());
        assert_eq!(parse_sockets(Some(String::new())), Ok(vec![]));
        assert_eq!(parse_sockets(None), Ok(vec![]));
    }
}
