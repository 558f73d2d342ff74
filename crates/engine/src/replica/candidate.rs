//! Candidates. The leader stores its signed candidate, hands it to the replicas, and registers
//! it only once more than half of the stream's nodes (itself included) have stored it: a
//! registered miniblock always exists on a majority. A candidate that cannot reach that write
//! quorum in time is given up, and its events stay in the pools. A replica checks a candidate
//! (elected leader, turn, links, clock, offsets, size, snapshot, every event) before it stores
//! it. Every candidate for the next number is kept until one is promoted: leaders may race,
//! and any of them may be the one the registry accepts.
//!
//! A candidate may also build on the one next candidate before the registry has it (see
//! `round`): such a chained candidate is judged against the state after its base, and a replica
//! stores it only if it holds that base, so its write quorum is also one for the base. Its
//! leader registers the base before it (unless the base is its own and so already queued),
//! in one ordered request: the registry takes the base, or finds it already registered, and
//! then the chained candidate.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::map::B256Set;
use alloy_primitives::{Address, B256};
use rill_protocol::ParsedMiniblock;

use super::proposals::Proposals;
use super::{Ctx, Replica};
use crate::stream::{Head, Stream};
use crate::{
    CandidateVerdict, Effect, Registration, RegistrationKind, Reject, Request, Response, StoreOp,
};

/// At most this many candidates wait for a chain block this node has not seen yet.
const MAX_DEFERRED: usize = 64;
/// A replica that could not judge or take the candidate yet is asked again after this long.
const RESEND_MS: u64 = 200;

/// The candidates a replica holds for `head + 1` (and those chained on one of them, for
/// `head + 2`), and those waiting for their chain block.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    /// By hash, with the chain block that elected their leader.
    held: BTreeMap<B256, (ParsedMiniblock, u64)>,
    deferred: Vec<(Address, ParsedMiniblock)>,
}

impl Candidates {
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty() && self.deferred.is_empty()
    }

    pub(super) fn keep(&mut self, miniblock: ParsedMiniblock) {
        let block = miniblock.header().chain_block;
        self.held.insert(miniblock.hash(), (miniblock, block));
    }

    /// Whether a candidate elected less than `ttl` blocks before `number` may still be
    /// registered (it holds up new rounds until then).
    pub(super) fn fresh(&self, number: u64, ttl: u64) -> bool {
        self.held
            .values()
            .any(|(_, block)| number < block.saturating_add(ttl))
    }

    pub(super) fn take(&mut self, hash: &B256) -> Option<ParsedMiniblock> {
        self.held.remove(hash).map(|(miniblock, _)| miniblock)
    }

    pub(super) fn holds(&self, hash: &B256) -> bool {
        self.held.contains_key(hash)
    }

    /// The held candidate `hash` if it is the next miniblock after `head`: what a chained
    /// candidate may build on.
    pub(super) fn base(&self, head: &Head, hash: &B256) -> Option<&ParsedMiniblock> {
        self.held
            .get(hash)
            .map(|(c, _)| c)
            .filter(|c| c.num() == head.num + 1 && c.prev_hash() == head.hash)
    }

    /// The candidate a round may build on before the registry has it: the only candidate
    /// held, when it is the next miniblock after `head` (nothing builds on it yet, and no
    /// other leader's candidate races it).
    pub(super) fn pending_base(&self, head: &Head) -> Option<&ParsedMiniblock> {
        let mut held = self.held.keys();
        match (held.next(), held.next()) {
            (Some(hash), None) => self.base(head, hash),
            _ => None,
        }
    }

    /// Forgets candidates up to `head`, and those for the number after it that do not build on
    /// it (chained on a candidate the registry did not take).
    pub(super) fn promoted(&mut self, head: &Head) {
        self.held.retain(|_, (c, _)| {
            c.num() > head.num + 1 || (c.num() == head.num + 1 && c.prev_hash() == head.hash)
        });
    }
}

/// The leader's candidate, waiting for its write quorum.
#[derive(Debug)]
pub(super) struct Offer {
    miniblock: ParsedMiniblock,
    /// Nodes that stored it durably (this node included).
    saved: BTreeSet<Address>,
    /// Nodes that refused it.
    refused: BTreeSet<Address>,
    /// Nodes to ask again, and when.
    resend: BTreeMap<Address, u64>,
    /// Nodes sent the candidate without the envelopes they proposed, and not yet whole. A
    /// refusal from one of them is answered with the whole candidate first: a node of an
    /// older version refuses a candidate that leaves envelopes out.
    partial: BTreeSet<Address>,
    deadline_ms: u64,
}

impl Offer {
    pub(super) fn num(&self) -> u64 {
        self.miniblock.num()
    }
}

