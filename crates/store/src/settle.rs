//! Promotion in steps, so that no write at a chain block, or after it, holds up the adds
//! queued behind it. Every replica promotes at the same moment, in the burst of work each
//! block brings, and the promotion's whole write (its events copied into its own parts,
//! their pool rows removed, its candidates removed) took 10–20 ms of each replica's writer
//! there (BENCHMARKS.md, "Settling promotions after the block").
//!
//! A replica that promotes a candidate it stored moves the head first
//! ([`Store::promote_candidate`]): the header, the head and a *pending* mark naming the
//! candidate, in one small transaction. The miniblock's events stay where the candidate
//! keeps them, in the pool's rows and the candidate's parts; reads find them there, and
//! reads of the minipool leave them out. Later the node settles it in small steps
//! ([`Store::start_settling`], [`Store::settle_step`]), each a few plain writes that sled
//! makes durable in order:
//! 1. the events are written into the miniblock's own parts, a few parts a step (each
//!    encoded in its step);
//! 2. the mark says so (reads take the parts from then on);
//! 3. the pool's rows give up the miniblock's events, a few rows a step, up to the last row
//!    the pool had when the settlement started;
//! 4. the candidates up to its number go, then the mark.
//!
//! A node stopped on the way settles what is pending when it opens the store again
//! ([`Store::settle_pending`]), from the step its marks show. A candidate a mark names is never
//! removed by another write: its own settlement removes it.

use std::collections::HashSet;
use std::ops::Bound;

use alloy_primitives::B256;
use rill_protocol::{ParsedEvent, ParsedMiniblock, StreamId};
use sled::Transactional;
use sled::transaction::TransactionalTree;

use crate::entries;
use crate::gate;
use crate::keys;
use crate::minipool::PoolRemoval;
use crate::store::{
    Encoded, Store, StoreError, TxResult, decode_header, encode, encode_header, insert_parts,
};

/// The parts a settlement step writes, about 128 KiB.
const PARTS_PER_STEP: usize = 4;
/// The pool rows a settlement step reads, about 128 KiB.
const ROWS_PER_STEP: usize = 64;
/// A mark's last byte once the miniblock's own parts are written.
const PARTS_WRITTEN: u8 = 1;

/// What writing a run of promoted miniblocks' events and removing what they used up takes,
/// read before the transaction that does it (transactions cannot scan; the store has one
/// writer, so nothing changes in between).
pub(crate) struct RunWrite {
    /// Per miniblock: its header envelope and its events' parts.
    pub(crate) encoded: Vec<Encoded>,
    /// The candidates up to the run's last number, and their parts, but those a pending mark
    /// names.
    stale: Vec<sled::IVec>,
    stale_bodies: Vec<sled::IVec>,
    pool: PoolRemoval,
}

impl RunWrite {
    /// Writes the run's events into their parts and removes what they used up, inside a
    /// transaction.
    pub(crate) fn apply(
        &self,
        id: &StreamId,
        run: &[ParsedMiniblock],
        bodies: &TransactionalTree,
        pool: &TransactionalTree,
        candidates: &TransactionalTree,
        candidate_bodies: &TransactionalTree,
    ) -> TxResult<()> {
        for (miniblock, (_, parts)) in run.iter().zip(&self.encoded) {
            insert_parts(bodies, &keys::numbered(id, miniblock.num()), parts)?;
        }
        self.pool.apply(pool)?;
        for key in &self.stale {
            candidates.remove(key)?;
        }
        for key in &self.stale_bodies {
            candidate_bodies.remove(key)?;
        }
        Ok(())
    }
}

