//! Miniblocks: a leader-signed header and its events.
//!
//! A [`ParsedMiniblock`] exists only after its header envelope and every event were opened
//! (hash and signature checked) and the events match the header's `event_hashes` in order.
//! Whether the signer was the elected leader and the events admissible is the engine's check.

use std::collections::HashMap;

use prost::Message as _;

use crate::envelope::{Limits, OpenError, ParsedEvent, Payload, seal};
use crate::hash::{HashTag, framed_hash};
use crate::ids::{Address, Hash};
use crate::keys::NodeKey;
use crate::pb;
use crate::signature::SignerCache;

/// Why a miniblock is not well formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MiniblockError {
    /// The header envelope does not open.
    #[error("miniblock header: {0}")]
    Header(OpenError),
    /// The header envelope does not carry a miniblock header.
    #[error("the header envelope carries no miniblock header")]
    NotAHeader,
    /// An event does not open.
    #[error("miniblock event {index}: {error}")]
    Event {
        /// Its position.
        index: usize,
        /// Why.
        error: OpenError,
    },
    /// The events are not the ones the header names, in that order.
    #[error("the events do not match the header's event hashes")]
    EventsMismatch,
    /// The message has no header.
    #[error("the miniblock has no header")]
    MissingHeader,
    /// An event the sender left out (see [`ParsedMiniblock::open_omitting`]) is not one this
    /// node holds.
    #[error("miniblock event {index} ({hash}) was left out and this node does not hold it")]
    Omitted {
        /// Its position.
        index: usize,
        /// Its hash, as the header names it.
        hash: Hash,
    },
}

/// A miniblock whose header and events have been opened and matched.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedMiniblock {
    header_event: ParsedEvent,
    events: Vec<ParsedEvent>,
}

impl ParsedMiniblock {
    /// Opens a received miniblock.
    pub fn open(miniblock: pb::Miniblock, limits: &Limits) -> Result<Self, MiniblockError> {
        Self::open_events(miniblock, limits, |e| ParsedEvent::open(e, limits))
    }

    /// Opens a received miniblock, reusing events this node already opened: an envelope
    /// byte-identical to `known(hash)` is not verified again (signature recovery is the costly
    /// part of a candidate check, and replicas usually hold its events already), and the others
    /// are recovered through `signers`, so an event that reaches this node again (by gossip,
    /// in a fetched miniblock) is not recovered a second time.
    pub fn open_reusing(
        miniblock: pb::Miniblock,
        limits: &Limits,
        signers: &SignerCache,
        known: impl Fn(&Hash) -> Option<ParsedEvent>,
    ) -> Result<Self, MiniblockError> {
        Self::open_events(miniblock, limits, |e| {
            reuse_or_open(e, limits, signers, &known)
        })
    }

