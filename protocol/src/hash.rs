//! The hash framing of the production network:
//! `keccak256(tag ‖ u64_le(len(bytes)) ‖ "ABCDEFG>" ‖ bytes ‖ "<GFEDCBA")`.

use alloy_primitives::{B256, Keccak256};

/// What is being hashed; each kind has its own 8-byte ASCII tag so an event can never be
/// mistaken for a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashTag {
    /// Events, including miniblock headers: `CSBLANCA`.
    Event,
    /// Snapshots: `SNAPSHOT`.
    Snapshot,
}

impl HashTag {
    /// The 8 tag bytes.
    pub const fn bytes(self) -> &'static [u8; 8] {
        match self {
            HashTag::Event => b"CSBLANCA",
            HashTag::Snapshot => b"SNAPSHOT",
        }
    }
}

const HEADER: &[u8; 8] = b"ABCDEFG>";
const FOOTER: &[u8; 8] = b"<GFEDCBA";

/// Hashes `bytes`, exactly as given, under `tag`.
pub fn framed_hash(tag: HashTag, bytes: &[u8]) -> B256 {
    let mut hasher = Keccak256::new();
    hasher.update(tag.bytes());
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(HEADER);
    hasher.update(bytes);
    hasher.update(FOOTER);
    hasher.finalize()
}
