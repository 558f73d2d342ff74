//! One stream's state: its promoted chain (as far as rules need it), its members, its minipool,
//! and the admission rules.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, Payload, StreamId, pb};

use crate::Reject;

/// The head of a stream's promoted chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its number.
    pub num: u64,
    /// Its hash.
    pub hash: B256,
    /// Its timestamp.
    pub timestamp_ms: u64,
}

/// A read-only view of a stream for the node (status, `GetStream`).
pub trait StreamView {
    /// The head.
    fn head(&self) -> Head;
    /// The nodes, in registry order.
    fn nodes(&self) -> &[Address];
    /// Members as of the head.
    fn members(&self) -> &BTreeSet<Address>;
    /// Minipool hashes in arrival order.
    fn minipool_hashes(&self) -> Vec<B256>;
    /// How many events wait in the minipool.
    fn minipool_len(&self) -> usize;
    /// An event of the minipool.
    fn pool_event(&self, hash: &B256) -> Option<&ParsedEvent>;
}

#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) id: StreamId,
    pub(crate) nodes: Vec<Address>,
    pub(crate) settings: pb::StreamSettings,
    /// Hash of every promoted miniblock by number.
    pub(crate) chain: Vec<B256>,
    pub(crate) head: Head,
    pub(crate) members: BTreeSet<Address>,
    pub(crate) event_count: u64,
    pub(crate) last_snapshot_num: u64,
    /// Event hashes of the last `window` miniblocks, for duplicate checks.
    recent: VecDeque<Vec<B256>>,
    recent_set: HashSet<B256>,
    /// The minipool, in arrival order.
    pub(crate) pool_order: Vec<B256>,
    pub(crate) pool: HashMap<B256, ParsedEvent>,
}

pub(crate) struct Rules {
    pub(crate) window: u64,
    pub(crate) max_event_bytes: usize,
}

impl Stream {
    /// A stream from its genesis miniblock.
    pub(crate) fn from_genesis(
        id: StreamId,
        nodes: Vec<Address>,
        genesis: &ParsedMiniblock,
    ) -> Result<Self, Reject> {
        if nodes.is_empty() {
            return Err(Reject::BadGenesis("a stream needs at least one node"));
        }
        if genesis.num() != 0 {
            return Err(Reject::BadGenesis("the genesis is miniblock 0"));
        }
        let inception = genesis
            .events()
            .first()
            .ok_or(Reject::BadGenesis("the genesis starts with an inception"))?;
        let Payload::Inception(body) = inception.payload() else {
            return Err(Reject::BadGenesis("the genesis starts with an inception"));
        };
        if inception.inception_stream() != Some(id) {
            return Err(Reject::BadGenesis("the inception names another stream"));
        }
        let mut members = BTreeSet::from([inception.creator()]);
        for event in &genesis.events()[1..] {
            match event.membership() {
                Some((true, address)) => {
                    members.insert(address);
                }
                _ => return Err(Reject::BadGenesis("after the inception, only joins")),
            }
        }
        let header = genesis.header();
        let mut stream = Self {
            id,
            nodes,
            settings: body.settings.unwrap_or_default(),
            chain: vec![genesis.hash()],
            head: Head {
                num: 0,
                hash: genesis.hash(),
                timestamp_ms: header.timestamp_ms,
            },
            members,
            event_count: genesis.events().len() as u64,
            last_snapshot_num: 0,
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            pool_order: Vec::new(),
            pool: HashMap::new(),
        };
        stream.remember(
            genesis.events().iter().map(|e| e.hash()).collect(),
            u64::MAX,
        );
        Ok(stream)
    }

    fn remember(&mut self, hashes: Vec<B256>, window: u64) {
        self.recent_set.extend(hashes.iter().copied());
        self.recent.push_back(hashes);
        while self.recent.len() as u64 > window.saturating_add(1) {
            for hash in self.recent.pop_front().unwrap_or_default() {
                self.recent_set.remove(&hash);
            }
        }
    }