    /// Opens a candidate whose `events` leave out some that this node holds (a leader sends
    /// a replica the events it did not propose): the header names every event, in order, and
    /// each comes from the envelopes sent (opened as [`ParsedMiniblock::open_reusing`] does)
    /// or else from `known`. One from neither is [`MiniblockError::Omitted`]; an envelope sent
    /// under another hash than its own does not open ([`MiniblockError::Event`]).
    pub fn open_omitting(
        miniblock: pb::Miniblock,
        limits: &Limits,
        signers: &SignerCache,
        known: impl Fn(&Hash) -> Option<ParsedEvent>,
    ) -> Result<Self, MiniblockError> {
        let header = miniblock.header.ok_or(MiniblockError::MissingHeader)?;
        let header_event = open_header(header, limits)?;
        let named: Vec<Hash> = header_event
            .miniblock_header()
            .ok_or(MiniblockError::NotAHeader)?
            .event_hashes
            .iter()
            .map(|h| Hash::try_from(h.as_slice()).map_err(|_| MiniblockError::EventsMismatch))
            .collect::<Result<_, _>>()?;
        let mut sent: HashMap<Hash, pb::Envelope> = miniblock
            .events
            .into_iter()
            .filter_map(|e| Some((Hash::try_from(e.hash.as_slice()).ok()?, e)))
            .collect();
        let events = named
            .iter()
            .enumerate()
            .map(|(index, hash)| match sent.remove(hash) {
                Some(e) => reuse_or_open(e, limits, signers, &known)
                    .map_err(|error| MiniblockError::Event { index, error }),
                None => known(hash).ok_or(MiniblockError::Omitted { index, hash: *hash }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_parts(header_event, events)
    }

    fn open_events(
        miniblock: pb::Miniblock,
        limits: &Limits,
        open: impl Fn(pb::Envelope) -> Result<ParsedEvent, OpenError>,
    ) -> Result<Self, MiniblockError> {
        let header = miniblock.header.ok_or(MiniblockError::MissingHeader)?;
        let header_event = open_header(header, limits)?;
        let events = miniblock
            .events
            .into_iter()
            .enumerate()
            .map(|(index, e)| open(e).map_err(|error| MiniblockError::Event { index, error }))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_parts(header_event, events)
    }

    /// Re-opens a miniblock from this node's own store (see [`ParsedEvent::open_stored`]):
    /// hashes and links are checked again, signatures are not recovered again.
    pub fn open_stored(miniblock: pb::Miniblock) -> Result<Self, MiniblockError> {
        let header = miniblock.header.ok_or(MiniblockError::MissingHeader)?;
        let header_event = ParsedEvent::open_stored(header).map_err(MiniblockError::Header)?;
        let events = miniblock
            .events
            .into_iter()
            .enumerate()
            .map(|(index, e)| {
                ParsedEvent::open_stored(e).map_err(|error| MiniblockError::Event { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_parts(header_event, events)
    }

    /// Joins an opened header and opened events.
    pub fn from_parts(
        header_event: ParsedEvent,
        events: Vec<ParsedEvent>,
    ) -> Result<Self, MiniblockError> {
        let header = header_event
            .miniblock_header()
            .ok_or(MiniblockError::NotAHeader)?;
        let matches = header.event_hashes.len() == events.len()
            && header
                .event_hashes
                .iter()
                .zip(&events)
                .all(|(h, e)| h.as_slice() == e.hash().as_slice());
        if !matches {
            return Err(MiniblockError::EventsMismatch);
        }
        Ok(Self {
            header_event,
            events,
        })
    }

    /// Builds and signs a miniblock (the leader's side).
    pub fn seal(
        header: pb::MiniblockHeader,
        events: Vec<ParsedEvent>,
        key: &NodeKey,
    ) -> Result<Self, MiniblockError> {
        // Headers need no salt: (num, prev_hash) already make them unique, and without one the
        // leader's output is deterministic.
        let event = pb::StreamEvent {
            creator: Vec::new(),
            salt: Vec::new(),
            prev_miniblock_hash: Vec::new(),
            prev_miniblock_num: 0,
            created_at_ms: header.timestamp_ms,
            payload: Some(Payload::MiniblockHeader(header)),
        };
        let header_event = seal(event, key).map_err(MiniblockError::Header)?;
        Self::from_parts(header_event, events)
    }

    /// Builds and signs a stream's genesis (miniblock 0): the inception first, then joins.
    /// The node that allocates the stream signs it; `chain_block` is the head it saw.
    pub fn genesis(
        events: Vec<ParsedEvent>,
        timestamp_ms: u64,
        chain_block: u64,
        key: &NodeKey,
    ) -> Result<Self, MiniblockError> {
        let header = pb::MiniblockHeader {
            num: 0,
            prev_hash: Vec::new(),
            timestamp_ms,
            event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
            event_num_offset: 0,
            snapshot: None,
            prev_snapshot_num: 0,
            chain_block,
        };
        Self::seal(header, events, key)
    }

    /// The miniblock hash (its header envelope's hash).
    pub fn hash(&self) -> Hash {
        self.header_event.hash()
    }

    /// The header.
    pub fn header(&self) -> &pb::MiniblockHeader {
        self.header_event
            .miniblock_header()
            .expect("checked at construction")
    }

    /// The miniblock number.
    pub fn num(&self) -> u64 {
        self.header().num
    }

    /// The hash of the previous miniblock (zero for the genesis).
    pub fn prev_hash(&self) -> Hash {
        let prev = &self.header().prev_hash;
        if prev.len() == 32 {
            Hash::from_slice(prev)
        } else {
            Hash::ZERO
        }
    }

    /// Who signed the header.
    pub fn producer(&self) -> Address {
        self.header_event.creator()
    }

    /// The header as an event.
    pub fn header_event(&self) -> &ParsedEvent {
        &self.header_event
    }

    /// The events, in order.
    pub fn events(&self) -> &[ParsedEvent] {
        &self.events
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::Miniblock {
        pb::Miniblock {
            header: Some(self.header_event.envelope().clone()),
            events: self.events.iter().map(|e| e.envelope().clone()).collect(),
        }
    }
}

/// The hash of a snapshot: its encoding under the `SNAPSHOT` tag.
pub fn snapshot_hash(snapshot: &pb::Snapshot) -> Hash {
    framed_hash(HashTag::Snapshot, &snapshot.encode_to_vec())
}

/// Opens a header envelope: headers list up to thousands of hashes, so they get more room
/// than an event.
fn open_header(header: pb::Envelope, limits: &Limits) -> Result<ParsedEvent, MiniblockError> {
    let header_limits = Limits {
        max_event_bytes: limits.max_event_bytes.max(1 << 20),
    };
    ParsedEvent::open(header, &header_limits).map_err(MiniblockError::Header)
}

/// An event of a received miniblock: the `known` one if the envelope is byte-identical to it
/// (not verified again), else opened through `signers`.
fn reuse_or_open(
    e: pb::Envelope,
    limits: &Limits,
    signers: &SignerCache,
    known: &impl Fn(&Hash) -> Option<ParsedEvent>,
) -> Result<ParsedEvent, OpenError> {
    let reuse = (e.hash.len() == 32)
        .then(|| known(&Hash::from_slice(&e.hash)))
        .flatten()
        .filter(|k| *k.envelope() == e);
    match reuse {
        Some(event) => Ok(event),
        None => ParsedEvent::open_cached(e, limits, signers),
    }
}