impl Replica {
    /// The leader's side: store the candidate, hand it to the other nodes, and register it
    /// once a write quorum stored it. `proposed` says which events each replica proposed
    /// this round: those need not travel to it again.
    pub(super) fn offer_candidate(
        &mut self,
        ctx: &mut Ctx<'_>,
        miniblock: ParsedMiniblock,
        proposed: &Proposals,
    ) {
        let stream = self.id();
        ctx.store(StoreOp::StoreCandidate {
            stream,
            pooled: self.pooled(&miniblock),
            miniblock: miniblock.clone(),
        });
        let mut partial = BTreeSet::new();
        for node in self.live_peers(ctx) {
            let held: Vec<bool> = miniblock
                .events()
                .iter()
                .map(|e| proposed.holds(&node, &e.hash()))
                .collect();
            if held.contains(&true) {
                partial.insert(node);
            }
            let miniblock = miniblock.clone();
            ctx.send(node, stream, Request::SaveCandidate { miniblock, held });
        }
        self.candidates.keep(miniblock.clone());
        self.offer = Some(Offer {
            miniblock,
            saved: BTreeSet::from([ctx.me]),
            refused: BTreeSet::new(),
            resend: BTreeMap::new(),
            partial,
            deadline_ms: ctx.now_ms + ctx.config.candidate_timeout_ms,
        });
        self.register_if_stored(ctx);
    }

