//! The store handle.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_protocol::{ParsedEvent, ParsedMiniblock, StreamId, pb};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::entries;
use crate::gap::StoredGap;
use crate::gate::{self, ClosedBehindGate};
use crate::keys;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, IO error, corrupted log).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// Stored bytes do not decode or verify; the data directory is damaged.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The stream is not in the store.
    #[error("stream {0} is not in the store")]
    UnknownStream(StreamId),
    /// A write would break the chain (a promotion out of order).
    #[error("refusing to store: {0}")]
    OutOfOrder(String),
    /// The stream is recorded but has no promoted genesis (a write of an older version was
    /// cut short); remove it and take it again from the registry.
    #[error("stream {0} is recorded without its genesis")]
    Incomplete(StreamId),
}

impl StoreError {
    /// An I/O failure as the disk reports it (fault injection uses it).
    pub fn io(message: &str) -> Self {
        Self::Sled(sled::Error::Io(std::io::Error::other(message.to_owned())))
    }
}

/// A write to the store. Most are a single sled transaction, so a node killed at any point
/// reopens to a state before or after them, never in between. A minipool addition and a
/// stored candidate are plain inserts instead (a transaction costs several times more, see
/// [`Store::add_to_minipool`]), ordered so that what one cut short leaves is harmless: sled
/// recovers a prefix of its log, so a candidate's parts come first and its header, which
/// names them, last. Cut short, a candidate leaves parts nothing names (the next promotion
/// removes them); an addition of more than one row's worth of events may keep its first rows,
/// events the node had not acknowledged or announced yet (both wait for a flush after the
/// whole write).
#[derive(Clone, Debug)]
pub enum Write {
    /// Records a new stream with its nodes and promotes its genesis.
    CreateStream {
        /// The stream.
        stream: StreamId,
        /// Its nodes, in registry order.
        nodes: Vec<Address>,
        /// Its genesis miniblock.
        genesis: ParsedMiniblock,
    },
    /// Adds events to the minipool, in order (idempotent).
    AddToMinipool {
        /// The stream.
        stream: StreamId,
        /// The events.
        events: Vec<ParsedEvent>,
    },
    /// Removes events from the minipool.
    DropFromMinipool {
        /// The stream.
        stream: StreamId,
        /// The events.
        hashes: Vec<B256>,
    },
    /// Stores a candidate beside any other candidates of its number.
    StoreCandidate {
        /// The stream.
        stream: StreamId,
        /// The candidate.
        miniblock: ParsedMiniblock,
        /// Per event of the candidate, whether it is in the stream's minipool: those are read
        /// from the pool's rows, not written again with the candidate. Empty: write every
        /// event with it.
        pooled: Vec<bool>,
    },
    /// Promotes a miniblock that follows the stored head.
    Promote {
        /// The stream.
        stream: StreamId,
        /// The miniblock.
        miniblock: ParsedMiniblock,
    },
    /// Promotes a miniblock that follows the stored head and was stored as a candidate whose
    /// events are all still where it keeps them: the head moves now, the events stay until
    /// [`Store::settle`] (see `settle.rs`). A [`Write::Promote`] if that candidate is not
    /// stored.
    PromoteCandidate {
        /// The stream.
        stream: StreamId,
        /// The miniblock.
        miniblock: ParsedMiniblock,
    },
    /// Takes a run of linked miniblocks ending in a snapshot (a far-behind replica's jump)
    /// as the new head; the miniblocks between the old head and the run are not stored.
    Rebase {
        /// The stream.
        stream: StreamId,
        /// The run, oldest first.
        miniblocks: Vec<ParsedMiniblock>,
        /// What the run skipped.
        gap: StoredGap,
    },
    /// Fills the top of a stream's gap with miniblocks whose links were checked; the head
    /// does not move.
    Backfill {
        /// The stream.
        stream: StreamId,
        /// The miniblocks, oldest first.
        miniblocks: Vec<ParsedMiniblock>,
        /// What is still missing, if anything.
        gap: Option<StoredGap>,
    },
}

