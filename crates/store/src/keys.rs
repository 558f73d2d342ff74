//! Key layouts. Numbers are big-endian so keys sort in numeric order.

use alloy_primitives::B256;
use rill_protocol::StreamId;

pub(crate) fn stream_prefix(id: &StreamId) -> [u8; 32] {
    id.0
}

pub(crate) fn numbered(id: &StreamId, num: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&id.0);
    key[32..].copy_from_slice(&num.to_be_bytes());
    key
}

/// The length of a candidate's key.
pub(crate) const CANDIDATE_KEY: usize = 72;

pub(crate) fn candidate(id: &StreamId, num: u64, hash: &B256) -> [u8; CANDIDATE_KEY] {
    let mut key = [0u8; CANDIDATE_KEY];
    key[..40].copy_from_slice(&numbered(id, num));
    key[40..].copy_from_slice(hash.as_slice());
    key
}

pub(crate) fn num_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[32..40]);
    u64::from_be_bytes(bytes)
}

/// The key of a stored value's `index`-th part: `prefix ‖ index`.
pub(crate) fn part(prefix: &[u8], index: usize) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&(index as u16).to_be_bytes());
    key
}