    /// A replica's answer to the leader's candidate.
    pub(crate) fn on_candidate_answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        response: Response,
    ) {
        let Some(offer) = self.offer.as_mut() else {
            return;
        };
        let hash = offer.miniblock.hash();
        match response {
            Response::CandidateSaved(h) if h == hash => {
                offer.saved.insert(from);
                offer.resend.remove(&from);
            }
            // Sent without some envelopes: asked again at once, whole, before it counts.
            Response::CandidateRefused(h) if h == hash && offer.partial.contains(&from) => {
                offer.resend.insert(from, ctx.now_ms);
            }
            Response::CandidateRefused(h) if h == hash => {
                offer.refused.insert(from);
                offer.resend.remove(&from);
            }
            // Not seen its chain block yet, or no answer: ask again shortly.
            Response::CandidateDeferred(h)
            | Response::Failed(crate::RequestKind::SaveCandidate(h))
                if h == hash =>
            {
                offer.resend.insert(from, ctx.now_ms + RESEND_MS);
            }
            _ => return,
        }
        self.register_if_stored(ctx);
    }

    /// Registers the offered candidate once a write quorum stored it; gives it up once that
    /// can no longer happen.
    fn register_if_stored(&mut self, ctx: &mut Ctx<'_>) {
        let quorum = self.quorum();
        let n = self.stream.nodes.len();
        let Some(offer) = self.offer.as_ref() else {
            return;
        };
        if offer.saved.len() >= quorum {
            let offer = self.offer.take().expect("checked");
            let _span = tracing::debug_span!("miniblock", num = offer.num()).entered();
            let head = self.stream.head;
            let base = self.candidates.base(&head, &offer.miniblock.prev_hash());
            tracing::debug!(
                saved = offer.saved.len(),
                chained = base.is_some(),
                "write quorum reached; registering"
            );
            // Every node that stored a chained candidate holds its base: the base has its
            // write quorum too. Registered first, unless this node produced it (and so has
            // queued it already).
            if let Some(base) = base.filter(|b| b.producer() != ctx.me) {
                ctx.effects.push(Effect::Register(Registration {
                    stream: self.id(),
                    prev_hash: base.prev_hash(),
                    hash: base.hash(),
                    num: base.num(),
                    kind: RegistrationKind::Base,
                }));
            }
            ctx.effects.push(Effect::Register(Registration {
                stream: self.id(),
                prev_hash: offer.miniblock.prev_hash(),
                hash: offer.miniblock.hash(),
                num: offer.num(),
                kind: if offer.miniblock.prev_hash() == head.hash {
                    RegistrationKind::Next
                } else {
                    RegistrationKind::Chained
                },
            }));
            // The registration may have been seen before the quorum (a fast chain).
            self.try_promote(ctx);
        } else if n - offer.refused.len() < quorum {
            self.give_up_offer("refused by too many replicas");
        }
    }

    /// Resends the candidate to replicas that asked for time, and gives it up at its deadline.
    pub(super) fn offer_due(&mut self, ctx: &mut Ctx<'_>) {
        let stream = self.id();
        let Some(offer) = self.offer.as_mut() else {
            return;
        };
        if ctx.now_ms >= offer.deadline_ms {
            return self.give_up_offer("no write quorum in time");
        }
        let due: Vec<Address> = offer
            .resend
            .iter()
            .filter(|(_, at)| **at <= ctx.now_ms)
            .map(|(node, _)| *node)
            .collect();
        for node in due {
            offer.resend.remove(&node);
            offer.partial.remove(&node);
            // Whole: the replica may have answered that it lacks an event it proposed.
            let miniblock = offer.miniblock.clone();
            let held = Vec::new();
            ctx.send(node, stream, Request::SaveCandidate { miniblock, held });
        }
    }

    /// The candidate will not be registered: it no longer holds up rounds; its events stay in
    /// the pool for the next one.
    fn give_up_offer(&mut self, why: &'static str) {
        if let Some(offer) = self.offer.take() {
            let _span = tracing::debug_span!("miniblock", num = offer.num()).entered();
            tracing::info!(
                hash = %offer.miniblock.hash(),
                saved = offer.saved.len(),
                why,
                "candidate given up"
            );
            let _ = self.candidates.take(&offer.miniblock.hash());
        }
    }

    /// Forgets the offer if its number is promoted, or its candidate was dropped (chained on
    /// a candidate the registry did not take).
    pub(super) fn forget_offer_upto(&mut self, head: u64) {
        if self
            .offer
            .as_ref()
            .is_some_and(|o| o.num() <= head || !self.candidates.holds(&o.miniblock.hash()))
        {
            self.offer = None;
        }
    }

    /// A leader's candidate, on a replica.
    pub(crate) fn on_candidate(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        miniblock: ParsedMiniblock,
    ) -> CandidateVerdict {
        if !self.is_node(&from) {
            let reason = Reject::NotAStreamNode(from);
            ctx.rejected(self.id(), Some(from), reason.clone());
            return CandidateVerdict::Refused(reason);
        }
        let head = self.stream.head.num;
        let num = miniblock.num();
        if num <= head {
            return CandidateVerdict::Stale;
        }
        let chained = num == head + 2;
        if num > head + 1 && !chained {
            // This node is behind: it catches up to the registered chain first.
            return CandidateVerdict::Refused(Reject::WrongNum {
                expected: head + 1,
                got: num,
            });
        }
        if chained
            && self
                .candidates
                .base(&self.stream.head, &miniblock.prev_hash())
                .is_none()
        {
            // Chained on a candidate this node does not hold (yet): the leader asks again
            // shortly, and gives up at its deadline.
            return CandidateVerdict::Deferred;
        }
        let block = miniblock.header().chain_block;
        if ctx.blocks.is_future(block) {
            if self.candidates.deferred.len() < MAX_DEFERRED {
                self.candidates.deferred.push((from, miniblock));
            }
            return CandidateVerdict::Deferred;
        }
        let _span = tracing::debug_span!("miniblock", num).entered();
        if let Err(reason) = self.check_candidate(ctx, &miniblock) {
            ctx.rejected(self.id(), Some(from), reason.clone());
            return CandidateVerdict::Refused(reason);
        }
        self.hold_candidate(ctx, miniblock);
        CandidateVerdict::Stored
    }

    /// Stores a checked candidate (every candidate this node holds is on its disk: answering
    /// "stored" to a leader means stored), and promotes it if it is the registered one.
    pub(super) fn hold_candidate(&mut self, ctx: &mut Ctx<'_>, miniblock: ParsedMiniblock) {
        if !self.candidates.held.contains_key(&miniblock.hash()) {
            ctx.store(StoreOp::StoreCandidate {
                stream: self.id(),
                pooled: self.pooled(&miniblock),
                miniblock: miniblock.clone(),
            });
            self.candidates.keep(miniblock);
        }
        self.try_promote(ctx);
    }

    /// Per event of `miniblock`, whether it is in the minipool (so its envelope is stored
    /// already, by the write that admitted it or the load that restored it).
    fn pooled(&self, miniblock: &ParsedMiniblock) -> Vec<bool> {
        miniblock
            .events()
            .iter()
            .map(|e| self.pool.contains(&e.hash()))
            .collect()
    }

    /// Candidates that waited for a chain block: checked again now that one arrived.
    pub(super) fn recheck_deferred(&mut self, ctx: &mut Ctx<'_>) {
        for (from, miniblock) in std::mem::take(&mut self.candidates.deferred) {
            let _ = self.on_candidate(ctx, from, miniblock);
        }
    }

    /// A replica's checks of a candidate for `head + 1`, or chained on a held one: it names a
    /// recent chain block (its turn has not passed), its producer was elected at that block,
    /// and it is a valid next miniblock (after its base) under that block's rules.
    pub(super) fn check_candidate(
        &self,
        ctx: &Ctx<'_>,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), Reject> {
        let block = miniblock.header().chain_block;
        if ctx.blocks.recent(block).is_none() {
            return Err(Reject::UnknownChainBlock(block));
        }
        let turn = ctx.config.lead_within_blocks + ctx.config.candidate_ttl_blocks;
        if ctx.blocks.head().saturating_sub(block) > turn {
            return Err(Reject::StaleTurn {
                block,
                head: ctx.blocks.head(),
            });
        }
        self.check_producer(ctx, miniblock)?;
        match self.state_before(miniblock.num(), miniblock.prev_hash()) {
            Some(base) => check_next(&base, ctx, miniblock),
            // Not on the head nor on a held candidate: the head's checks say what is wrong.
            None => self.check_links(ctx, miniblock),
        }
    }

    /// Whether miniblock `num` after `prev_hash` builds on the head or on a held candidate for
    /// the next number (what [`Self::state_before`] finds, without building that state).
    pub(super) fn builds_on_held(&self, num: u64, prev_hash: B256) -> bool {
        let head = self.stream.head;
        (num == head.num + 1 && prev_hash == head.hash)
            || (num == head.num + 2 && self.candidates.base(&head, &prev_hash).is_some())
    }

    /// The state miniblock `num` after `prev_hash` builds on: the head, or the state after
    /// the held candidate `prev_hash` for the next number. `None` if it is neither.
    pub(super) fn state_before(&self, num: u64, prev_hash: B256) -> Option<Cow<'_, Stream>> {
        let head = self.stream.head;
        if num == head.num + 1 && prev_hash == head.hash {
            return Some(Cow::Borrowed(&self.stream));
        }
        if num != head.num + 2 {
            return None;
        }
        let base = self.candidates.base(&head, &prev_hash)?;
        Some(Cow::Owned(self.stream.after(base)))
    }

    /// The miniblock was produced by the leader elected at its chain block.
    pub(super) fn check_producer(
        &self,
        ctx: &Ctx<'_>,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), Reject> {
        let block = miniblock.header().chain_block;
        let prevrandao = ctx
            .blocks
            .randomness(block)
            .ok_or(Reject::UnknownChainBlock(block))?;
        let leader = ctx
            .electorate
            .leader(&self.id(), block, &prevrandao, &self.stream.nodes);
        if leader != miniblock.producer() {
            return Err(Reject::WrongLeader {
                expected: leader,
                got: miniblock.producer(),
                block,
            });
        }
        Ok(())
    }

    /// [`check_next`] on the head.
    pub(super) fn check_links(
        &self,
        ctx: &Ctx<'_>,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), Reject> {
        check_next(&self.stream, ctx, miniblock)
    }
}

