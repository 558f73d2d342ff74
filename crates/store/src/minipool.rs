//! The minipool's layout: rows of entries (each event's hash and envelope, see
//! [`crate::entries`]), in arrival order, under `id ‖ seq`. An addition appends its entries to
//! the stream's last row while that row is small ([`APPEND_BELOW`]), and starts a new row
//! otherwise, so adding a batch of events costs one row write (more for more than a row's
//! worth), and a promotion touches only the rows of the stream's pool (deleting those its
//! miniblock used up, rewriting those it used in part).
//!
//! An older version kept rows of hashes in the `minipool` tree and the envelopes under their
//! hashes in `events`; [`Store::open`] moves such rows here once.

use std::collections::HashSet;

use alloy_primitives::B256;
use rill_protocol::{ParsedEvent, StreamId, pb};
use sled::transaction::TransactionalTree;

use crate::entries;
use crate::gate;
use crate::keys;
use crate::store::{Store, StoreError, TxResult, decode_envelope};

/// An addition appends to the stream's last row while it holds fewer bytes than this, and
/// starts a new row otherwise. Rewriting a small row costs an addition little (a one-event
/// addition took twice as long with rows of up to 8 KiB); a promotion removes one row per
/// this many bytes of events where one-event additions would leave one row each (`cargo
/// bench -p rill-store --bench writes`; BENCHMARKS.md, "Envelopes stored in runs").
const APPEND_BELOW: usize = 2 * 1024;

/// What removing some events from a stream's pool does to its rows: rows left empty are
/// deleted, rows that keep some of their events are rewritten with those.
#[derive(Debug, Default)]
pub(crate) struct PoolRemoval {
    deleted: Vec<sled::IVec>,
    rewritten: Vec<(sled::IVec, Vec<u8>)>,
}

impl PoolRemoval {
    /// How to take `gone` out of these rows.
    pub(crate) fn of_rows(
        rows: Vec<(sled::IVec, sled::IVec)>,
        gone: &HashSet<B256>,
    ) -> Result<Self, StoreError> {
        let mut removal = PoolRemoval::default();
        if gone.is_empty() {
            return Ok(removal);
        }
        for (key, row) in rows {
            let all = entries::decode(&row)?;
            let kept: Vec<u8> = all
                .iter()
                .filter(|e| !gone.contains(&e.hash))
                .flat_map(|e| e.bytes.iter().copied())
                .collect();
            if kept.is_empty() {
                removal.deleted.push(key);
            } else if kept.len() < row.len() {
                removal.rewritten.push((key, kept));
            }
        }
        Ok(removal)
    }

    /// Carries out the removal inside a transaction on the `pool` tree.
    pub(crate) fn apply(&self, pool: &TransactionalTree) -> TxResult<()> {
        for key in &self.deleted {
            pool.remove(key)?;
        }
        for (key, row) in &self.rewritten {
            pool.insert(key, row.as_slice())?;
        }
        Ok(())
    }

    /// Carries out the removal with plain writes, each row on its own (a settlement's step,
    /// see `settle.rs`: cut short, the rest is done when the store opens again).
    pub(crate) fn apply_plain(&self, pool: &sled::Tree) -> Result<(), StoreError> {
        for key in &self.deleted {
            pool.remove(key)?;
        }
        for (key, row) in &self.rewritten {
            pool.insert(key, row.as_slice())?;
        }
        Ok(())
    }
}

