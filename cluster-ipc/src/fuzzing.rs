//! The receiver's decode path fed from a byte slice instead of a socket, for the fuzz target
//! (`cluster-ipc/fuzz`) and the decoder's property test. Not part of the API.

use crate::channel::{ChannelOptions, Incoming, decode_frame};
use crate::error::RecvError;
use crate::frame::{self, Split};

/// Decodes every frame in `bytes` as a [`Receiver`](crate::Receiver) with `options` would,
/// as if `fds_arrived` descriptors had come with them (control messages get none attached
/// here). Returns the messages, or the error that would end the channel; bytes left over
/// that are no whole frame are an error too (the channel would wait for the rest), and so
/// are descriptors left over.
pub fn decode_frames(
    mut bytes: &[u8],
    mut fds_arrived: usize,
    options: ChannelOptions,
) -> Result<Vec<Incoming>, RecvError> {
    let mut messages = Vec::new();
    loop {
        if bytes.is_empty() {
            // What the receiver checks before it reads again.
            frame::split(bytes, Some(fds_arrived), options)?;
            return Ok(messages);
        }
        let frame = match frame::split(bytes, Some(fds_arrived), options)? {
            Split::Frame(frame) => frame,
            Split::Incomplete { frame_len } => {
                return Err(RecvError::Malformed(format!(
                    "{} bytes of a {frame_len}-byte frame",
                    bytes.len()
                )));
            }
        };
        fds_arrived -= frame.header.fd_count;
        messages.push(decode_frame(&frame, options.serialization, Vec::new(), 0)?);
        bytes = &bytes[frame.len()..];
    }
}
