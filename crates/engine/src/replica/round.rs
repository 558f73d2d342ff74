//! A leader's round: on a chain block that elects this node, ask the other nodes for their
//! proposals, cut the events that more than half of the stream's nodes hold into a signed
//! candidate, and hand it to the replicas. Also the replica's side: answering a proposal
//! request.
//!
//! A round builds on the head, or, while the next candidate waits for its registration, on
//! that candidate (a chained round): a stream's events then do not wait for the previous
//! registration, which takes one or two blocks, before they are cut. Only one candidate is
//! ever chained ahead of the head, and only on a candidate elected at an earlier block that no
//! other leader's candidate races.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::map::B256Set;
use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, pb};

use super::proposals::{self, Proposals};
use super::{Ctx, Replica};
use crate::stream::Stream;
use crate::{Holdings, ProposalReply, ProposalRequest, Reject, Request};

/// A round this node leads.
#[derive(Debug)]
pub(super) struct Round {
    num: u64,
    prev_hash: B256,
    chain_block: u64,
    started_ms: u64,
    /// The hashes the request named: the replicas' differences are taken from them.
    asked: Vec<B256>,
    replies: BTreeMap<Address, ProposalReply>,
    /// Nodes that did not answer.
    silent: BTreeSet<Address>,
}

impl Round {
    pub(super) fn num(&self) -> u64 {
        self.num
    }
}

impl Replica {
    /// On a chain block: start a round if this node is elected and there is something to cut
    /// (events, or a snapshot due), unless a round, a candidate waiting for its write quorum
    /// or a catch-up is pending. A fresh candidate holds the round up unless the round can
    /// chain on it. Blocks far behind the chain's head (replayed after a restart) elect nobody
    /// here.
    pub(super) fn maybe_lead(&mut self, ctx: &mut Ctx<'_>, number: u64, prevrandao: B256) {
        if self.round.is_some() || self.offer.is_some() || self.catch_up.is_some() {
            return;
        }
        if ctx.blocks.head().saturating_sub(number) >= ctx.config.lead_within_blocks {
            return;
        }
        let chained = self
            .candidates
            .fresh(number, ctx.config.candidate_ttl_blocks);
        if chained && (!ctx.config.chain_candidates || self.chain_base(number).is_none()) {
            return;
        }
        if self.pool.is_empty() && !chained {
            let interval = ctx.params_at(number).snapshot_interval;
            if !self.stream.snapshot_due(self.stream.head.num + 1, interval) {
                return;
            }
        }
        let leader = ctx
            .electorate
            .leader(&self.id(), number, &prevrandao, &self.stream.nodes);
        if leader != ctx.me {
            return;
        }
        let base = match self.chain_base(number) {
            Some(base) if chained => Cow::Owned(self.stream.after(base)),
            _ => Cow::Borrowed(&self.stream),
        };
        let after = matches!(base, Cow::Owned(_)).then_some(&*base);
        let next = base.head.num + 1;
        let interval = ctx.params_at(number).snapshot_interval;
        // A chained round's base holds its candidate's events: they are not asked for again.
        let hashes = unincluded(self.pool.hashes(), after);
        if hashes.is_empty() && !base.snapshot_due(next, interval) {
            return;
        }
        let _span = tracing::debug_span!("miniblock", num = next).entered();
        tracing::debug!(
            chain_block = number,
            pool = hashes.len(),
            chained,
            "leading a round"
        );
        let prev_hash = base.head.hash;
        let request = ProposalRequest {
            num: next,
            prev_hash,
            hashes: hashes.clone(),
            chain_block: number,
            difference: true,
        };
        let stream = self.id();
        let peers = self.live_peers(ctx);
        for node in &peers {
            ctx.send(*node, stream, Request::Proposal(request.clone()));
        }
        self.round = Some(Round {
            num: next,
            prev_hash,
            chain_block: number,
            started_ms: ctx.now_ms,
            asked: hashes,
            replies: BTreeMap::new(),
            silent: BTreeSet::new(),
        });
        if peers.is_empty() {
            self.finish_round(ctx);
        }
    }

    /// The candidate a round at chain block `number` may chain on (see the module's doc).
    fn chain_base(&self, number: u64) -> Option<&ParsedMiniblock> {
        self.candidates
            .pending_base(&self.stream.head)
            .filter(|base| base.header().chain_block < number)
    }

