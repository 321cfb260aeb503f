//! A user message as received: its bytes and the encoding to read them with.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::codec::{CodecError, Serialization};

/// A message from the user code on the other side of a channel.
///
/// The payload is decoded on demand, so one receiver can read messages of several types.
/// Cloning is cheap (the bytes are shared).
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
        match (self.serialization, std::str::from_utf8(&self.payload)) {
            (Serialization::Json, Ok(text)) if text.len() <= 256 => s.field("payload", &text),
            _ => s.field("payload_len", &self.payload.len()),
        };
        s.finish()
    }
}