/// Checks that hold for any miniblock that follows `on`, candidate or fetched, under the rules
/// of its electing block: number, prev hash, timestamp (increasing, not ahead of this node's
/// clock), offsets, snapshot, count and bytes, and every event admissible on `on`.
fn check_next(on: &Stream, ctx: &Ctx<'_>, miniblock: &ParsedMiniblock) -> Result<(), Reject> {
    let head = on.head;
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
    if header.timestamp_ms > ctx.now_ms.saturating_add(ctx.config.max_clock_skew_ms) {
        return Err(Reject::FutureTimestamp {
            got: header.timestamp_ms,
            now: ctx.now_ms,
            skew_ms: ctx.config.max_clock_skew_ms,
        });
    }
    if header.event_num_offset != on.event_count || header.prev_snapshot_num != on.last_snapshot_num
    {
        return Err(Reject::BadHeader(
            "event offset or previous snapshot number",
        ));
    }
    let params = ctx.params_at(header.chain_block);
    let (num, interval) = (miniblock.num(), params.snapshot_interval);
    match &header.snapshot {
        Some(_) if !on.snapshot_due(num, interval) => {
            return Err(Reject::BadHeader("a snapshot before one is due"));
        }
        Some(snapshot) if *snapshot != on.snapshot_after(miniblock.events()) => {
            return Err(Reject::BadHeader("a wrong snapshot"));
        }
        None if on.snapshot_overdue(num, interval) => {
            return Err(Reject::BadHeader("no snapshot, and one is overdue"));
        }
        _ => {}
    }
    if miniblock.events().len() > params.max_events_per_miniblock {
        return Err(Reject::BadHeader("too many events"));
    }
    let bytes: usize = miniblock
        .events()
        .iter()
        .map(|e| e.envelope().event.len())
        .sum();
    if bytes > params.max_miniblock_bytes {
        return Err(Reject::BadHeader("too many bytes of events"));
    }
    let rules = ctx.rules_at(header.chain_block);
    let mut seen = B256Set::with_capacity_and_hasher(miniblock.events().len(), Default::default());
    for (index, event) in miniblock.events().iter().enumerate() {
        let reason = if !seen.insert(event.hash()) {
            Some(Reject::Duplicate(event.hash()))
        } else {
            on.check(event, &rules).err()
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
