//! The node-level engine: routes inputs to streams and runs the miniblock protocol.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alloy_primitives::{Address, B256};
use rill_protocol::{NodeKey, ParsedEvent, ParsedMiniblock, StreamId, pb};

use crate::messages::{
    Effect, Gossip, Input, Notification, ProposalReply, ProposalRequest, Registration,
};
use crate::stream::{Rules, Stream, StreamView};
use crate::{Reject, elect_leader};

/// Protocol parameters (from the registry's config and the node's settings).
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Events may build on one of the last this many miniblocks.
    pub recency_window: u64,
    /// Largest event accepted.
    pub max_event_bytes: usize,
    /// At most this many events per miniblock.
    pub max_events_per_miniblock: usize,
    /// A snapshot every this many miniblocks.
    pub snapshot_interval: u64,
    /// Wait this long after a `NewEventInPool` before fetching the event.
    pub fetch_delay_ms: u64,
    /// The leader stops waiting for proposals after this long.
    pub proposal_timeout_ms: u64,
    /// Retry a catch-up fetch after this long.
    pub catch_up_retry_ms: u64,
    /// Forget an unregistered candidate after this many chain blocks.
    pub candidate_ttl_blocks: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            recency_window: 32,
            max_event_bytes: 64 * 1024,
            max_events_per_miniblock: 10_000,
            snapshot_interval: 16,
            fetch_delay_ms: 200,
            proposal_timeout_ms: 500,
            catch_up_retry_ms: 1_000,
            candidate_ttl_blocks: 4,
        }
    }
}

impl EngineConfig {
    /// Whether miniblock `num` carries a snapshot.
    pub fn snapshot_due(&self, num: u64) -> bool {
        self.snapshot_interval > 0 && num.is_multiple_of(self.snapshot_interval)
    }
}

/// A stream as the store holds it, to rebuild the engine after a restart.
#[derive(Clone, Debug)]
pub struct RestoredStream {
    /// The stream.
    pub id: StreamId,
    /// Its nodes.
    pub nodes: Vec<Address>,
    /// Every promoted miniblock from the genesis on, in order.
    pub miniblocks: Vec<ParsedMiniblock>,
    /// The minipool, in arrival order.
    pub minipool: Vec<ParsedEvent>,
    /// The stored candidates (several leaders may race for the same number).
    pub candidates: Vec<ParsedMiniblock>,
}

#[derive(Debug)]
struct Round {
    num: u64,
    prev_hash: B256,
    chain_block: u64,
    started_ms: u64,
    replies: BTreeMap<Address, ProposalReply>,
}

/// A peer's event waiting for this node to catch up with the sender's view of the stream.
#[derive(Debug)]
struct Parked {
    event: ParsedEvent,
    from: Address,
    at_head: u64,
}

/// How many promotions a parked event may wait.
const PARK_MINIBLOCKS: u64 = 3;
/// At most this many parked events per stream.
const MAX_PARKED: usize = 10_000;

#[derive(Debug, Default)]
struct Missing {
    announcers: Vec<Address>,
    next_try_ms: u64,
    tries: u32,
}

#[derive(Debug)]
struct StreamSlot {
    stream: Stream,
    /// Who holds each pool event (for quorum acknowledgements).
    holders: HashMap<B256, BTreeSet<Address>>,
    quorum_told: BTreeSet<B256>,
    missing: BTreeMap<B256, Missing>,
    /// Candidates for `head + 1` by hash, with the chain block that elected their leader. All
    /// are kept until one is promoted: any of them may be the one the registry accepts.
    candidates: BTreeMap<B256, (ParsedMiniblock, u64)>,
    /// Candidates naming a chain block not seen yet.
    early: Vec<(Address, ParsedMiniblock)>,
    round: Option<Round>,
    /// Peer events that failed a check that depends on state this node may lag behind on.
    parked: Vec<Parked>,
    /// Registered heads above our head, from the registry's logs.
    registered: BTreeMap<u64, B256>,
    catch_up: Option<(u64, usize)>,
}