impl Store {
    /// What promoting `run` (linked miniblocks, oldest first) whole writes and removes; see
    /// [`RunWrite`].
    pub(crate) fn run_write(
        &self,
        id: &StreamId,
        run: &[ParsedMiniblock],
    ) -> Result<RunWrite, StoreError> {
        let encoded: Vec<Encoded> = run.iter().map(encode).collect();
        let Some(last) = run.last() else {
            return Ok(RunWrite {
                encoded,
                stale: Vec::new(),
                stale_bodies: Vec::new(),
                pool: PoolRemoval::default(),
            });
        };
        let own: Vec<Vec<u8>> = run
            .iter()
            .map(|m| keys::candidate(id, m.num(), &m.hash()).to_vec())
            .collect();
        let (stale, stale_bodies) = self.stale_candidates(id, last.num(), &own)?;
        let included: HashSet<B256> = run
            .iter()
            .flat_map(|m| m.events().iter().map(|e| e.hash()))
            .collect();
        Ok(RunWrite {
            encoded,
            stale,
            stale_bodies,
            pool: self.pool_removal(id, &included)?,
        })
    }

    /// The candidates up to `num`, and their parts (also those a candidate cut short by a
    /// crash left without a header), but those a pending mark names other than `own`.
    fn stale_candidates(
        &self,
        id: &StreamId,
        num: u64,
        own: &[Vec<u8>],
    ) -> Result<(Vec<sled::IVec>, Vec<sled::IVec>), StoreError> {
        let kept: Vec<Vec<u8>> = self
            .pending
            .scan_prefix(keys::stream_prefix(id))
            .values()
            .map(|mark| mark.map(|m| named(&m).to_vec()))
            .filter(|mark| !mark.as_ref().is_ok_and(|m| own.contains(m)))
            .collect::<Result<_, _>>()?;
        let is_kept = |key: &[u8]| kept.iter().any(|k| key.starts_with(k));
        let upto = keys::candidate(id, num, &B256::repeat_byte(0xff)).to_vec();
        let stale: Vec<sled::IVec> = self
            .candidates
            .range(keys::numbered(id, 0).to_vec()..=upto.clone())
            .keys()
            .filter(|key| !key.as_ref().is_ok_and(|k| is_kept(k)))
            .collect::<Result<_, _>>()?;
        let mut parts_end = upto;
        parts_end.extend_from_slice(&[0xff, 0xff]);
        let stale_bodies: Vec<sled::IVec> = self
            .candidate_bodies
            .range(keys::numbered(id, 0).to_vec()..=parts_end)
            .keys()
            .filter(|key| !key.as_ref().is_ok_and(|k| is_kept(k)))
            .collect::<Result<_, _>>()?;
        Ok((stale, stale_bodies))
    }

    /// Promotes a miniblock this node stored as a candidate (see the module's doc): moves the
    /// head and leaves the events where the candidate keeps them until [`Store::settle`].
    /// Without that candidate stored, promotes it whole ([`Store::promote`]). Refuses a
    /// miniblock that does not follow the stored head.
    pub fn promote_candidate(
        &self,
        id: &StreamId,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), StoreError> {
        let candidate = keys::candidate(id, miniblock.num(), &miniblock.hash());
        if !self.candidates.contains_key(candidate)? {
            return self.promote(id, miniblock);
        }
        self.check_follows(id, miniblock)?;
        let key = keys::numbered(id, miniblock.num());
        let header = encode_header(miniblock);
        let mut head_value = miniblock.num().to_be_bytes().to_vec();
        head_value.extend_from_slice(miniblock.hash().as_slice());
        let _gate = gate::transaction();
        (&self.miniblocks, &self.heads, &self.pending).transaction(
            |(miniblocks, heads, pending)| -> TxResult<()> {
                miniblocks.insert(key.as_slice(), header.as_slice())?;
                heads.insert(keys::stream_prefix(id).as_slice(), head_value.as_slice())?;
                pending.insert(key.as_slice(), candidate.as_slice())?;
                Ok(())
            },
        )?;
        Ok(())
    }