    /// Whether `event` may enter the minipool (or a miniblock) on top of the head.
    /// `in_pool_ok` lets an event that is already in this node's minipool pass (for candidates
    /// and proposals, whose events are usually in the pool already).
    pub(crate) fn check(
        &self,
        event: &ParsedEvent,
        rules: &Rules,
        in_pool_ok: bool,
    ) -> Result<(), Reject> {
        let size = event.envelope().event.len();
        let max = if self.settings.max_event_bytes > 0 {
            (self.settings.max_event_bytes as usize).min(rules.max_event_bytes)
        } else {
            rules.max_event_bytes
        };
        if size > max {
            return Err(Reject::TooLarge { size, max });
        }
        let creator = event.creator();
        match event.payload() {
            Payload::Inception(_) => return Err(Reject::BadPayload("an inception")),
            Payload::MiniblockHeader(_) => return Err(Reject::BadPayload("a miniblock header")),
            Payload::Member(_) | Payload::Message(_) => {}
        }
        let (num, hash) = event
            .prev_miniblock()
            .ok_or(Reject::BadPayload("an event without a previous miniblock"))?;
        if num > self.head.num || self.chain.get(num as usize) != Some(&hash) {
            return Err(Reject::UnknownMiniblock { num, hash });
        }
        if self.head.num - num > rules.window {
            return Err(Reject::StaleMiniblock {
                num,
                window: rules.window,
            });
        }
        if self.recent_set.contains(&event.hash())
            || (!in_pool_ok && self.pool.contains_key(&event.hash()))
        {
            return Err(Reject::Duplicate(event.hash()));
        }
        match event.membership() {
            Some((true, address)) => {
                if self.members.contains(&address) {
                    return Err(Reject::AlreadyMember(address));
                }
                if address != creator && !self.members.contains(&creator) {
                    return Err(Reject::NotAMember(creator));
                }
            }
            Some((false, address)) => {
                if !self.members.contains(&creator) {
                    return Err(Reject::NotAMember(creator));
                }
                if !self.members.contains(&address) {
                    return Err(Reject::NotAMember(address));
                }
            }
            None => {
                if !self.members.contains(&creator) {
                    return Err(Reject::NotAMember(creator));
                }
            }
        }
        Ok(())
    }

    /// Whether a recent miniblock holds `hash`.
    pub(crate) fn check_recent(&self, hash: &B256) -> bool {
        self.recent_set.contains(hash)
    }

    pub(crate) fn add_to_pool(&mut self, event: ParsedEvent) {
        if self.pool.insert(event.hash(), event.clone()).is_none() {
            self.pool_order.push(event.hash());
        }
    }

    /// The events in pool order.
    pub(crate) fn pool_events(&self) -> impl Iterator<Item = &ParsedEvent> {
        self.pool_order.iter().filter_map(|h| self.pool.get(h))
    }

    /// Members after applying `events` (joins and leaves) to the current members.
    pub(crate) fn members_after(&self, events: &[ParsedEvent]) -> BTreeSet<Address> {
        let mut members = self.members.clone();
        for event in events {
            match event.membership() {
                Some((true, address)) => {
                    members.insert(address);
                }
                Some((false, address)) => {
                    members.remove(&address);
                }
                None => {}
            }
        }
        members
    }

    /// The snapshot of the state after a miniblock with `events`.
    pub(crate) fn snapshot_after(&self, events: &[ParsedEvent]) -> pb::Snapshot {
        pb::Snapshot {
            stream_id: self.id.0.to_vec(),
            members: self
                .members_after(events)
                .iter()
                .map(|a| a.to_vec())
                .collect(),
            settings: Some(self.settings),
            event_count: self.event_count + events.len() as u64,
        }
    }

    /// Applies a miniblock that has been checked: moves the head, applies joins and leaves,
    /// takes its events out of the minipool, and returns the pool events that are no longer
    /// admissible (to drop).
    pub(crate) fn apply(&mut self, miniblock: &ParsedMiniblock, rules: &Rules) -> Vec<B256> {
        self.members = self.members_after(miniblock.events());
        self.event_count += miniblock.events().len() as u64;
        if miniblock.header().snapshot.is_some() {
            self.last_snapshot_num = miniblock.num();
        }
        self.chain.push(miniblock.hash());
        self.head = Head {
            num: miniblock.num(),
            hash: miniblock.hash(),
            timestamp_ms: miniblock.header().timestamp_ms,
        };
        let included: Vec<B256> = miniblock.events().iter().map(|e| e.hash()).collect();
        for hash in &included {
            self.pool.remove(hash);
        }
        self.remember(included, rules.window);
        let mut dropped = Vec::new();
        let pool = std::mem::take(&mut self.pool);
        let order = std::mem::take(&mut self.pool_order);
        for hash in order {
            let Some(event) = pool.get(&hash) else {
                continue;
            };
            if self.check(event, rules, false).is_ok() {
                self.add_to_pool(event.clone());
            } else {
                dropped.push(hash);
            }
        }
        dropped
    }
}

impl StreamView for Stream {
    fn head(&self) -> Head {
        self.head
    }

    fn nodes(&self) -> &[Address] {
        &self.nodes
    }

    fn members(&self) -> &BTreeSet<Address> {
        &self.members
    }

    fn minipool_hashes(&self) -> Vec<B256> {
        self.pool_order.clone()
    }

    fn minipool_len(&self) -> usize {
        self.pool_order.len()
    }

    fn pool_event(&self, hash: &B256) -> Option<&ParsedEvent> {
        self.pool.get(hash)
    }
}