/// The engine of one node: every stream it holds.
#[derive(Debug)]
pub struct Engine {
    key: NodeKey,
    me: Address,
    config: EngineConfig,
    streams: BTreeMap<StreamId, StreamSlot>,
    /// Recent chain blocks: number → prevrandao.
    blocks: BTreeMap<u64, B256>,
    now_ms: u64,
}

impl Engine {
    /// An engine for the node with `key`.
    pub fn new(key: NodeKey, config: EngineConfig) -> Self {
        Self {
            me: key.address(),
            key,
            config,
            streams: BTreeMap::new(),
            blocks: BTreeMap::new(),
            now_ms: 0,
        }
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.me
    }

    fn rules(&self) -> Rules {
        Rules {
            window: self.config.recency_window,
            max_event_bytes: self.config.max_event_bytes,
        }
    }

    /// A stream this node holds.
    pub fn stream(&self, id: &StreamId) -> Option<&(impl StreamView + use<>)> {
        self.streams.get(id).map(|slot| &slot.stream)
    }

    /// The streams this node holds.
    pub fn stream_ids(&self) -> impl Iterator<Item = &StreamId> {
        self.streams.keys()
    }

    /// Rebuilds a stream from the store after a restart.
    pub fn restore(&mut self, restored: RestoredStream) -> Result<(), Reject> {
        let rules = self.rules();
        let mut miniblocks = restored.miniblocks.into_iter();
        let genesis = miniblocks
            .next()
            .ok_or(Reject::BadGenesis("no genesis stored"))?;
        let mut stream = Stream::from_genesis(restored.id, restored.nodes, &genesis)?;
        for miniblock in miniblocks {
            stream.apply(&miniblock, &rules);
        }
        for event in restored.minipool {
            if stream.check(&event, &rules, false).is_ok() {
                stream.add_to_pool(event);
            }
        }
        let mut slot = StreamSlot::new(stream, self.me);
        for candidate in restored.candidates {
            if candidate.num() == slot.stream.head.num + 1 {
                let block = candidate.header().chain_block;
                slot.candidates.insert(candidate.hash(), (candidate, block));
            }
        }
        self.streams.insert(restored.id, slot);
        Ok(())
    }

    /// A client's event: admitted into the minipool and gossiped, or refused with the reason.
    pub fn add_event(
        &mut self,
        now_ms: u64,
        stream: StreamId,
        event: ParsedEvent,
    ) -> Result<Vec<Effect>, Reject> {
        self.now_ms = now_ms;
        let rules = self.rules();
        let me = self.me;
        let slot = self
            .streams
            .get_mut(&stream)
            .ok_or(Reject::UnknownStream(stream))?;
        slot.stream.check(&event, &rules, false)?;
        let mut effects = Vec::new();
        slot.admit(stream, event.clone(), me, &mut effects);
        effects.push(Effect::Gossip {
            stream,
            message: Gossip::EventReceived(event),
        });
        Ok(effects)
    }

