//! How message payloads are encoded: JSON (readable in logs) or binary (compact).

mod binary;
mod bounded;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The encoding of every message on a cluster's channels, chosen once per cluster
/// (Node's `serialization` option).
///
/// ```
/// use cluster_ipc::Serialization;
/// assert_eq!("binary".parse::<Serialization>(), Ok(Serialization::Binary));
/// assert_eq!(Serialization::default().as_str(), "json");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Serialization {
    /// `serde_json`: self-describing and readable; any JSON value can be decoded.
    #[default]
    Json,
    /// `bincode` 2 (standard configuration): smaller and faster; sender and receiver must
    /// agree on the type.
    Binary,
}

impl Serialization {
    /// The name used in settings and in the worker's environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Serialization::Json => "json",
            Serialization::Binary => "binary",
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub(crate) fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            Serialization::Json => serde_json::to_writer(out, value).map_err(CodecError::json),
            Serialization::Binary => binary::encode_into(value, out),
        }
    }

    /// Encodes `value` on its own (to be carried inside another message).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Decodes one whole value from `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            Serialization::Json => serde_json::from_slice(bytes).map_err(CodecError::json),
            Serialization::Binary => binary::decode(bytes),
        }
    }

    /// Checks what can be checked without knowing the type: for JSON, that `bytes` is one
    /// well-formed JSON value. Binary payloads are not self-describing and always pass.
    pub(crate) fn validate(self, bytes: &[u8]) -> Result<(), CodecError> {
        match self {
            Serialization::Json => serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                .map(drop)
                .map_err(CodecError::json),
            Serialization::Binary => Ok(()),
        }
    }
}

impl std::fmt::Display for Serialization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Serialization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Serialization::Json),
            "binary" | "bincode" => Ok(Serialization::Binary),
            other => Err(format!(
                "unknown serialization {other:?} (expected \"json\" or \"binary\")"
            )),
        }
    }
}

/// A value that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{encoding}: {message}")]
pub struct CodecError {
    encoding: &'static str,
    message: String,
}

impl CodecError {
    fn json(e: serde_json::Error) -> Self {
        CodecError {
            encoding: "json",
            message: e.to_string(),
        }
    }

    pub(crate) fn binary(message: impl std::fmt::Display) -> Self {
        CodecError {
            encoding: "binary",
            message: message.to_string(),
        }
    }
}
