//! A leader's round: on a chain block that elects this node, ask the other nodes for their
//! proposals, cut the events that more than half of the stream's nodes hold into a signed
//! candidate, and hand it to the replicas. Also the replica's side: answering a proposal
//! request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, pb};

use super::{Ctx, Replica};
use crate::{ProposalReply, ProposalRequest, Reject, Request, elect_leader};

/// A round this node leads.
#[derive(Debug)]
pub(super) struct Round {
    num: u64,
    prev_hash: B256,
    chain_block: u64,
    started_ms: u64,
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
    /// (events, or a snapshot due), unless a round, a fresh candidate or a catch-up is pending.
    pub(super) fn maybe_lead(&mut self, ctx: &mut Ctx<'_>, number: u64, prevrandao: B256) {
        if self.round.is_some()
            || self.catch_up.is_some()
            || self
                .candidates
                .fresh(number, ctx.config.candidate_ttl_blocks)
        {
            return;
        }
        let next = self.stream.head.num + 1;
        if self.pool.is_empty() && !ctx.config.snapshot_due(next) {
            return;
        }
        if elect_leader(&self.id(), number, &prevrandao, &self.stream.nodes) != ctx.me {
            return;
        }
        let _span = tracing::debug_span!("miniblock", num = next).entered();
        tracing::debug!(
            chain_block = number,
            pool = self.pool.len(),
            "leading a round"
        );
        let request = ProposalRequest {
            num: next,
            prev_hash: self.stream.head.hash,
            hashes: self.pool.hashes().to_vec(),
            chain_block: number,
        };
        let stream = self.id();
        let peers: Vec<Address> = self.peers(ctx.me).collect();
        for node in &peers {
            ctx.send(*node, stream, Request::Proposal(request.clone()));
        }
        self.round = Some(Round {
            num: next,
            prev_hash: self.stream.head.hash,
            chain_block: number,
            started_ms: ctx.now_ms,
            replies: BTreeMap::new(),
            silent: BTreeSet::new(),
        });
        if peers.is_empty() {
            self.finish_round(ctx);
        }
    }

    /// A leader asks for this node's proposal: its minipool hashes, its snapshot vote, and the
    /// events the leader lacks.
    pub(crate) fn propose(
        &self,
        ctx: &Ctx<'_>,
        from: Address,
        request: &ProposalRequest,
    ) -> Result<ProposalReply, Reject> {
        if !self.is_node(&from) {
            return Err(Reject::NotAStreamNode(from));
        }
        let theirs: BTreeSet<&B256> = request.hashes.iter().collect();
        let num = self.stream.head.num + 1;
        Ok(ProposalReply {
            num,
            prev_hash: self.stream.head.hash,
            hashes: self.pool.hashes().to_vec(),
            snapshot_vote: ctx.config.snapshot_due(num),
            missing: self
                .pool
                .events()
                .filter(|e| !theirs.contains(&e.hash()))
                .cloned()
                .collect(),
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
        round.replies.insert(from, reply);
        self.finish_round_if_complete(ctx);
    }

    /// A replica did not answer the proposal request.
    pub(crate) fn on_proposal_failed(&mut self, ctx: &mut Ctx<'_>, from: Address) {
        if let Some(round) = self.round.as_mut() {
            round.silent.insert(from);
            self.finish_round_if_complete(ctx);
        }
    }

    fn finish_round_if_complete(&mut self, ctx: &mut Ctx<'_>) {
        let n = self.stream.nodes.len();
        if self
            .round
            .as_ref()
            .is_some_and(|r| r.replies.len() + r.silent.len() + 1 >= n)
        {
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

    /// The leader's cut: events more than half of the stream's nodes hold, in pool order, then
    /// the quorum events it lacked (taken from the replies), into a signed candidate.
    fn finish_round(&mut self, ctx: &mut Ctx<'_>) {
        let Some(round) = self.round.take() else {
            return;
        };
        let head = self.stream.head;
        if round.num != head.num + 1 || round.prev_hash != head.hash {
            return;
        }
        let _span = tracing::debug_span!("miniblock", num = round.num).entered();
        let n = self.stream.nodes.len();
        let mut count: HashMap<B256, usize> = HashMap::new();
        for hash in self.pool.hashes() {
            *count.entry(*hash).or_default() += 1;
        }
        for reply in round.replies.values() {
            for hash in reply.hashes.iter().collect::<BTreeSet<_>>() {
                *count.entry(*hash).or_default() += 1;
            }
        }
        let quorum = |h: &B256| count.get(h).copied().unwrap_or(0) * 2 > n;
        // Quorum events the leader lacks: admit them from the replies.
        let rules = ctx.config.rules();
        for reply in round.replies.values() {
            for event in &reply.missing {
                let hash = event.hash();
                if quorum(&hash)
                    && !self.pool.contains(&hash)
                    && self.stream.check(event, &rules).is_ok()
                {
                    self.admit(ctx, event.clone());
                }
            }
        }
        let events: Vec<ParsedEvent> = self
            .pool
            .events()
            .filter(|e| quorum(&e.hash()))
            .take(ctx.config.max_events_per_miniblock)
            .cloned()
            .collect();
        let snapshot_due = ctx.config.snapshot_due(round.num);
        if events.is_empty() && !snapshot_due {
            return;
        }
        let header = pb::MiniblockHeader {
            num: round.num,
            prev_hash: head.hash.to_vec(),
            timestamp_ms: ctx.now_ms.max(head.timestamp_ms + 1),
            event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
            event_num_offset: self.stream.event_count,
            snapshot: snapshot_due.then(|| self.stream.snapshot_after(&events)),
            prev_snapshot_num: self.stream.last_snapshot_num,
            chain_block: round.chain_block,
        };
        let miniblock = ParsedMiniblock::seal(header, events, ctx.key)
            .expect("a header built from checked events is well formed");
        tracing::debug!(
            hash = %miniblock.hash(),
            events = miniblock.events().len(),
            "candidate built"
        );
        self.offer_candidate(ctx, miniblock, round.chain_block);
    }
}