    /// A leader asks for this node's proposal: its minipool (as a difference from the
    /// leader's, when the leader takes one), its snapshot vote, and the events the leader
    /// lacks (up to the answer's byte budget), on the head or on the candidate the round
    /// chains on. Events the leader holds and this node lacks are fetched from it: proposal
    /// rounds reconcile minipools both ways.
    pub(crate) fn propose(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        request: &ProposalRequest,
    ) -> Result<ProposalReply, Reject> {
        if !self.is_node(&from) {
            return Err(Reject::NotAStreamNode(from));
        }
        let head = self.stream.head;
        let on_head = request.num == head.num + 1 && request.prev_hash == head.hash;
        let chained = request.num == head.num + 2;
        if chained && self.candidates.base(&head, &request.prev_hash).is_none() {
            // A chained round on a candidate this node does not hold: it cannot judge what
            // builds on it.
            return Err(Reject::UnknownMiniblock {
                num: head.num + 1,
                hash: request.prev_hash,
            });
        }
        // The request's hashes this node's pool lacks, by position: fetched when the round
        // builds on what this node holds, and named in its difference.
        let absent: Vec<u32> = (0u32..)
            .zip(&request.hashes)
            .filter(|(_, h)| !self.pool.contains(h))
            .map(|(i, _)| i)
            .collect();
        if on_head || chained {
            for i in &absent {
                let hash = request.hashes[*i as usize];
                self.lacking(ctx, from, hash, ctx.config.fetch_delay_ms);
            }
        }
        let base = self
            .state_before(request.num, request.prev_hash)
            .unwrap_or(Cow::Borrowed(&self.stream));
        let after = matches!(base, Cow::Owned(_)).then_some(&*base);
        let theirs: B256Set = request.hashes.iter().copied().collect();
        let num = base.head.num + 1;
        // What this node holds beyond the request, in pool order, in one pass: every hash for
        // the difference, and the envelopes for `missing` until one passes the answer's byte
        // budget.
        let (mut extra, mut missing) = (Vec::new(), Vec::new());
        let mut budget = Some(ctx.config.response_budget_bytes);
        for e in self.pool.events() {
            let hash = e.hash();
            if theirs.contains(&hash) || included(after, &hash) {
                continue;
            }
            extra.push(hash);
            if let Some(left) = budget {
                budget = left.checked_sub(e.envelope().event.len());
                if budget.is_some() {
                    missing.push(e.clone());
                }
            }
        }
        let holds = if request.difference {
            let lacking = match after {
                None => absent,
                // A chained round's base may have included some of the request's hashes.
                Some(after) => (0u32..)
                    .zip(&request.hashes)
                    .filter(|(i, h)| absent.binary_search(i).is_ok() || after.recently_included(h))
                    .map(|(i, _)| i)
                    .collect(),
            };
            Holdings::Difference { lacking, extra }
        } else {
            Holdings::Listed(unincluded(self.pool.hashes(), after))
        };
        Ok(ProposalReply {
            num,
            prev_hash: base.head.hash,
            holds,
            snapshot_vote: base
                .snapshot_due(num, ctx.params_at(request.chain_block).snapshot_interval),
            missing,
        })
    }

