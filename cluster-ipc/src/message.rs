//! A user message as received: its bytes, the encoding to read them with, and the
//! descriptors that came with it (Node's `sendHandle`).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use crate::codec::{CodecError, Serialization};

/// A message from the user code on the other side of a channel.
///
/// The payload is decoded on demand, so one receiver can read messages of several types.
/// Cloning is cheap (the bytes are shared).
///
/// A message sent with descriptors ([`crate::Sender::send_with`]) hands them out once:
/// [`Message::take_fds`] gives them to the first caller, whichever clone it calls on (every
/// event stream of the master sees a clone of the same message). Received descriptors are
/// close-on-exec; those nobody takes are closed when the last clone is dropped.
///
/// ```no_run
/// # async fn demo(mut rx: cluster_ipc::Receiver) -> Result<(), Box<dyn std::error::Error>> {
/// if let Some(cluster_ipc::Incoming::User(msg)) = rx.recv().await? {
///     let value: serde_json::Value = msg.decode()?;
///     println!("{value}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Message {
    serialization: Serialization,
    payload: Arc<[u8]>,
    origin: Option<Origin>,
    /// The descriptors it carried, shared by the clones; `None` when it carried none.
    fds: Option<Arc<Carried>>,
}

/// Descriptors that came with a message.
struct Carried {
    /// Those not taken yet.
    fds: Mutex<Vec<OwnedFd>>,
    /// Announced by the sender, lost on the way (this process's descriptor table was full).
    lost: usize,
}

/// The worker a message came from, when another worker sent it through the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The sender's group, if a supervisor started it.
    pub group: Option<String>,
    /// The sender's pid.
    pub pid: u32,
}

impl Message {
    pub(crate) fn new(serialization: Serialization, payload: &[u8]) -> Self {
        Message {
            serialization,
            payload: Arc::from(payload),
            origin: None,
            fds: None,
        }
    }

    /// A message that arrived with `fds` (and without `lost` more the sender attached).
    pub(crate) fn with_fds(
        serialization: Serialization,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        lost: usize,
    ) -> Self {
        let carried = (!fds.is_empty() || lost > 0).then(|| {
            Arc::new(Carried {
                fds: Mutex::new(fds),
                lost,
            })
        });
        Message {
            fds: carried,
            ..Message::new(serialization, payload)
        }
    }

    /// A message another worker sent through the master.
    pub fn forwarded(serialization: Serialization, payload: &[u8], origin: Origin) -> Self {
        Message {
            origin: Some(origin),
            ..Message::new(serialization, payload)
        }
    }

    /// The worker that sent it through the master; `None` for the master's own messages.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Decodes the payload as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.serialization.decode(&self.payload)
    }

    /// Takes the descriptors the message carried, in the order they were sent, each owned
    /// and close-on-exec. The first call gets them all; later calls (on any clone) get
    /// none. Descriptors never taken are closed when the last clone of the message drops.
    ///
    /// ```no_run
    /// # fn demo(message: cluster_ipc::Message) {
    /// if let Some(fd) = message.take_fds().into_iter().next() {
    ///     let stream = std::net::TcpStream::from(fd);
    /// #   drop(stream);
    /// }
    /// # }
    /// ```
    pub fn take_fds(&self) -> Vec<OwnedFd> {
        match &self.fds {
            Some(carried) => std::mem::take(
                &mut *carried
                    .fds
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            ),
            None => Vec::new(),
        }
    }

    /// How many descriptors it still holds (not taken yet).
    pub fn fd_count(&self) -> usize {
        self.fds.as_ref().map_or(0, |carried| {
            carried
                .fds
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len()
        })
    }

    /// How many descriptors the sender attached that did not arrive because this process's
    /// descriptor table was full (`RLIMIT_NOFILE`); 0 otherwise.
    pub fn fds_lost(&self) -> usize {
        self.fds.as_ref().map_or(0, |carried| carried.lost)
    }

    /// The encoded bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The encoding the payload uses.
    pub fn serialization(&self) -> Serialization {
        self.serialization
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Message");
        s.field("serialization", &self.serialization);
        if let Some(origin) = &self.origin {
            s.field("origin", origin);
        }
        if self.fds.is_some() {
            s.field("fds", &self.fd_count());
        }
        match (self.serialization, std::str::from_utf8(&self.payload)) {
            (Serialization::Json, Ok(text)) if text.len() <= 256 => s.field("payload", &text),
            _ => s.field("payload_len", &self.payload.len()),
        };
        s.finish()
    }
}