impl Store {
    /// The stream's pool rows, in order.
    pub(crate) fn pool_rows(
        &self,
        id: &StreamId,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, StoreError> {
        Ok(self
            .pool
            .scan_prefix(keys::stream_prefix(id))
            .collect::<Result<_, _>>()?)
    }

    /// How to take `gone` out of the stream's pool (read before the transaction: this store
    /// has one writer, so nothing changes the rows in between).
    pub(crate) fn pool_removal(
        &self,
        id: &StreamId,
        gone: &HashSet<B256>,
    ) -> Result<PoolRemoval, StoreError> {
        if gone.is_empty() {
            return Ok(PoolRemoval::default());
        }
        PoolRemoval::of_rows(self.pool_rows(id)?, gone)
    }

    /// Adds events to the stream's minipool, in order: their entries go on the stream's last
    /// row if it is small, on a new row otherwise (one row write, more for an addition of
    /// more than a row's worth). An event named twice is kept once, where it came first
    /// (reads skip later mentions). These are plain inserts rather than a transaction: sled's
    /// transactions read every key they write and take a lock that waits out a flush under
    /// way (`cargo bench -p rill-store --bench writes`). An addition of more than one row
    /// cut short by a crash keeps its first rows: events the node had not acknowledged or
    /// announced yet (both wait for a flush after the whole write).
    pub fn add_to_minipool(&self, id: &StreamId, events: &[ParsedEvent]) -> Result<(), StoreError> {
        let mut seen = HashSet::with_capacity(events.len());
        let fresh: Vec<&ParsedEvent> = events.iter().filter(|e| seen.insert(e.hash())).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let prefix = keys::stream_prefix(id);
        let (first, open) = match self.pool.scan_prefix(prefix).next_back() {
            Some(row) => {
                let (key, value) = row?;
                let seq = keys::num_of(&key);
                if value.len() < APPEND_BELOW {
                    (seq, value.to_vec())
                } else {
                    (seq + 1, Vec::new())
                }
            }
            None => (0, Vec::new()),
        };
        for (row, seq) in entries::pack(open, fresh).into_iter().zip(first..) {
            self.pool.insert(keys::numbered(id, seq).as_slice(), row)?;
        }
        Ok(())
    }

    /// Removes events from the minipool.
    pub fn drop_from_minipool(&self, id: &StreamId, hashes: &[B256]) -> Result<(), StoreError> {
        let gone: HashSet<B256> = hashes.iter().copied().collect();
        let removal = self.pool_removal(id, &gone)?;
        let _gate = gate::transaction();
        self.pool
            .transaction(|pool| -> TxResult<()> { removal.apply(pool) })?;
        Ok(())
    }

    /// The minipool's envelopes, in arrival order: those of promotions still pending (see
    /// `settle.rs`) are promoted, not pooled.
    pub fn minipool(&self, id: &StreamId) -> Result<Vec<pb::Envelope>, StoreError> {
        let mut seen = self.pending_events(id)?;
        let mut out = Vec::new();
        for (_, row) in self.pool_rows(id)? {
            for entry in entries::decode(&row)? {
                if seen.insert(entry.hash) {
                    out.push(decode_envelope(entry.envelope())?);
                }
            }
        }
        Ok(out)
    }

    /// Moves rows of the older layout (hashes in `minipool`, envelopes in `events`) into
    /// `pool`, then drops the old tree. A node stopped half way does it again from the start:
    /// the rows it wrote are written again with the same bytes.
    pub(crate) fn migrate_pool(&self) -> Result<(), StoreError> {
        const OLD: &[u8] = b"minipool";
        let db = &self.db;
        if !db.tree_names().iter().any(|name| name == OLD) {
            return Ok(());
        }
        let old = db.open_tree(OLD)?;
        for row in old.iter() {
            let (key, hashes) = row?;
            if !hashes.len().is_multiple_of(32) {
                return Err(StoreError::Corrupt(
                    "a minipool row of the wrong size".into(),
                ));
            }
            let mut value = Vec::new();
            for hash in hashes.chunks(32).map(B256::from_slice) {
                let envelope = self
                    .events
                    .get(hash)?
                    .ok_or_else(|| StoreError::Corrupt("minipool names a missing event".into()))?;
                entries::push(&mut value, &hash, &envelope);
            }
            self.pool.insert(key, value)?;
        }
        let _gate = gate::flush();
        self.pool.flush()?;
        db.drop_tree(OLD)?;
        Ok(())
    }
}