    /// A settlement of the promotion of `miniblock` that [`Store::promote_candidate`] left
    /// pending, from the step its mark shows; `None` if it is not pending (settled already,
    /// promoted whole, or its stream removed, perhaps taken again since and another
    /// miniblock pending at that number). Carry it out with [`Store::settle_step`].
    pub fn start_settling(
        &self,
        id: &StreamId,
        miniblock: &ParsedMiniblock,
    ) -> Result<Option<Settling>, StoreError> {
        let key = keys::numbered(id, miniblock.num());
        let candidate = keys::candidate(id, miniblock.num(), &miniblock.hash());
        let Some(mark) = self.pending.get(key)? else {
            return Ok(None);
        };
        if named(&mark) != candidate.as_slice() {
            return Ok(None);
        }
        let written = mark.len() > candidate.len();
        let pool_end = match self
            .pool
            .scan_prefix(keys::stream_prefix(id))
            .keys()
            .next_back()
        {
            Some(key) => Some(key?),
            None => None,
        };
        Ok(Some(Settling {
            id: *id,
            num: miniblock.num(),
            candidate,
            events: if written {
                Vec::new()
            } else {
                miniblock.events().to_vec()
            },
            included: miniblock.events().iter().map(|e| e.hash()).collect(),
            pool_end,
            step: if written {
                Step::Pool { after: None }
            } else {
                Step::Parts { part: 0, event: 0 }
            },
        }))
    }

    /// Takes the next step of `settling` (a few plain writes); whether it is done.
    pub fn settle_step(&self, settling: &mut Settling) -> Result<bool, StoreError> {
        let key = keys::numbered(&settling.id, settling.num);
        match settling.step {
            Step::Parts {
                mut part,
                mut event,
            } => {
                for _ in 0..PARTS_PER_STEP {
                    if event == settling.events.len() {
                        break;
                    }
                    let (value, next) = entries::part_from(&settling.events, event);
                    self.bodies.insert(keys::part(&key, part), value)?;
                    (part, event) = (part + 1, next);
                }
                settling.step = if event == settling.events.len() {
                    Step::Written
                } else {
                    Step::Parts { part, event }
                };
            }
            Step::Written => {
                let mut mark = settling.candidate.to_vec();
                mark.push(PARTS_WRITTEN);
                self.pending.insert(key.as_slice(), mark)?;
                settling.events = Vec::new();
                settling.step = Step::Pool { after: None };
            }
            Step::Pool { ref after } => {
                let Some(end) = settling.pool_end.as_ref() else {
                    settling.step = Step::Candidates;
                    return Ok(false);
                };
                let prefix = keys::stream_prefix(&settling.id);
                let from = match after {
                    Some(after) => Bound::Excluded(after.as_ref()),
                    None => Bound::Included(prefix.as_slice()),
                };
                let rows: Vec<(sled::IVec, sled::IVec)> = self
                    .pool
                    .range::<&[u8], _>((from, Bound::Included(end.as_ref())))
                    .take(ROWS_PER_STEP)
                    .collect::<Result<_, _>>()?;
                let last = rows
                    .last()
                    .map(|(key, _)| key.clone())
                    .filter(|last| last != end);
                let removal = PoolRemoval::of_rows(rows, &settling.included)?;
                removal.apply_plain(&self.pool)?;
                settling.step = match last {
                    Some(last) => Step::Pool { after: Some(last) },
                    None => Step::Candidates,
                };
            }
            Step::Candidates => {
                let (stale, stale_bodies) = self.stale_candidates(
                    &settling.id,
                    settling.num,
                    &[settling.candidate.to_vec()],
                )?;
                for key in &stale {
                    self.candidates.remove(key)?;
                }
                for key in &stale_bodies {
                    self.candidate_bodies.remove(key)?;
                }
                self.pending.remove(key)?;
                settling.step = Step::Done;
            }
            Step::Done => {}
        }
        Ok(settling.step == Step::Done)
    }