/// A stream as stored, re-opened for the engine (see [`Store::load`]).
#[derive(Clone, Debug)]
pub struct StoredStream {
    /// The stream.
    pub id: StreamId,
    /// Its nodes, in registry order.
    pub nodes: Vec<Address>,
    /// Promoted miniblocks in order, ending at the head, from the base (genesis or latest
    /// snapshot) or the start of the recency window, whichever is older.
    pub miniblocks: Vec<ParsedMiniblock>,
    /// The minipool, in arrival order.
    pub minipool: Vec<ParsedEvent>,
    /// The stored candidates.
    pub candidates: Vec<ParsedMiniblock>,
    /// History skipped by a jump to a peer's snapshot, not backfilled yet.
    pub gap: Option<StoredGap>,
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(error: TransactionError<StoreError>) -> Self {
        match error {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// A node's store. Cheap to clone: its clones share one set of trees, closed (and flushed)
/// behind the gate when the last clone is dropped (see `gate.rs`).
#[derive(Clone, Debug)]
pub struct Store {
    trees: Arc<ClosedBehindGate<Trees>>,
    /// How many promotions a stopped node had left pending, settled by [`Store::open`].
    settled_at_open: usize,
}

/// The store's sled trees (what a [`Store`] dereferences to).
#[derive(Debug)]
pub struct Trees {
    pub(crate) db: sled::Db,
    /// Envelopes under their hashes, as an older version stored them: read, never written.
    pub(crate) events: sled::Tree,
    pub(crate) streams: sled::Tree,
    /// Per stream, the minipool's entries in rows, in arrival order.
    pub(crate) pool: sled::Tree,
    pub(crate) candidates: sled::Tree,
    /// Per candidate, the entries of its events that were not in the pool, in parts.
    pub(crate) candidate_bodies: sled::Tree,
    /// Miniblocks' header envelopes.
    pub(crate) miniblocks: sled::Tree,
    /// Per promoted miniblock, its events' entries in order, in parts.
    pub(crate) bodies: sled::Tree,
    /// Promoted miniblocks not settled yet (id ‖ num → the candidate's key): their events
    /// are still in the pool's rows and the candidate's parts (see `settle.rs`).
    pub(crate) pending: sled::Tree,
    pub(crate) heads: sled::Tree,
    /// Per stream: the history a jump skipped, until it is backfilled.
    pub(crate) gaps: sled::Tree,
    pub(crate) meta: sled::Tree,
}

impl std::ops::Deref for Store {
    type Target = Trees;

    fn deref(&self) -> &Trees {
        &self.trees
    }
}

const LAST_BLOCK: &[u8] = b"last_chain_block";

/// How long [`open_sled`] waits for the lock of an instance that is closing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the sled database in `dir`, waiting briefly for the lock of an instance that is
/// closing. sled releases its file lock from background threads shortly after the last handle
/// of a closed instance is dropped: a database reopened right away in the same process (a
/// restarted node, a test reading a stopped node's data) waits for it. Another process holding
/// it still fails, with sled's message.
pub fn open_sled(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            opened => return opened,
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, and settles the promotions a node stopped
    /// before it settled them (see `settle.rs`).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_sled(dir)?;
        // The first layout's per-event index of the minipool; rows say it all now.
        db.drop_tree("minipool_index")?;
        let trees = Trees {
            events: db.open_tree("events")?,
            streams: db.open_tree("streams")?,
            pool: db.open_tree("pool")?,
            candidates: db.open_tree("candidates")?,
            candidate_bodies: db.open_tree("candidate_bodies")?,
            miniblocks: db.open_tree("miniblocks")?,
            bodies: db.open_tree("bodies")?,
            pending: db.open_tree("pending")?,
            heads: db.open_tree("heads")?,
            gaps: db.open_tree("gaps")?,
            meta: db.open_tree("meta")?,
            db,
        };
        let store = Self {
            trees: Arc::new(ClosedBehindGate::new(trees)),
            settled_at_open: 0,
        };
        store.migrate_pool()?;
        let settled_at_open = store.settle_pending()?;
        Ok(Self {
            settled_at_open,
            ..store
        })
    }

    /// How many promotions the last run had left pending (stopped before it settled them),
    /// settled when this store was opened.
    pub fn settled_at_open(&self) -> usize {
        self.settled_at_open
    }

    /// Makes everything written so far durable. Call before acknowledging to a client.
    pub fn flush(&self) -> Result<(), StoreError> {
        let _gate = gate::flush();
        self.db.flush()?;
        Ok(())
    }

    /// Carries out one write.
    pub fn write(&self, write: &Write) -> Result<(), StoreError> {
        match write {
            Write::CreateStream {
                stream,
                nodes,
                genesis,
            } => self.create_stream(stream, nodes, genesis),
            Write::AddToMinipool { stream, events } => self.add_to_minipool(stream, events),
            Write::DropFromMinipool { stream, hashes } => self.drop_from_minipool(stream, hashes),
            Write::StoreCandidate {
                stream,
                miniblock,
                pooled,
            } => self.store_pooled_candidate(stream, miniblock, pooled),
            Write::Promote { stream, miniblock } => self.promote(stream, miniblock),
            Write::PromoteCandidate { stream, miniblock } => {
                self.promote_candidate(stream, miniblock)
            }
            Write::Rebase {
                stream,
                miniblocks,
                gap,
            } => self.rebase(stream, miniblocks, gap),
            Write::Backfill {
                stream,
                miniblocks,
                gap,
            } => self.backfill(stream, miniblocks, gap.as_ref()),
        }
    }

    /// Records a stream's nodes and promotes its genesis, in one write. Refuses a stream that
    /// is already stored or a genesis that is not miniblock 0.
    pub fn create_stream(
        &self,
        id: &StreamId,
        nodes: &[Address],
        genesis: &ParsedMiniblock,
    ) -> Result<(), StoreError> {
        if genesis.num() != 0 {
            return Err(StoreError::OutOfOrder(format!(
                "a genesis is miniblock 0, not {}",
                genesis.num()
            )));
        }
        let record: Vec<u8> = nodes.iter().flat_map(|a| a.0.0).collect();
        let (header, parts) = encode(genesis);
        let mut head_value = 0u64.to_be_bytes().to_vec();
        head_value.extend_from_slice(genesis.hash().as_slice());
        let trees = (&self.streams, &self.bodies, &self.miniblocks, &self.heads);
        let _gate = gate::transaction();
        trees.transaction(|(streams, bodies, miniblocks, heads)| -> TxResult<()> {
            if streams.get(keys::stream_prefix(id))?.is_some() {
                return Err(ConflictableTransactionError::Abort(StoreError::OutOfOrder(
                    format!("stream {id} is already stored"),
                )));
            }
            streams.insert(keys::stream_prefix(id).as_slice(), record.as_slice())?;
            insert_parts(bodies, &keys::numbered(id, 0), &parts)?;
            miniblocks.insert(keys::numbered(id, 0).as_slice(), header.as_slice())?;
            heads.insert(keys::stream_prefix(id).as_slice(), head_value.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Forgets a stream's record and everything stored under it (used to repair a stream an
    /// older version recorded without its genesis).
    pub fn remove_stream(&self, id: &StreamId) -> Result<(), StoreError> {
        let prefix = keys::stream_prefix(id);
        for tree in [
            &self.pool,
            &self.candidates,
            &self.candidate_bodies,
            &self.miniblocks,
            &self.bodies,
            &self.pending,
        ] {
            for key in tree.scan_prefix(prefix).keys() {
                tree.remove(key?)?;
            }
        }
        self.heads.remove(prefix)?;
        self.gaps.remove(prefix)?;
        self.streams.remove(prefix)?;
        Ok(())
    }

    /// The streams in the store.
    pub fn stream_ids(&self) -> Result<Vec<StreamId>, StoreError> {
        self.streams
            .iter()
            .keys()
            .map(|key| {
                let key = key?;
                StreamId::from_slice(&key).ok_or_else(|| StoreError::Corrupt("stream key".into()))
            })
            .collect()
    }

    /// The streams with events in their minipool, stored candidates or history to backfill:
    /// work a restarted node must load them for.
    pub fn streams_with_pending(&self) -> Result<BTreeSet<StreamId>, StoreError> {
        let mut out = BTreeSet::new();
        for tree in [&self.pool, &self.candidates, &self.gaps] {
            let mut key = tree.first()?.map(|(k, _)| k);
            while let Some(k) = key {
                let id = StreamId::from_slice(&k[..32])
                    .ok_or_else(|| StoreError::Corrupt("stream key".into()))?;
                out.insert(id);
                // Skip to the next stream's keys.
                let mut after = id.0.to_vec();
                after.push(0xff);
                after.resize(80, 0xff);
                key = tree.range(after..).next().transpose()?.map(|(k, _)| k);
            }
        }
        Ok(out)
    }

    /// The stream's nodes.
    pub fn nodes(&self, id: &StreamId) -> Result<Vec<Address>, StoreError> {
        let bytes = self
            .streams
            .get(keys::stream_prefix(id))?
            .ok_or(StoreError::UnknownStream(*id))?;
        if bytes.len() % 20 != 0 {
            return Err(StoreError::Corrupt("stream nodes".into()));
        }
        Ok(bytes.chunks(20).map(Address::from_slice).collect())
    }

    /// The promoted head: `(num, hash)`.
    pub fn head(&self, id: &StreamId) -> Result<Option<(u64, B256)>, StoreError> {
        let Some(bytes) = self.heads.get(keys::stream_prefix(id))? else {
            return Ok(None);
        };
        if bytes.len() != 40 {
            return Err(StoreError::Corrupt("head".into()));
        }
        let mut num = [0u8; 8];
        num.copy_from_slice(&bytes[..8]);
        Ok(Some((
            u64::from_be_bytes(num),
            B256::from_slice(&bytes[8..]),
        )))
    }

    /// Stores a candidate beside other candidates: the entries of its events, then its
    /// header. Like a minipool addition (see [`Store::add_to_minipool`]) these are plain
    /// inserts in that order, not a transaction: a node killed in between reopens with parts
    /// nothing names, never with a header whose events are missing.
    pub fn store_candidate(
        &self,
        id: &StreamId,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), StoreError> {
        self.store_pooled_candidate(id, miniblock, &[])
    }

    /// [`Store::store_candidate`], told which of its events are in the stream's minipool
    /// (`pooled[i]` for the `i`-th; missing entries count as not pooled): their envelopes are
    /// in the pool's rows, so only the others are written with the candidate.
    pub fn store_pooled_candidate(
        &self,
        id: &StreamId,
        miniblock: &ParsedMiniblock,
        pooled: &[bool],
    ) -> Result<(), StoreError> {
        let key = keys::candidate(id, miniblock.num(), &miniblock.hash());
        let unpooled = miniblock
            .events()
            .iter()
            .enumerate()
            .filter(|(i, _)| !pooled.get(*i).copied().unwrap_or(false))
            .map(|(_, event)| event);
        for (index, part) in entries::parts(unpooled).into_iter().enumerate() {
            self.candidate_bodies
                .insert(keys::part(&key, index), part)?;
        }
        self.candidates
            .insert(key.as_slice(), encode_header(miniblock))?;
        Ok(())
    }

    /// Promotes a miniblock in one write: stores it and its events, moves the head, removes
    /// its events from the minipool and every candidate up to its number. Refuses a miniblock
    /// that does not follow the stored head.
    pub fn promote(&self, id: &StreamId, miniblock: &ParsedMiniblock) -> Result<(), StoreError> {
        self.check_follows(id, miniblock)?;
        self.take_run(id, std::slice::from_ref(miniblock), None)
    }

    /// Whether `miniblock` follows the stored head.
    pub(crate) fn check_follows(
        &self,
        id: &StreamId,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), StoreError> {
        let head = self.head(id)?;
        let expected = head.map_or(0, |(num, _)| num + 1);
        if miniblock.num() != expected
            || head.is_some_and(|(_, hash)| hash != miniblock.prev_hash())
        {
            return Err(StoreError::OutOfOrder(format!(
                "miniblock {} does not follow the stored head {head:?}",
                miniblock.num()
            )));
        }
        Ok(())
    }

    /// Takes `run` (linked miniblocks, oldest first, checked by the caller) as the stream's
    /// head in one write: stores them and their events, removes those events from the
    /// minipool and every candidate up to the last number, and records `gap` (what a jump
    /// skipped) if there is one.
    pub(crate) fn take_run(
        &self,
        id: &StreamId,
        run: &[ParsedMiniblock],
        gap: Option<&StoredGap>,
    ) -> Result<(), StoreError> {
        let Some(last) = run.last() else {
            return Ok(());
        };
        let written = self.run_write(id, run)?;
        let mut head_value = last.num().to_be_bytes().to_vec();
        head_value.extend_from_slice(last.hash().as_slice());
        let gap = gap.map(StoredGap::encode);
        let trees = (
            &self.bodies,
            &self.pool,
            &self.candidates,
            &self.candidate_bodies,
            &self.miniblocks,
            &self.heads,
            &self.gaps,
        );
        let _gate = gate::transaction();
        trees.transaction(
            |(bodies, pool_rows, candidates, candidate_bodies, miniblocks, heads, gaps)| -> TxResult<()> {
                for (miniblock, (header, _)) in run.iter().zip(&written.encoded) {
                    miniblocks.insert(keys::numbered(id, miniblock.num()).as_slice(), header.as_slice())?;
                }
                written.apply(id, run, bodies, pool_rows, candidates, candidate_bodies)?;
                heads.insert(keys::stream_prefix(id).as_slice(), head_value.as_slice())?;
                if let Some(gap) = &gap {
                    gaps.insert(keys::stream_prefix(id).as_slice(), gap.as_slice())?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Remembers the last chain block processed, to resume the chain monitor after it.
    pub fn set_last_block(&self, number: u64) -> Result<(), StoreError> {
        self.meta.insert(LAST_BLOCK, &number.to_be_bytes())?;
        Ok(())
    }

    /// The last chain block processed.
    pub fn last_block(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.meta.get(LAST_BLOCK)?.map(|v| seq_of_bytes(&v)))
    }
}

/// Writes a miniblock's parts under `key ‖ part` inside a transaction.
pub(crate) fn insert_parts(
    tree: &TransactionalTree,
    key: &[u8],
    parts: &[Vec<u8>],
) -> TxResult<()> {
    for (index, part) in parts.iter().enumerate() {
        tree.insert(keys::part(key, index), part.as_slice())?;
    }
    Ok(())
}

/// A miniblock as it is written: its header envelope and its events' entries in parts.
pub(crate) fn encode(miniblock: &ParsedMiniblock) -> Encoded {
    (encode_header(miniblock), entries::parts(miniblock.events()))
}

/// A miniblock's header envelope as it is written.
pub(crate) fn encode_header(miniblock: &ParsedMiniblock) -> Vec<u8> {
    miniblock.header_event().envelope().encode_to_vec()
}

/// A stored header envelope and the header fields it carries.
pub(crate) fn decode_header(
    bytes: &[u8],
) -> Result<(pb::Envelope, pb::MiniblockHeader), StoreError> {
    let header = decode_envelope(bytes)?;
    let event = pb::StreamEvent::decode(header.event.as_slice())
        .map_err(|e| StoreError::Corrupt(format!("header: {e}")))?;
    let Some(rill_protocol::Payload::MiniblockHeader(fields)) = event.payload else {
        return Err(StoreError::Corrupt("a miniblock without a header".into()));
    };
    Ok((header, fields))
}

/// A miniblock to write: its header envelope and its events' entries in parts.
pub(crate) type Encoded = (Vec<u8>, Vec<Vec<u8>>);

pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<pb::Envelope, StoreError> {
    pb::Envelope::decode(bytes).map_err(|e| StoreError::Corrupt(format!("envelope: {e}")))
}

fn seq_of_bytes(bytes: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    let n = bytes.len().min(8);
    out[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(out)
}