    /// Everything but client events.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        self.now_ms = now_ms;
        let mut effects = Vec::new();
        match input {
            Input::StreamAllocated {
                stream,
                nodes,
                genesis,
            } => self.on_allocated(stream, nodes, genesis, &mut effects),
            Input::GossipEvent {
                from,
                stream,
                event,
            } => self.on_peer_events(from, stream, vec![event], &mut effects),
            Input::FetchedEvents {
                from,
                stream,
                events,
            } => self.on_peer_events(from, stream, events, &mut effects),
            Input::EventInPool { from, stream, hash } => {
                self.on_announcement(from, stream, hash, &mut effects)
            }
            Input::Tick => self.on_tick(&mut effects),
            Input::ChainBlock { number, prevrandao } => {
                self.on_block(number, prevrandao, &mut effects)
            }
            Input::MiniblockRegistered { stream, num, hash } => {
                self.on_registered(stream, num, hash, &mut effects)
            }
            Input::RegistrationRejected { stream, hash, .. } => {
                // The registry will never take it: another miniblock got its number.
                if let Some(slot) = self.streams.get_mut(&stream) {
                    slot.candidates.remove(&hash);
                }
            }
            Input::ProposalRequest {
                from,
                stream,
                request,
            } => self.on_proposal_request(from, stream, request, &mut effects),
            Input::ProposalReply {
                from,
                stream,
                reply,
            } => self.on_proposal_reply(from, stream, reply, &mut effects),
            Input::Candidate {
                from,
                stream,
                miniblock,
            } => self.on_candidate(from, stream, miniblock, &mut effects),
            Input::FetchedMiniblocks {
                from,
                stream,
                miniblocks,
            } => self.on_fetched_miniblocks(from, stream, miniblocks, &mut effects),
        }
        effects
    }

    fn on_allocated(
        &mut self,
        id: StreamId,
        nodes: Vec<Address>,
        genesis: ParsedMiniblock,
        effects: &mut Vec<Effect>,
    ) {
        if self.streams.contains_key(&id) || !nodes.contains(&self.me) {
            return;
        }
        match Stream::from_genesis(id, nodes, &genesis) {
            Ok(stream) => {
                effects.push(Effect::Promote {
                    stream: id,
                    miniblock: genesis.clone(),
                });
                effects.push(Effect::Notify(Notification::MiniblockPromoted {
                    stream: id,
                    miniblock: genesis,
                }));
                self.streams.insert(id, StreamSlot::new(stream, self.me));
            }
            Err(reason) => effects.push(Effect::Rejected {
                stream: id,
                from: None,
                reason,
            }),
        }
    }

    fn on_peer_events(
        &mut self,
        from: Address,
        id: StreamId,
        events: Vec<ParsedEvent>,
        effects: &mut Vec<Effect>,
    ) {
        let rules = self.rules();
        let me = self.me;
        let Some(slot) = self.streams.get_mut(&id) else {
            return effects.push(rejected(id, from, Reject::UnknownStream(id)));
        };
        if !slot.stream.nodes.contains(&from) {
            return effects.push(rejected(id, from, Reject::NotAStreamNode(from)));
        }
        for event in events {
            let hash = event.hash();
            slot.missing.remove(&hash);
            if slot.stream.pool.contains_key(&hash) {
                slot.hold(id, hash, from, effects);
                continue;
            }
            match slot.stream.check(&event, &rules, false) {
                Ok(()) => slot.admit_from_peer(id, event, from, me, effects),
                Err(Reject::Duplicate(_)) => {}
                Err(reason) if reason.may_pass_later(slot.stream.head.num) => {
                    // The sender may have promoted a miniblock this node has not yet (a join,
                    // the event's base): keep the event and check it again after promotions.
                    slot.park(event, from);
                }
                Err(reason) => effects.push(rejected(id, from, reason)),
            }
        }
    }

    fn on_announcement(
        &mut self,
        from: Address,
        id: StreamId,
        hash: B256,
        effects: &mut Vec<Effect>,
    ) {
        let fetch_delay = self.config.fetch_delay_ms;
        let now = self.now_ms;
        let Some(slot) = self.streams.get_mut(&id) else {
            return effects.push(rejected(id, from, Reject::UnknownStream(id)));
        };
        if !slot.stream.nodes.contains(&from) {
            return effects.push(rejected(id, from, Reject::NotAStreamNode(from)));
        }
        if slot.stream.pool.contains_key(&hash) {
            return slot.hold(id, hash, from, effects);
        }
        if slot.is_recent(&hash) {
            return;
        }
        let missing = slot.missing.entry(hash).or_insert_with(|| Missing {
            next_try_ms: now + fetch_delay,
            ..Missing::default()
        });
        if !missing.announcers.contains(&from) {
            missing.announcers.push(from);
        }
    }

    fn on_tick(&mut self, effects: &mut Vec<Effect>) {
        let now = self.now_ms;
        let config = self.config;
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            let slot = self.streams.get_mut(&id).expect("listed");
            // Fetch announced events that never arrived, grouped by the peer asked.
            let mut asks: BTreeMap<Address, Vec<B256>> = BTreeMap::new();
            slot.missing.retain(|hash, missing| {
                if missing.next_try_ms > now {
                    return true;
                }
                if missing.tries >= 8 || missing.announcers.is_empty() {
                    return false;
                }
                let peer = missing.announcers[missing.tries as usize % missing.announcers.len()];
                asks.entry(peer).or_default().push(*hash);
                missing.tries += 1;
                missing.next_try_ms = now + config.fetch_delay_ms * 4;
                true
            });
            for (from, hashes) in asks {
                effects.push(Effect::FetchEvents {
                    from,
                    stream: id,
                    hashes,
                });
            }
            // Catch-up retries.
            if let Some((asked_ms, _)) = slot.catch_up
                && now >= asked_ms + config.catch_up_retry_ms
            {
                slot.request_catch_up(id, self.me, now, effects);
            }
            // A leader round whose replies are late.
            if slot
                .round
                .as_ref()
                .is_some_and(|r| now >= r.started_ms + config.proposal_timeout_ms)
            {
                self.finish_round(id, effects);
            }
        }
    }

    fn on_block(&mut self, number: u64, prevrandao: B256, effects: &mut Vec<Effect>) {
        self.blocks.insert(number, prevrandao);
        while self.blocks.len() > 256 {
            self.blocks.pop_first();
        }
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            let slot = self.streams.get_mut(&id).expect("listed");
            // Candidates that were waiting for this block.
            let early = std::mem::take(&mut slot.early);
            for (from, miniblock) in early {
                self.on_candidate(from, id, miniblock, effects);
            }
            let ttl = self.config.candidate_ttl_blocks;
            let slot = self.streams.get_mut(&id).expect("listed");
            // A fresh candidate is probably being registered: wait for it. One that stayed
            // unregistered for `ttl` blocks (its leader died, its transaction was lost) no
            // longer holds up a new round, but is kept in case it registers after all.
            let fresh_candidate = slot
                .candidates
                .values()
                .any(|(_, block)| number < block + ttl);
            if slot.round.is_some() || fresh_candidate || slot.catch_up.is_some() {
                continue;
            }
            let next = slot.stream.head.num + 1;
            if slot.stream.pool.is_empty() && !self.config.snapshot_due(next) {
                continue;
            }
            if elect_leader(&id, number, &prevrandao, &slot.stream.nodes) != self.me {
                continue;
            }
            let request = ProposalRequest {
                num: next,
                prev_hash: slot.stream.head.hash,
                hashes: slot.stream.pool_order.clone(),
                chain_block: number,
            };
            for node in slot.stream.nodes.iter().filter(|n| **n != self.me) {
                effects.push(Effect::RequestProposal {
                    to: *node,
                    stream: id,
                    request: request.clone(),
                });
            }
            slot.round = Some(Round {
                num: next,
                prev_hash: slot.stream.head.hash,
                chain_block: number,
                started_ms: self.now_ms,
                replies: BTreeMap::new(),
            });
            if slot.stream.nodes.len() == 1 {
                self.finish_round(id, effects);
            }
        }
    }

    fn on_proposal_request(
        &mut self,
        from: Address,
        id: StreamId,
        request: ProposalRequest,
        effects: &mut Vec<Effect>,
    ) {
        let Some(slot) = self.streams.get(&id) else {
            return effects.push(rejected(id, from, Reject::UnknownStream(id)));
        };
        if !slot.stream.nodes.contains(&from) {
            return effects.push(rejected(id, from, Reject::NotAStreamNode(from)));
        }
        let theirs: BTreeSet<&B256> = request.hashes.iter().collect();
        let num = slot.stream.head.num + 1;
        let reply = ProposalReply {
            num,
            prev_hash: slot.stream.head.hash,
            hashes: slot.stream.pool_order.clone(),
            snapshot_vote: self.config.snapshot_due(num),
            missing: slot
                .stream
                .pool_events()
                .filter(|e| !theirs.contains(&e.hash()))
                .cloned()
                .collect(),
        };
        effects.push(Effect::ReplyProposal {
            to: from,
            stream: id,
            reply,
        });
    }

    fn on_proposal_reply(
        &mut self,
        from: Address,
        id: StreamId,
        reply: ProposalReply,
        effects: &mut Vec<Effect>,
    ) {
        let Some(slot) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(round) = slot.round.as_mut() else {
            return;
        };
        // Replies built on another head are ignored.
        if reply.num != round.num || reply.prev_hash != round.prev_hash {
            return;
        }
        if !slot.stream.nodes.contains(&from) || from == self.me {
            return;
        }
        round.replies.insert(from, reply);
        if round.replies.len() + 1 >= slot.stream.nodes.len() {
            self.finish_round(id, effects);
        }
    }

    /// The leader's cut: events more than half of the stream's nodes hold, in pool order, then
    /// the quorum events it lacked (taken from the replies), into a signed candidate.
    fn finish_round(&mut self, id: StreamId, effects: &mut Vec<Effect>) {
        let rules = self.rules();
        let config = self.config;
        let me = self.me;
        let now = self.now_ms;
        let slot = self.streams.get_mut(&id).expect("caller checked");
        let Some(round) = slot.round.take() else {
            return;
        };
        if round.num != slot.stream.head.num + 1 || round.prev_hash != slot.stream.head.hash {
            return;
        }
        let n = slot.stream.nodes.len();
        let mut count: HashMap<B256, usize> = HashMap::new();
        for hash in &slot.stream.pool_order {
            *count.entry(*hash).or_default() += 1;
        }
        for reply in round.replies.values() {
            for hash in reply.hashes.iter().collect::<BTreeSet<_>>() {
                *count.entry(*hash).or_default() += 1;
            }
        }
        let quorum = |h: &B256| count.get(h).copied().unwrap_or(0) * 2 > n;
        // Quorum events the leader lacks: admit them from the replies.
        for reply in round.replies.values() {
            for event in &reply.missing {
                let hash = event.hash();
                if quorum(&hash)
                    && !slot.stream.pool.contains_key(&hash)
                    && slot.stream.check(event, &rules, false).is_ok()
                {
                    slot.admit(id, event.clone(), me, effects);
                }
            }
        }
        let events: Vec<ParsedEvent> = slot
            .stream
            .pool_events()
            .filter(|e| quorum(&e.hash()))
            .take(config.max_events_per_miniblock)
            .cloned()
            .collect();
        let snapshot_due = config.snapshot_due(round.num);
        if events.is_empty() && !snapshot_due {
            return;
        }
        let stream = &slot.stream;
        let header = pb::MiniblockHeader {
            num: round.num,
            prev_hash: stream.head.hash.to_vec(),
            timestamp_ms: now.max(stream.head.timestamp_ms + 1),
            event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
            event_num_offset: stream.event_count,
            snapshot: snapshot_due.then(|| stream.snapshot_after(&events)),
            prev_snapshot_num: stream.last_snapshot_num,
            chain_block: round.chain_block,
        };
        let miniblock = ParsedMiniblock::seal(header, events, &self.key)
            .expect("a header built from checked events is well formed");
        effects.push(Effect::StoreCandidate {
            stream: id,
            miniblock: miniblock.clone(),
        });
        for node in stream.nodes.iter().filter(|n| **n != me) {
            effects.push(Effect::SendCandidate {
                to: *node,
                stream: id,
                miniblock: miniblock.clone(),
            });
        }
        effects.push(Effect::Register(Registration {
            stream: id,
            prev_hash: stream.head.hash,
            hash: miniblock.hash(),
            num: round.num,
        }));
        slot.candidates
            .insert(miniblock.hash(), (miniblock, round.chain_block));
        // The registration may have been seen before the candidate (a fast chain).
        self.try_promote(id, effects);
    }

    fn on_candidate(
        &mut self,
        from: Address,
        id: StreamId,
        miniblock: ParsedMiniblock,
        effects: &mut Vec<Effect>,
    ) {
        let Some(slot) = self.streams.get_mut(&id) else {
            return effects.push(rejected(id, from, Reject::UnknownStream(id)));
        };
        if !slot.stream.nodes.contains(&from) {
            return effects.push(rejected(id, from, Reject::NotAStreamNode(from)));
        }
        let head = slot.stream.head;
        let num = miniblock.num();
        if num <= head.num {
            return; // already promoted: a late duplicate
        }
        if num > head.num + 1 {
            // We are behind: catch up to the registered chain first.
            return;
        }
        let block = miniblock.header().chain_block;
        if !self.blocks.contains_key(&block)
            && self.blocks.keys().last().is_none_or(|last| block > *last)
        {
            slot.early.push((from, miniblock));
            return;
        }
        match self.check_candidate(&id, &miniblock) {
            Ok(()) => {
                let slot = self.streams.get_mut(&id).expect("checked");
                if slot.candidates.contains_key(&miniblock.hash()) {
                    return; // a duplicate delivery
                }
                effects.push(Effect::StoreCandidate {
                    stream: id,
                    miniblock: miniblock.clone(),
                });
                slot.candidates.insert(miniblock.hash(), (miniblock, block));
                self.try_promote(id, effects);
            }
            Err(reason) => effects.push(rejected(id, from, reason)),
        }
    }

    /// A replica's checks of a candidate for `head + 1`.
    fn check_candidate(&self, id: &StreamId, miniblock: &ParsedMiniblock) -> Result<(), Reject> {
        let slot = &self.streams[id];
        let stream = &slot.stream;
        let header = miniblock.header();
        let block = header.chain_block;
        let prevrandao = self
            .blocks
            .get(&block)
            .ok_or(Reject::UnknownChainBlock(block))?;
        let leader = elect_leader(id, block, prevrandao, &stream.nodes);
        if leader != miniblock.producer() {
            return Err(Reject::WrongLeader {
                expected: leader,
                got: miniblock.producer(),
                block,
            });
        }
        self.check_links(stream, miniblock)?;
        match (&header.snapshot, self.config.snapshot_due(miniblock.num())) {
            (Some(snapshot), true) if *snapshot == stream.snapshot_after(miniblock.events()) => {}
            (None, false) => {}
            _ => return Err(Reject::BadHeader("snapshot missing, unexpected or wrong")),
        }
        Ok(())
    }

    /// Checks that hold for any next miniblock, candidate or fetched: number, prev hash,
    /// timestamp, offsets, size, and every event admissible on top of the head.
    fn check_links(&self, stream: &Stream, miniblock: &ParsedMiniblock) -> Result<(), Reject> {
        let head = stream.head;
        let header = miniblock.header();
        if miniblock.num() != head.num + 1 {
            return Err(Reject::WrongNum {
                expected: head.num + 1,
                got: miniblock.num(),
            });
        }
        if miniblock.prev_hash() != head.hash {
            return Err(Reject::BadPrevHash {
                expected: head.hash,
                got: miniblock.prev_hash(),
            });
        }
        if header.timestamp_ms <= head.timestamp_ms {
            return Err(Reject::BadTimestamp {
                head: head.timestamp_ms,
                got: header.timestamp_ms,
            });
        }
        if header.event_num_offset != stream.event_count
            || header.prev_snapshot_num != stream.last_snapshot_num
        {
            return Err(Reject::BadHeader(
                "event offset or previous snapshot number",
            ));
        }
        if miniblock.events().len() > self.config.max_events_per_miniblock {
            return Err(Reject::BadHeader("too many events"));
        }
        let rules = self.rules();
        let mut seen = BTreeSet::new();
        for (index, event) in miniblock.events().iter().enumerate() {
            let reason = if !seen.insert(event.hash()) {
                Some(Reject::Duplicate(event.hash()))
            } else {
                stream.check(event, &rules, true).err()
            };
            if let Some(reason) = reason {
                return Err(Reject::InadmissibleEvent {
                    index,
                    reason: Box::new(reason),
                });
            }
        }
        Ok(())
    }

    fn on_registered(&mut self, id: StreamId, num: u64, hash: B256, effects: &mut Vec<Effect>) {
        let me = self.me;
        let now = self.now_ms;
        let Some(slot) = self.streams.get_mut(&id) else {
            return;
        };
        if num <= slot.stream.head.num {
            return;
        }
        slot.registered.insert(num, hash);
        self.try_promote(id, effects);
        let slot = self.streams.get_mut(&id).expect("present");
        if slot
            .registered
            .keys()
            .next_back()
            .is_some_and(|n| *n > slot.stream.head.num)
            && slot.catch_up.is_none()
        {
            slot.request_catch_up(id, me, now, effects);
        }
    }

    /// Promotes the candidate the registry registered, if this node has it.
    fn try_promote(&mut self, id: StreamId, effects: &mut Vec<Effect>) {
        let slot = self.streams.get_mut(&id).expect("caller checked");
        let next = slot.stream.head.num + 1;
        let Some(hash) = slot.registered.get(&next) else {
            return;
        };
        let Some((candidate, _)) = slot.candidates.remove(hash) else {
            return;
        };
        self.promote(id, candidate, effects);
    }

    fn promote(&mut self, id: StreamId, miniblock: ParsedMiniblock, effects: &mut Vec<Effect>) {
        let rules = self.rules();
        let slot = self.streams.get_mut(&id).expect("caller checked");
        let dropped = slot.stream.apply(&miniblock, &rules);
        let head = slot.stream.head.num;
        slot.registered = slot.registered.split_off(&(head + 1));
        if slot.registered.is_empty() {
            slot.catch_up = None;
        }
        if slot.round.as_ref().is_some_and(|r| r.num <= head) {
            slot.round = None;
        }
        slot.candidates.retain(|_, (c, _)| c.num() > head);
        for event in miniblock.events() {
            slot.holders.remove(&event.hash());
            slot.quorum_told.remove(&event.hash());
            slot.missing.remove(&event.hash());
        }
        effects.push(Effect::Promote {
            stream: id,
            miniblock: miniblock.clone(),
        });
        if !dropped.is_empty() {
            for hash in &dropped {
                slot.holders.remove(hash);
            }
            effects.push(Effect::DropFromMinipool {
                stream: id,
                hashes: dropped,
            });
        }
        effects.push(Effect::Notify(Notification::MiniblockPromoted {
            stream: id,
            miniblock,
        }));
        let me = self.me;
        let slot = self.streams.get_mut(&id).expect("caller checked");
        slot.unpark(id, me, &rules, effects);
    }

    fn on_fetched_miniblocks(
        &mut self,
        from: Address,
        id: StreamId,
        mut miniblocks: Vec<ParsedMiniblock>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(slot) = self.streams.get(&id) else {
            return;
        };
        miniblocks.sort_by_key(|m| m.num());
        miniblocks.dedup_by_key(|m| m.num());
        let head = slot.stream.head.num;
        // The run that links from our head, cut at the last miniblock the registry vouches for
        // (everything before it is vouched for by the prev-hash links).
        let run: Vec<ParsedMiniblock> = miniblocks
            .into_iter()
            .filter(|m| m.num() > head)
            .enumerate()
            .take_while(|(i, m)| m.num() == head + 1 + *i as u64)
            .map(|(_, m)| m)
            .collect();
        let Some(last) = run
            .iter()
            .rposition(|m| slot.registered.get(&m.num()) == Some(&m.hash()))
        else {
            // Not registered (yet): keep a well-formed next miniblock as a candidate.
            if let Some(next) = run.into_iter().next()
                && self.check_links(&self.streams[&id].stream, &next).is_ok()
            {
                let block = next.header().chain_block;
                let slot = self.streams.get_mut(&id).expect("present");
                slot.candidates.insert(next.hash(), (next, block));
            }
            return;
        };
        for miniblock in run.into_iter().take(last + 1) {
            if let Err(reason) = self.check_links(&self.streams[&id].stream, &miniblock) {
                effects.push(rejected(id, from, reason));
                return;
            }
            self.promote(id, miniblock, effects);
        }
    }
}