    /// Settles a pending promotion in one go (every step of [`Store::settle_step`]); nothing
    /// to do if it is not pending.
    pub fn settle(&self, id: &StreamId, miniblock: &ParsedMiniblock) -> Result<(), StoreError> {
        if let Some(mut settling) = self.start_settling(id, miniblock)? {
            while !self.settle_step(&mut settling)? {}
        }
        Ok(())
    }

    /// Settles every pending promotion, oldest first per stream, from what the store holds:
    /// after a node was stopped before it settled them. Returns how many there were.
    pub fn settle_pending(&self) -> Result<usize, StoreError> {
        let marks: Vec<sled::IVec> = self.pending.iter().keys().collect::<Result<_, _>>()?;
        for key in &marks {
            let id = StreamId(key[..32].try_into().map_err(|_| {
                StoreError::Corrupt("a pending promotion's key of the wrong size".into())
            })?);
            let header = self.miniblocks.get(key)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "pending miniblock {} of stream {id} has no header",
                    keys::num_of(key)
                ))
            })?;
            let miniblock = ParsedMiniblock::open_stored(self.assemble(&id, &header)?)
                .map_err(|e| StoreError::Corrupt(format!("pending miniblock: {e}")))?;
            self.settle(&id, &miniblock)?;
        }
        Ok(marks.len())
    }

    /// How many promotions wait to be settled.
    pub fn pending_promotions(&self) -> Result<usize, StoreError> {
        Ok(self.pending.len())
    }

    /// The candidate whose parts (and the pool's rows) hold the events of promoted miniblock
    /// `key`, while its promotion is pending.
    pub(crate) fn pending_candidate(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self
            .pending
            .get(key)?
            .filter(|mark| mark.len() == keys::CANDIDATE_KEY))
    }

    /// The events of the stream's pending promotions: in the pool's rows still, no longer in
    /// its minipool.
    pub(crate) fn pending_events(&self, id: &StreamId) -> Result<HashSet<B256>, StoreError> {
        let mut out = HashSet::new();
        for key in self.pending.scan_prefix(keys::stream_prefix(id)).keys() {
            let Some(header) = self.miniblocks.get(key?)? else {
                continue;
            };
            let (_, fields) = decode_header(&header)?;
            out.extend(
                fields
                    .event_hashes
                    .iter()
                    .filter_map(|h| B256::try_from(h.as_slice()).ok()),
            );
        }
        Ok(out)
    }

    /// Whether a pending mark names the candidate under `key`.
    pub(crate) fn is_pending_candidate(&self, id: &StreamId, key: &[u8]) -> bool {
        self.pending
            .scan_prefix(keys::stream_prefix(id))
            .values()
            .any(|mark| mark.is_ok_and(|m| named(&m) == key))
    }
}

/// A settlement under way (see the module's doc); carried out by [`Store::settle_step`].
#[derive(Debug)]
pub struct Settling {
    id: StreamId,
    num: u64,
    candidate: [u8; keys::CANDIDATE_KEY],
    /// The miniblock's events, until their parts are written (each step encodes its own).
    events: Vec<ParsedEvent>,
    included: HashSet<B256>,
    /// The stream's last pool row when the settlement started. The miniblock's events were
    /// pooled before its promotion, so no row after it holds one (and the rows are not
    /// numbered again while the pool keeps any).
    pool_end: Option<sled::IVec>,
    step: Step,
}

/// The next step of a settlement.
#[derive(Debug, PartialEq)]
enum Step {
    /// Write the parts from this one on, the first holding this event on.
    Parts {
        part: usize,
        event: usize,
    },
    /// Mark the parts written.
    Written,
    /// Take the events out of the pool rows after this key.
    Pool {
        after: Option<sled::IVec>,
    },
    /// Remove the candidates up to the number, then the mark.
    Candidates,
    Done,
}

/// The candidate's key in a mark (whose last byte, if it has one more, says the miniblock's
/// own parts are written).
fn named(mark: &[u8]) -> &[u8] {
    &mark[..mark.len().min(keys::CANDIDATE_KEY)]
}
