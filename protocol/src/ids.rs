//! Identifiers: stream ids, hashes and addresses.

use std::fmt;
use std::str::FromStr;

/// A 20-byte Ethereum address: a node's or a client's identity.
pub use alloy_primitives::Address;
/// A 32-byte keccak hash: of an event, a miniblock (its header envelope) or a snapshot.
pub use alloy_primitives::B256 as Hash;

/// A stream's 32-byte id, chosen by its creator (random by default).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId(pub [u8; 32]);

impl StreamId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The id from exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form: enough to follow one stream through the logs.
        write!(f, "StreamId(0x{}…)", hex::encode(&self.0[..6]))
    }
}

/// The text was not a 32-byte hex stream id.
#[derive(Debug, thiserror::Error)]
#[error("a stream id is 32 bytes written as 64 hex digits, optionally prefixed by 0x")]
pub struct ParseStreamIdError;

impl FromStr for StreamId {
    type Err = ParseStreamIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(digits).map_err(|_| ParseStreamIdError)?;
        Self::from_slice(&bytes).ok_or(ParseStreamIdError)
    }
}

impl From<alloy_primitives::B256> for StreamId {
    fn from(value: alloy_primitives::B256) -> Self {
        Self(value.0)
    }
}

impl From<StreamId> for alloy_primitives::B256 {
    fn from(value: StreamId) -> Self {
        Self(value.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_round_trips_through_text() {
        let id = StreamId::random();
        assert_eq!(id.to_string().parse::<StreamId>().ok(), Some(id));
        assert!("0x1234".parse::<StreamId>().is_err());
        assert!("zz".repeat(32).parse::<StreamId>().is_err());
    }
}
