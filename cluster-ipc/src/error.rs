//! Errors of the channel.

use crate::codec::CodecError;

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The encoded message is larger than the channel's limit; nothing was sent.
    #[error("message of {size} bytes is over the {max}-byte limit; nothing was sent")]
    TooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// More descriptors than one message may carry.
    #[error("{count} descriptors in one message (at most {max})")]
    TooManyFds {
        /// Descriptors given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The value could not be encoded.
    #[error("could not encode the message: {0}")]
    Encode(#[from] CodecError),
    /// The other side is gone or the channel was closed.
    #[error("channel closed")]
    Closed,
    /// Any other OS error.
    #[error("channel write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why the channel cannot deliver further messages. Every variant ends the channel: the
/// stream can no longer be trusted to be in step.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// A frame header announced a payload over the receiver's limit.
    #[error("incoming message of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Announced size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The bytes are not a valid frame or message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// An OS error while reading.
    #[error("channel read failed: {0}")]
    Io(#[from] std::io::Error),
}
