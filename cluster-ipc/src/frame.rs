//! The frame: an 8-byte header, then the payload.
//!
//! ```text
//! byte 0   magic 0xC1
//! byte 1   kind: 0 control (the runtime's own messages), 1 user
//! byte 2   number of descriptors sent with this frame (SCM_RIGHTS)
//! byte 3   reserved, 0
//! 4..8     payload length, u32 little-endian
//! ```
//!
//! The stream socket keeps bytes in order; the header keeps message boundaries. Descriptors
//! arrive with the read that holds their frame's first byte, never later, so the reader
//! queues them and hands each frame the number its header announces.

use crate::channel::ChannelOptions;
use crate::error::RecvError;

pub(crate) const HEADER_LEN: usize = 8;
const MAGIC: u8 = 0xC1;

/// Who a frame is for: the cluster runtime or the user's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Control = 0,
    User = 1,
}

/// A parsed header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub kind: FrameKind,
    pub fd_count: usize,
    pub payload_len: usize,
}

/// Reserves the header's place at the start of a new frame buffer.
pub(crate) fn start_frame(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + capacity);
    buf.extend_from_slice(&[0; HEADER_LEN]);
    buf
}

/// Fills in the header of a frame built with [`start_frame`].
pub(crate) fn finish_frame(buf: &mut [u8], kind: FrameKind, fd_count: u8) {
    let len = (buf.len() - HEADER_LEN) as u32;
    buf[0] = MAGIC;
    buf[1] = kind as u8;
    buf[2] = fd_count;
    buf[3] = 0;
    buf[4..8].copy_from_slice(&len.to_le_bytes());
}

/// Parses and checks a header against the receiver's size limit.
pub(crate) fn parse_header(
    bytes: &[u8; HEADER_LEN],
    max_payload: usize,
) -> Result<Header, RecvError> {
    if bytes[0] != MAGIC || bytes[3] != 0 {
        return Err(RecvError::Malformed(format!(
            "bad frame header {:02x?}",
            &bytes[..4]
        )));
    }
    let kind = match bytes[1] {
        0 => FrameKind::Control,
        1 => FrameKind::User,
        other => return Err(RecvError::Malformed(format!("unknown frame kind {other}"))),
    };
    let fd_count = usize::from(bytes[2]);
    if fd_count > crate::sys::MAX_FDS_PER_MESSAGE {
        return Err(RecvError::Malformed(format!(
            "frame announces {fd_count} descriptors"
        )));
    }
    let payload_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if payload_len > max_payload {
        return Err(RecvError::TooLarge {
            size: payload_len,
            max: max_payload,
        });
    }
    Ok(Header {
        kind,
        fd_count,
        payload_len,
    })
}

/// One complete frame in a buffer.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub header: Header,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Header and payload, in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// What the start of a receive buffer holds.
#[derive(Debug)]
pub(crate) enum Split<'a> {
    /// Not yet a whole frame: `frame_len` bytes are needed (the header's length while the
    /// header itself is incomplete). Never more than the size limit plus the header.
    Incomplete { frame_len: usize },
    /// A whole frame, its header checked.
    Frame(Frame<'a>),
}

/// Finds the frame at the start of `buf`, checking its header against the receiver's limits
/// and, given `fds_queued` (the descriptors that arrived and no frame took yet), its
/// descriptors. Allocates nothing. The [`crate::Receiver`] passes `None` and accounts for
/// descriptors per read itself (`fd_batches.rs`).
///
/// Descriptors arrive with their frame's first byte, and the reader takes every whole frame
/// out before it reads again: so descriptors queued while no frame, or only the start of one,
/// is buffered are that frame's, and any beyond what it announces came with no frame to
/// carry them (they would pile up in the receiver): an error.
pub(crate) fn split(
    buf: &[u8],
    fds_queued: Option<usize>,
    options: ChannelOptions,
) -> Result<Split<'_>, RecvError> {
    let split = split_bytes(buf, options)?;
    let Some(fds_queued) = fds_queued else {
        return Ok(split);
    };
    let unannounced = |announced: usize| {
        RecvError::Malformed(format!(
            "{} descriptors arrived that no frame announced",
            fds_queued - announced
        ))
    };
    match &split {
        Split::Incomplete { .. } if buf.len() < HEADER_LEN => {
            if buf.is_empty() && fds_queued > 0 {
                return Err(unannounced(0));
            }
        }
        Split::Incomplete { .. } => {
            // The header is whole: parsed again for its descriptor count.
            if let Some(header_bytes) = buf.first_chunk::<HEADER_LEN>() {
                let header = parse_header(header_bytes, options.max_message_bytes)?;
                if fds_queued > header.fd_count {
                    return Err(unannounced(header.fd_count));
                }
            }
        }
        Split::Frame(frame) if fds_queued < frame.header.fd_count => {
            return Err(RecvError::Malformed(format!(
                "frame announces {} descriptors, {fds_queued} arrived",
                frame.header.fd_count
            )));
        }
        Split::Frame(_) => {}
    }
    Ok(split)
}

/// The frame at the start of `buf`, its header checked; descriptors not looked at.
fn split_bytes(buf: &[u8], options: ChannelOptions) -> Result<Split<'_>, RecvError> {
    let Some(header_bytes) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Split::Incomplete {
            frame_len: HEADER_LEN,
        });
    };
    let header = parse_header(header_bytes, options.max_message_bytes)?;
    let frame_len = HEADER_LEN + header.payload_len;
    let Some(payload) = buf.get(HEADER_LEN..frame_len) else {
        return Ok(Split::Incomplete { frame_len });
    };
    Ok(Split::Frame(Frame { header, payload }))
}
