//! Envelopes stored together: a pool row, a promoted miniblock's parts and a candidate's parts
//! are each a run of entries `hash ‖ length ‖ envelope`, so a write of many events is one sled
//! insert (or a few) instead of one per event (BENCHMARKS.md, "Envelopes stored in runs, not
//! one key per event").

use alloy_primitives::B256;
use prost::Message as _;
use rill_protocol::ParsedEvent;

use crate::store::StoreError;

/// A value holds at most this many bytes of entries (unless one entry is larger): far below
/// sled's blob threshold, so every value stays inline in its tree.
pub(crate) const PART_BYTES: usize = 32 * 1024;

/// Appends an event's entry to `out`.
pub(crate) fn push(out: &mut Vec<u8>, hash: &B256, envelope: &[u8]) {
    out.extend_from_slice(hash.as_slice());
    out.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
    out.extend_from_slice(envelope);
}

/// One event's entry.
pub(crate) fn entry(event: &ParsedEvent) -> Vec<u8> {
    let envelope = event.envelope().encode_to_vec();
    let mut out = Vec::with_capacity(36 + envelope.len());
    push(&mut out, &event.hash(), &envelope);
    out
}

/// A value's entries, in order.
pub(crate) fn decode(value: &[u8]) -> Result<Vec<Entry<'_>>, StoreError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < value.len() {
        let corrupt = || StoreError::Corrupt("a truncated envelope entry".into());
        let head = value.get(at..at + 36).ok_or_else(corrupt)?;
        let len = u32::from_be_bytes(head[32..36].try_into().expect("4 bytes")) as usize;
        let end = at + 36 + len;
        let bytes = value.get(at..end).ok_or_else(corrupt)?;
        out.push(Entry {
            hash: B256::from_slice(&head[..32]),
            bytes,
        });
        at = end;
    }
    Ok(out)
}

/// One stored event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) hash: B256,
    /// The whole entry: hash, length and envelope.
    pub(crate) bytes: &'a [u8],
}

impl<'a> Entry<'a> {
    pub(crate) fn envelope(&self) -> &'a [u8] {
        &self.bytes[36..]
    }
}

/// The value of entries that starts at `events[from]`: as many as fit in [`PART_BYTES`] (at
/// least one, if any is left), packed as [`parts`] packs them; and the index of the first
/// event it leaves for the next value. A settlement writes a miniblock's parts a few at a
/// time, and encodes each only then.
pub(crate) fn part_from(events: &[ParsedEvent], from: usize) -> (Vec<u8>, usize) {
    let mut part = Vec::new();
    let mut at = from;
    while let Some(event) = events.get(at) {
        let size = 36 + event.envelope().encoded_len();
        if !part.is_empty() && part.len() + size > PART_BYTES {
            break;
        }
        part.extend_from_slice(&entry(event));
        at += 1;
    }
    (part, at)
}

/// Events' entries in values of at most [`PART_BYTES`] (a larger entry takes a value of its
/// own); no value when there are no events.
pub(crate) fn parts<'a>(events: impl IntoIterator<Item = &'a ParsedEvent>) -> Vec<Vec<u8>> {
    pack(Vec::new(), events)
}

/// [`parts`], the first of them continuing `open` (a value of entries written already) while
/// it has room.
pub(crate) fn pack<'a>(
    open: Vec<u8>,
    events: impl IntoIterator<Item = &'a ParsedEvent>,
) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if !open.is_empty() {
        parts.push(open);
    }
    for event in events {
        let entry = entry(event);
        match parts.last_mut() {
            Some(part) if part.len() + entry.len() <= PART_BYTES => part.extend_from_slice(&entry),
            _ => parts.push(entry),
        }
    }
    parts
}
