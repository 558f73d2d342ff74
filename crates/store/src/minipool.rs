//! The minipool's layout: rows of hashes, not a row per event. A row (`id ‖ seq`) holds
//! hashes in arrival order; the envelopes themselves are in `events`, written once. An
//! addition appends its hashes to the stream's last row while that row is small
//! ([`APPEND_BELOW`]), and starts a new row otherwise, so adding a batch of events costs one
//! row write plus the envelopes, and a promotion touches only the rows of the stream's pool
//! (deleting those its miniblock used up, rewriting those it used in part): a few dozen rows
//! per thousand events even when clients add them one at a time.
//!
//! A row of the first layout (one hash per row) is a row of one hash, so older data loads as
//! it is.

use std::collections::HashSet;

use alloy_primitives::B256;
use prost::Message as _;
use rill_protocol::{ParsedEvent, StreamId, pb};
use sled::Transactional;
use sled::transaction::TransactionalTree;

use crate::keys;
use crate::store::{Store, StoreError, TxResult, decode_envelope};

/// At most this many hashes in one row (32 KiB), far below sled's blob threshold: a larger
/// addition takes several rows.
const ROW_HASHES: usize = 1024;
/// An addition appends to the stream's last row while it holds fewer hashes than this (1 KiB),
/// and starts a new row otherwise. Rewriting a small row costs an addition little; a
/// promotion removes one row per this many events where one-event additions used to leave
/// one row each (`cargo bench -p rill-store --bench writes`; BENCHMARKS.md, "The writes at
/// each block").
const APPEND_BELOW: usize = 32;

/// A row's hashes.
fn decode(row: &[u8]) -> Result<Vec<B256>, StoreError> {
    if !row.len().is_multiple_of(32) {
        return Err(StoreError::Corrupt(
            "a minipool row of the wrong size".into(),
        ));
    }
    Ok(row.chunks(32).map(B256::from_slice).collect())
}

fn encode(hashes: &[B256]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// What removing some events from a stream's pool does to its rows: rows left empty are
/// deleted, rows that keep some of their events are rewritten with those.
#[derive(Debug, Default)]
pub(crate) struct PoolRemoval {
    deleted: Vec<sled::IVec>,
    rewritten: Vec<(sled::IVec, Vec<u8>)>,
}

impl PoolRemoval {
    /// Carries out the removal inside a transaction on the `minipool` tree.
    pub(crate) fn apply(&self, minipool: &TransactionalTree) -> TxResult<()> {
        for key in &self.deleted {
            minipool.remove(key)?;
        }
        for (key, row) in &self.rewritten {
            minipool.insert(key, row.as_slice())?;
        }
        Ok(())
    }
}

impl Store {
    /// The stream's pool rows, in order.
    fn pool_rows(&self, id: &StreamId) -> Result<Vec<(sled::IVec, Vec<B256>)>, StoreError> {
        self.minipool
            .scan_prefix(keys::stream_prefix(id))
            .map(|row| {
                let (key, value) = row?;
                Ok((key, decode(&value)?))
            })
            .collect()
    }

    /// How to take `gone` out of the stream's pool (read before the transaction: this store
    /// has one writer, so nothing changes the rows in between).
    pub(crate) fn pool_removal(
        &self,
        id: &StreamId,
        gone: &HashSet<B256>,
    ) -> Result<PoolRemoval, StoreError> {
        let mut removal = PoolRemoval::default();
        if gone.is_empty() {
            return Ok(removal);
        }
        for (key, hashes) in self.pool_rows(id)? {
            let kept: Vec<B256> = hashes
                .iter()
                .filter(|h| !gone.contains(*h))
                .copied()
                .collect();
            if kept.is_empty() {
                removal.deleted.push(key);
            } else if kept.len() < hashes.len() {
                removal.rewritten.push((key, encode(&kept)));
            }
        }
        Ok(removal)
    }

    /// Adds events to the stream's minipool, in order: their envelopes, then their hashes, on
    /// the stream's last row if it is small, on a new row otherwise (one row write, more for
    /// an addition of more than a row's worth). An event named twice is kept once, where it
    /// came first (reads skip later mentions). Events entering a minipool are new to this
    /// node, so their envelopes are written without looking first, and as plain inserts
    /// rather than a transaction: sled's transactions read every key they write and take a
    /// lock that waits out a flush under way (`cargo bench -p rill-store --bench writes`: a
    /// one-event addition while flushes run costs 4–5 times less this way). The row goes
    /// after the envelopes in the log, so a node killed in between reopens with some
    /// envelopes and the row as it was: envelopes nothing names, which no read reaches (reads
    /// go through rows and headers) and which the event's next arrival writes again.
    pub fn add_to_minipool(&self, id: &StreamId, events: &[ParsedEvent]) -> Result<(), StoreError> {
        let mut seen = HashSet::with_capacity(events.len());
        let mut hashes = Vec::with_capacity(events.len());
        let mut envelopes = Vec::with_capacity(events.len());
        for event in events {
            let hash = event.hash();
            if seen.insert(hash) {
                hashes.push(hash);
                envelopes.push((hash, event.envelope().encode_to_vec()));
            }
        }
        if hashes.is_empty() {
            return Ok(());
        }
        let prefix = keys::stream_prefix(id);
        let (first, mut open) = match self.minipool.scan_prefix(prefix).next_back() {
            Some(row) => {
                let (key, value) = row?;
                let seq = keys::num_of(&key);
                if value.len() < APPEND_BELOW * 32 {
                    (seq, decode(&value)?)
                } else {
                    (seq + 1, Vec::new())
                }
            }
            None => (0, Vec::new()),
        };
        let room = ROW_HASHES.saturating_sub(open.len()).min(hashes.len());
        open.extend_from_slice(&hashes[..room]);
        let rows: Vec<([u8; 40], Vec<u8>)> = std::iter::once(open.as_slice())
            .chain(hashes[room..].chunks(ROW_HASHES))
            .zip(first..)
            .map(|(chunk, seq)| (keys::numbered(id, seq), encode(chunk)))
            .collect();
        for (hash, envelope) in envelopes {
            self.events.insert(hash.as_slice(), envelope)?;
        }
        for (key, row) in rows {
            self.minipool.insert(key.as_slice(), row)?;
        }
        Ok(())
    }

    /// Removes events from the minipool, and their envelopes.
    pub fn drop_from_minipool(&self, id: &StreamId, hashes: &[B256]) -> Result<(), StoreError> {
        let gone: HashSet<B256> = hashes.iter().copied().collect();
        let removal = self.pool_removal(id, &gone)?;
        (&self.events, &self.minipool).transaction(|(events, minipool)| -> TxResult<()> {
            removal.apply(minipool)?;
            for hash in &gone {
                events.remove(hash.as_slice())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The minipool's envelopes, in arrival order.
    pub fn minipool(&self, id: &StreamId) -> Result<Vec<pb::Envelope>, StoreError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (_, hashes) in self.pool_rows(id)? {
            for hash in hashes {
                if !seen.insert(hash) {
                    continue;
                }
                let bytes = self
                    .events
                    .get(hash)?
                    .ok_or_else(|| StoreError::Corrupt("minipool names a missing event".into()))?;
                out.push(decode_envelope(&bytes)?);
            }
        }
        Ok(out)
    }
}
