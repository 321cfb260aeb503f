//! The binary codec, and the only place that names `bincode`, so it can be swapped.
//!
//! bincode 2.0.1 is pinned: 3.0.0 is a `compile_error!` and RUSTSEC-2025-0141 marks the
//! crate unmaintained (recorded in `deny.toml`). The wire format is bincode's standard
//! configuration (little-endian, variable-length integers).
//!
//! Decoding never trusts a length prefix (see `docs/ARCHITECTURE.md`, "What a peer cannot
//! do"): owned strings and byte buffers are read through the borrowed path, which checks
//! the bytes are present before anything is allocated ([`super::bounded`]), and bincode's
//! own decode limit bounds everything it counts ([`decode_limit`]).

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer};

use super::CodecError;
use super::bounded::Bounded;

/// The most bincode counts against its limit per encoded byte of an honest message: a
/// varint `u128`/`i128` takes one byte and is counted as 16. Strings and byte buffers
/// count their length, integers their width, lengths and enum tags 8 and 4.
const COUNTED_PER_BYTE: usize = 16;

pub(super) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map(drop)
        .map_err(CodecError::binary)
}

/// The decode limit for a payload of `len` bytes: the smallest tier that holds what an
/// honest payload of that length can count (`COUNTED_PER_BYTE` per byte).
pub(super) fn decode_limit(len: usize) -> Option<usize> {
    let counted = len.checked_mul(COUNTED_PER_BYTE)?;
    LIMIT_TIERS.iter().copied().find(|&tier| tier >= counted)
}

/// The tiers of bincode's const-generic limit, 16 times apart (one monomorphised decoder
/// per tier): up to 64 GiB, 16 times the largest payload a frame can announce (4 GiB).
const LIMIT_TIERS: [usize; 7] = [
    1 << 12,
    1 << 16,
    1 << 20,
    1 << 24,
    1 << 28,
    1 << 32,
    1 << 36,
];

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let too_large = || CodecError::binary(format!("a {}-byte payload is too large", bytes.len()));
    let limit = decode_limit(bytes.len()).ok_or_else(too_large)?;
    let standard = bincode::config::standard();
    let (value, read) = match limit {
        l if l == LIMIT_TIERS[0] => decode_with(bytes, standard.with_limit::<{ 1 << 12 }>()),
        l if l == LIMIT_TIERS[1] => decode_with(bytes, standard.with_limit::<{ 1 << 16 }>()),
        l if l == LIMIT_TIERS[2] => decode_with(bytes, standard.with_limit::<{ 1 << 20 }>()),
        l if l == LIMIT_TIERS[3] => decode_with(bytes, standard.with_limit::<{ 1 << 24 }>()),
        l if l == LIMIT_TIERS[4] => decode_with(bytes, standard.with_limit::<{ 1 << 28 }>()),
        l if l == LIMIT_TIERS[5] => decode_with(bytes, standard.with_limit::<{ 1 << 32 }>()),
        _ => decode_with(bytes, standard.with_limit::<{ 1 << 36 }>()),
    }?;
    if read != bytes.len() {
        return Err(CodecError::binary(format!(
            "{} trailing bytes after the value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<(T, usize), CodecError> {
    let seed = BoundedSeed {
        payload_len: bytes.len(),
        value: PhantomData,
    };
    bincode::serde::seed_decode_from_slice(seed, bytes, config).map_err(CodecError::binary)
}

/// Decodes a `T` through [`Bounded`].
struct BoundedSeed<T> {
    payload_len: usize,
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for BoundedSeed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(Bounded::new(deserializer, self.payload_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Control;

    #[test]
    fn the_limit_holds_what_an_honest_payload_counts() {
        assert_eq!(decode_limit(0), Some(1 << 12));
        assert_eq!(decode_limit(256), Some(1 << 12));
        assert_eq!(decode_limit(257), Some(1 << 16));
        assert_eq!(decode_limit(u32::MAX as usize), Some(1 << 36));
        assert_eq!(decode_limit(usize::MAX), None);
    }

    #[test]
    fn varint_heavy_messages_fit_their_limit() {
        // Every u128 takes one byte and counts 16: the worst honest ratio.
        let small: Vec<u128> = vec![1; 100_000];
        let mut bytes = Vec::new();
        encode_into(&small, &mut bytes).expect("encode");
        assert_eq!(decode::<Vec<u128>>(&bytes).expect("decode"), small);

        let strings: Vec<String> = vec![String::new(); 10_000];
        let mut bytes = Vec::new();
        encode_into(&strings, &mut bytes).expect("encode");
        assert_eq!(decode::<Vec<String>>(&bytes).expect("decode"), strings);
    }

    #[test]
    fn every_shape_of_value_still_round_trips() {
        let control = Control::Deliver {
            from_group: Some("web".into()),
            from_pid: 7,
            payload: vec![1, 2, 3],
        };
        let mut bytes = Vec::new();
        encode_into(&control, &mut bytes).expect("encode");
        assert_eq!(decode::<Control>(&bytes).expect("decode"), control);

        type Mixed = (
            std::collections::BTreeMap<String, Option<(char, f64)>>,
            Result<Box<[u8]>, String>,
        );
        let mut map = std::collections::BTreeMap::new();
        map.insert("a".to_string(), Some(('é', 1.5)));
        map.insert("b".to_string(), None);
        let mixed: Mixed = (map, Ok(vec![9; 3].into()));
        let mut bytes = Vec::new();
        encode_into(&mixed, &mut bytes).expect("encode");
        assert_eq!(decode::<Mixed>(&bytes).expect("decode"), mixed);
    }
}
