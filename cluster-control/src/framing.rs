//! JSON lines: one value per line, `\n`-terminated, at most [`MAX_LINE_BYTES`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The longest line either side accepts (a status of thousands of workers fits).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A line that is not what the protocol says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes is over the {MAX_LINE_BYTES}-byte limit")]
    TooLong(usize),
    /// Not the JSON the protocol expects.
    #[error("not a valid message: {0}")]
    Json(#[from] serde_json::Error),
}

/// `value` as one JSON line, `\n` included.
pub fn encode_line<T: Serialize>(value: &T) -> Result<Vec<u8>, FramingError> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    if line.len() > MAX_LINE_BYTES {
        return Err(FramingError::TooLong(line.len()));
    }
    Ok(line)
}

/// One line (with or without its `\n`) as a `T`.
pub fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, FramingError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(FramingError::TooLong(line.len()));
    }
    Ok(serde_json::from_slice(line.trim_ascii_end())?)
}