impl StreamSlot {
    fn new(stream: Stream, me: Address) -> Self {
        let holders = stream
            .pool_order
            .iter()
            .map(|h| (*h, BTreeSet::from([me])))
            .collect();
        Self {
            stream,
            holders,
            quorum_told: BTreeSet::new(),
            missing: BTreeMap::new(),
            candidates: BTreeMap::new(),
            parked: Vec::new(),
            early: Vec::new(),
            round: None,
            registered: BTreeMap::new(),
            catch_up: None,
        }
    }

    fn admit_from_peer(
        &mut self,
        id: StreamId,
        event: ParsedEvent,
        from: Address,
        me: Address,
        effects: &mut Vec<Effect>,
    ) {
        let hash = event.hash();
        self.admit(id, event, me, effects);
        self.hold(id, hash, from, effects);
        effects.push(Effect::Gossip {
            stream: id,
            message: Gossip::EventInPool(hash),
        });
    }

    fn park(&mut self, event: ParsedEvent, from: Address) {
        if self.parked.len() < MAX_PARKED
            && !self.parked.iter().any(|p| p.event.hash() == event.hash())
        {
            self.parked.push(Parked {
                event,
                from,
                at_head: self.stream.head.num,
            });
        }
    }

    /// After a promotion: admits parked events that became admissible, keeps those that may
    /// still pass for a few more miniblocks, and drops the rest.
    fn unpark(&mut self, id: StreamId, me: Address, rules: &Rules, effects: &mut Vec<Effect>) {
        let head = self.stream.head.num;
        for parked in std::mem::take(&mut self.parked) {
            match self.stream.check(&parked.event, rules, false) {
                Ok(()) => self.admit_from_peer(id, parked.event, parked.from, me, effects),
                Err(reason)
                    if reason.may_pass_later(head) && head < parked.at_head + PARK_MINIBLOCKS =>
                {
                    self.parked.push(parked);
                }
                Err(Reject::Duplicate(_)) => {}
                Err(reason) => effects.push(rejected(id, parked.from, reason)),
            }
        }
    }

