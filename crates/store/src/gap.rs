//! A replica's jump to a peer's snapshot: the run it takes as its new head, the gap it leaves,
//! and the backfill that closes the gap.

use alloy_primitives::B256;
use rill_protocol::{ParsedMiniblock, StreamId};
use sled::Transactional;

use crate::gate;
use crate::keys;
use crate::store::{Store, StoreError, TxResult, encode, insert_parts};

/// Miniblocks a stream skipped when its replica jumped to a peer's snapshot: `down_to..below`
/// are missing, and miniblock `below - 1` must hash to `hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredGap {
    /// The first missing number.
    pub down_to: u64,
    /// The first number held above the gap.
    pub below: u64,
    /// The hash miniblock `below - 1` must have.
    pub hash: B256,
}

impl StoredGap {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = self.down_to.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.below.to_be_bytes());
        bytes.extend_from_slice(self.hash.as_slice());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != 48 {
            return Err(StoreError::Corrupt("a gap record of the wrong size".into()));
        }
        let num = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Self {
            down_to: num(0),
            below: num(8),
            hash: B256::from_slice(&bytes[16..]),
        })
    }
}

impl Store {
    /// Takes `run` (linked miniblocks, oldest first, past the stored head) as the stream's
    /// new head in one write: stores them and their events, removes those events from the
    /// minipool and every candidate up to the last number. Miniblocks between the old head
    /// and the run stay absent: reads stop at the gap.
    pub fn rebase(
        &self,
        id: &StreamId,
        run: &[ParsedMiniblock],
        gap: &StoredGap,
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        let head = self.head(id)?;
        let linked = run
            .windows(2)
            .all(|w| w[1].num() == w[0].num() + 1 && w[1].prev_hash() == w[0].hash());
        if !linked || head.is_some_and(|(num, _)| first.num() <= num) {
            return Err(StoreError::OutOfOrder(format!(
                "a run {}..={} that is not linked or not past the stored head {head:?}",
                first.num(),
                last.num()
            )));
        }
        self.take_run(id, run, Some(gap))
    }

    /// Fills the top of the stream's gap with `miniblocks` (oldest first, each the parent of
    /// the next, the last the parent of the gap's top) and records what is still missing.
    /// Refuses miniblocks that do not close the top of the recorded gap.
    pub fn backfill(
        &self,
        id: &StreamId,
        miniblocks: &[ParsedMiniblock],
        rest: Option<&StoredGap>,
    ) -> Result<(), StoreError> {
        let gap = self.gap(id)?;
        let fits = gap.is_some_and(|gap| {
            miniblocks.last().is_some_and(|m| {
                m.num() + 1 == gap.below && m.hash() == gap.hash && m.num() >= gap.down_to
            }) && miniblocks
                .windows(2)
                .all(|w| w[1].num() == w[0].num() + 1 && w[1].prev_hash() == w[0].hash())
        });
        if !fits {
            return Err(StoreError::OutOfOrder(format!(
                "backfill of stream {id} does not close the top of its gap {gap:?}"
            )));
        }
        let encoded: Vec<_> = miniblocks.iter().map(|m| (m.num(), encode(m))).collect();
        let rest = rest.map(StoredGap::encode);
        let _gate = gate::transaction();
        (&self.bodies, &self.miniblocks, &self.gaps).transaction(
            |(bodies, stored, gaps)| -> TxResult<()> {
                for (num, (header, parts)) in &encoded {
                    let key = keys::numbered(id, *num);
                    insert_parts(bodies, &key, parts)?;
                    stored.insert(key.as_slice(), header.as_slice())?;
                }
                match &rest {
                    Some(rest) => {
                        gaps.insert(keys::stream_prefix(id).as_slice(), rest.as_slice())?
                    }
                    None => gaps.remove(keys::stream_prefix(id).as_slice())?,
                };
                Ok(())
            },
        )?;
        Ok(())
    }

    /// The history the stream's replica skipped and has not backfilled yet.
    pub fn gap(&self, id: &StreamId) -> Result<Option<StoredGap>, StoreError> {
        self.gaps
            .get(keys::stream_prefix(id))?
            .map(|bytes| StoredGap::decode(&bytes))
            .transpose()
    }
}
