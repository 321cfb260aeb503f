//! The binary codec, and the only place that names `bincode`, so it can be swapped.
//!
//! bincode 2.0.1 is pinned: 3.0.0 is a `compile_error!` and RUSTSEC-2025-0141 marks the
//! crate unmaintained (recorded in `deny.toml`). The wire format is bincode's standard
//! configuration (little-endian, variable-length integers).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CodecError;

pub(super) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map(drop)
        .map_err(CodecError::binary)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(CodecError::binary)?;
    if read != bytes.len() {
        return Err(CodecError::binary(format!(
            "{} trailing bytes after the value",
            bytes.len() - read
        )));
    }
    Ok(value)
}