    /// Whether a recent miniblock already holds `hash` (so it is not missing).
    fn is_recent(&self, hash: &B256) -> bool {
        self.stream.check_recent(hash)
    }

    fn admit(&mut self, id: StreamId, event: ParsedEvent, me: Address, effects: &mut Vec<Effect>) {
        let hash = event.hash();
        self.stream.add_to_pool(event.clone());
        self.missing.remove(&hash);
        effects.push(Effect::StoreEvent {
            stream: id,
            event: event.clone(),
        });
        effects.push(Effect::Notify(Notification::EventAdmitted {
            stream: id,
            event,
        }));
        self.hold(id, hash, me, effects);
    }

    /// `who` holds `hash`; tell waiting clients once more than half the nodes do.
    fn hold(&mut self, id: StreamId, hash: B256, who: Address, effects: &mut Vec<Effect>) {
        let holders = self.holders.entry(hash).or_default();
        holders.insert(who);
        if holders.len() * 2 > self.stream.nodes.len() && self.quorum_told.insert(hash) {
            effects.push(Effect::Notify(Notification::EventQuorum {
                stream: id,
                hash,
            }));
        }
    }

    fn request_catch_up(&mut self, id: StreamId, me: Address, now: u64, effects: &mut Vec<Effect>) {
        let Some((&to_num, _)) = self.registered.iter().next_back() else {
            self.catch_up = None;
            return;
        };
        let peers: Vec<Address> = self
            .stream
            .nodes
            .iter()
            .copied()
            .filter(|n| *n != me)
            .collect();
        if peers.is_empty() {
            return;
        }
        let attempt = self.catch_up.map_or(0, |(_, attempt)| attempt + 1);
        effects.push(Effect::FetchMiniblocks {
            from: peers[attempt % peers.len()],
            stream: id,
            from_num: self.stream.head.num + 1,
            to_num,
        });
        self.catch_up = Some((now, attempt));
    }
}

fn rejected(stream: StreamId, from: Address, reason: Reject) -> Effect {
    Effect::Rejected {
        stream,
        from: Some(from),
        reason,
    }
}