    /// A replica's proposal for the round this node leads.
    pub(crate) fn on_proposal_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        reply: ProposalReply,
    ) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        // Replies built on another head are ignored.
        if reply.num != round.num || reply.prev_hash != round.prev_hash {
            return;
        }
        if !self.stream.nodes.contains(&from) || from == ctx.me {
            return;
        }
        if proposals::fits(&reply, round.asked.len()) {
            round.replies.insert(from, reply);
        } else {
            tracing::debug!(%from, "a proposal names positions past the request; counted silent");
            round.silent.insert(from);
        }
        self.finish_round_if_complete(ctx);
    }

    /// A replica did not answer the proposal request.
    pub(crate) fn on_proposal_failed(&mut self, ctx: &mut Ctx<'_>, from: Address) {
        if let Some(round) = self.round.as_mut() {
            round.silent.insert(from);
            self.finish_round_if_complete(ctx);
        }
    }

    /// Cuts the round once every node it waits for (not Failed) answered or failed to.
    fn finish_round_if_complete(&mut self, ctx: &mut Ctx<'_>) {
        let waited = self.live_peers(ctx);
        if self.round.as_ref().is_some_and(|r| {
            waited
                .iter()
                .all(|n| r.replies.contains_key(n) || r.silent.contains(n))
        }) {
            self.finish_round(ctx);
        }
    }

    /// A round whose replies are late is cut with what came.
    pub(super) fn round_timeout(&mut self, ctx: &mut Ctx<'_>) {
        if self
            .round
            .as_ref()
            .is_some_and(|r| ctx.now_ms >= r.started_ms + ctx.config.proposal_timeout_ms)
        {
            self.finish_round(ctx);
        }
    }

    /// The leader's cut: events more than half of the stream's nodes hold, in pool order, as
    /// many as the rules of the electing block allow (by count and by bytes), into a signed
    /// candidate. Every valid event a replica reported and the leader lacked is admitted first
    /// (and announced), so an event held by one node reaches the others.
    fn finish_round(&mut self, ctx: &mut Ctx<'_>) {
        let Some(round) = self.round.take() else {
            return;
        };
        if !self.builds_on_held(round.num, round.prev_hash) {
            return;
        }
        let _span = tracing::debug_span!("miniblock", num = round.num).entered();
        let n = self.stream.nodes.len();
        // What each replica proposed: it counts toward the cut, and the candidate need not
        // carry those envelopes back to that replica.
        let proposed = Proposals::new(&round.asked, &round.replies);
        let rules = ctx.rules_now();
        let mut admitted = B256Set::default();
        for (from, reply) in &round.replies {
            for event in &reply.missing {
                if !self.pool.contains(&event.hash()) && self.stream.check(event, &rules).is_ok() {
                    admitted.insert(event.hash());
                    self.admit_from_peer(ctx, event.clone(), *from);
                }
            }
        }
        // Who holds a pool event: the replicas that proposed it, and this node unless the
        // event only just came with a proposal.
        let quorum = |h: &B256| {
            let holders = usize::from(!admitted.contains(h)) + proposed.holders(h);
            holders * 2 > n
        };
        let Some(base) = self.state_before(round.num, round.prev_hash) else {
            return;
        };
        let params = ctx.params_at(round.chain_block);
        let rules = ctx.rules_at(round.chain_block);
        let mut bytes = 0usize;
        // A chained round's base holds its candidate's events: they are not cut again.
        let events: Vec<ParsedEvent> = self
            .pool
            .events()
            .filter(|e| quorum(&e.hash()) && base.check(e, &rules).is_ok())
            .filter(|e| {
                let size = e.envelope().event.len();
                let fits = bytes + size <= params.max_miniblock_bytes;
                if fits {
                    bytes += size;
                }
                fits
            })
            .take(params.max_events_per_miniblock)
            .cloned()
            .collect();
        // A snapshot when more than half of the stream's nodes vote for one (this node
        // included), or when it is overdue and the replicas would refuse a miniblock without.
        let due = base.snapshot_due(round.num, params.snapshot_interval);
        let votes = usize::from(due) + round.replies.values().filter(|r| r.snapshot_vote).count();
        let snapshot =
            (due && votes * 2 > n) || base.snapshot_overdue(round.num, params.snapshot_interval);
        if events.is_empty() && !snapshot {
            return;
        }
        let head = base.head;
        let header = pb::MiniblockHeader {
            num: round.num,
            prev_hash: head.hash.to_vec(),
            timestamp_ms: ctx.now_ms.max(head.timestamp_ms + 1),
            event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
            event_num_offset: base.event_count,
            snapshot: snapshot.then(|| base.snapshot_after(&events)),
            prev_snapshot_num: base.last_snapshot_num,
            chain_block: round.chain_block,
        };
        let miniblock = ParsedMiniblock::seal(header, events, ctx.key)
            .expect("a header built from checked events is well formed");
        tracing::debug!(
            hash = %miniblock.hash(),
            events = miniblock.events().len(),
            "candidate built"
        );
        self.offer_candidate(ctx, miniblock, &proposed);
    }
}

/// The minipool's `hashes` that a round's base has not included (see [`included`]).
fn unincluded<'a>(
    hashes: impl Iterator<Item = &'a B256>,
    after_candidate: Option<&Stream>,
) -> Vec<B256> {
    hashes
        .filter(|h| !included(after_candidate, h))
        .copied()
        .collect()
}

/// Whether a round's base included the pool event `hash`: never the head (promotion drops
/// what it includes from the pool, so nothing is looked up), possibly the state after a
/// chained round's base candidate.
fn included(after_candidate: Option<&Stream>, hash: &B256) -> bool {
    after_candidate.is_some_and(|after| after.recently_included(hash))
}
