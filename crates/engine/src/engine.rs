//! The node-level engine: the streams this node holds, the chain blocks it has seen, and the
//! routing of every input to the stream it concerns.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::Address;
use rill_protocol::{NodeKey, ParsedEvent, ParsedMiniblock, StreamId};

use crate::chain::ChainBlocks;
use crate::config::Timeline;
use crate::electorate::Electorate;
use crate::replica::{Ctx, Replica, StreamView};
use crate::stream::Stream;
use crate::{
    Answer, CandidateVerdict, Effect, EngineConfig, Input, NetworkParams, Notification, PeerGossip,
    ProposalReply, ProposalRequest, Reject, RequestKind, Response, StoreOp, Verdict,
};

/// A stream as the store holds it, to load it into the engine (after a restart, or when it is
/// needed again after an eviction).
#[derive(Clone, Debug)]
pub struct RestoredStream {
    /// The stream.
    pub id: StreamId,
    /// Its nodes.
    pub nodes: Vec<Address>,
    /// Promoted miniblocks in order, ending at the head. They include the base the state starts
    /// from (the genesis, or the latest miniblock that carries a snapshot) and reach back
    /// `recency_window` miniblocks before the head where the store has them; nothing older is
    /// needed, so loading does not grow with the stream's history.
    pub miniblocks: Vec<ParsedMiniblock>,
    /// The minipool, in arrival order.
    pub minipool: Vec<ParsedEvent>,
    /// The stored candidates (several leaders may race for the same number).
    pub candidates: Vec<ParsedMiniblock>,
    /// History skipped by a jump to a peer's snapshot, not backfilled yet.
    pub gap: Option<crate::Gap>,
}

/// Whether `genesis` is a valid start of stream `id` on `nodes`: the check every node makes
/// when the registry allocates a stream, made before allocating one.
pub fn check_genesis(
    id: StreamId,
    nodes: &[Address],
    genesis: &ParsedMiniblock,
) -> Result<(), Reject> {
    Stream::from_genesis(id, nodes.to_vec(), genesis).map(|_| ())
}

/// The engine of one node: every stream it holds.
#[derive(Debug)]
pub struct Engine {
    key: NodeKey,
    me: Address,
    config: EngineConfig,
    params: Timeline<NetworkParams>,
    electorate: Electorate,
    streams: BTreeMap<StreamId, Replica>,
    /// The streams where a round this node leads, or its candidate's wait for a write quorum,
    /// is in progress (kept up to date by every call into a replica).
    leading: BTreeSet<StreamId>,
    blocks: ChainBlocks,
}

impl Engine {
    /// An engine for the node with `key`.
    pub fn new(key: NodeKey, config: EngineConfig) -> Self {
        Self {
            me: key.address(),
            key,
            params: Timeline::new(config.params),
            config,
            electorate: Electorate::default(),
            streams: BTreeMap::new(),
            leading: BTreeSet::new(),
            blocks: ChainBlocks::default(),
        }
    }

    /// The network's rules in force now.
    pub fn params(&self) -> NetworkParams {
        self.params.latest()
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// The parameters in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A stream this node holds.
    pub fn stream(&self, id: &StreamId) -> Option<&(impl StreamView + use<>)> {
        self.streams.get(id)
    }

    /// The streams this node holds.
    pub fn stream_ids(&self) -> impl Iterator<Item = &StreamId> {
        self.streams.keys()
    }

    /// Runs `f` on the stream's replica with a fresh context, inside the stream's span.
    fn on_stream<T>(
        &mut self,
        now_ms: u64,
        id: StreamId,
        f: impl FnOnce(&mut Replica, &mut Ctx<'_>) -> T,
    ) -> Option<(T, Vec<Effect>)> {
        if !self.streams.contains_key(&id) {
            return None;
        }
        let _span = tracing::info_span!("stream", id = %id).entered();
        self.on_replica(now_ms, id, f)
    }

    /// [`Self::on_stream`] without the span, for what runs once per event (a client's event,
    /// a peer's gossip) and logs nothing: a span with the stream's id, entered thousands of
    /// times a second, was about 1 % of a node's CPU (BENCHMARKS.md).
    fn on_replica<T>(
        &mut self,
        now_ms: u64,
        id: StreamId,
        f: impl FnOnce(&mut Replica, &mut Ctx<'_>) -> T,
    ) -> Option<(T, Vec<Effect>)> {
        let replica = self.streams.get_mut(&id)?;
        let mut ctx = Ctx {
            me: self.me,
            key: &self.key,
            config: &self.config,
            params: &self.params,
            electorate: &self.electorate,
            blocks: &self.blocks,
            now_ms,
            effects: Vec::new(),
        };
        let out = f(replica, &mut ctx);
        if replica.leading() {
            self.leading.insert(id);
        } else {
            self.leading.remove(&id);
        }
        Some((out, ctx.effects))
    }

    /// Loads a stream from the store: its state from the base (genesis or latest snapshot),
    /// the miniblocks after it applied, the older ones of the window remembered. Who holds its
    /// minipool's events is forgotten, so they are pushed to the stream's other nodes at the
    /// first tick.
    pub fn restore(&mut self, restored: RestoredStream) -> Result<(), Reject> {
        let rules = self.config.rules(&self.params.latest());
        let miniblocks = restored.miniblocks;
        let base_at = miniblocks
            .iter()
            .rposition(|m| m.num() == 0 || m.header().snapshot.is_some())
            .ok_or(Reject::BadSnapshot(
                "no genesis or snapshot among the stored miniblocks",
            ))?;
        let mut stream = Stream::from_base(restored.id, restored.nodes, &miniblocks[base_at])?;
        for older in miniblocks[..base_at].iter().rev() {
            stream.remember_older(older)?;
        }
        for miniblock in &miniblocks[base_at + 1..] {
            if miniblock.num() != stream.head.num + 1 || miniblock.prev_hash() != stream.head.hash {
                return Err(Reject::BrokenChain {
                    num: miniblock.num(),
                });
            }
            stream.apply(miniblock, &rules);
        }
        let mut replica = Replica::new(stream);
        for event in restored.minipool {
            if replica.stream.check(&event, &rules).is_ok() {
                replica.pool.insert(event, self.me, 0);
            }
        }
        for candidate in restored.candidates {
            replica.restore_candidate(candidate);
        }
        replica.set_gap(restored.gap);
        self.leading.remove(&restored.id);
        self.streams.insert(restored.id, replica);
        Ok(())
    }

    /// Whether a round this node leads is in progress on any stream: proposals still coming,
    /// or a candidate waiting for its write quorum. When none is, every registration the
    /// rounds of the last block will make has been made.
    pub fn leads_rounds(&self) -> bool {
        !self.leading.is_empty()
    }

    /// Whether the stream is loaded in the engine.
    pub fn is_loaded(&self, id: &StreamId) -> bool {
        self.streams.contains_key(id)
    }

    /// Drops an idle stream from memory: one with nothing in its minipool, no candidate, no
    /// round, no fetch and no catch-up, whose state is exactly what the store holds. Returns
    /// whether it was dropped; a busy stream stays.
    pub fn evict(&mut self, id: &StreamId) -> bool {
        if self.streams.get(id).is_some_and(Replica::is_idle) {
            self.streams.remove(id);
            return true;
        }
        false
    }

    /// A client's event: admitted into the minipool and gossiped, or refused with the reason.
    pub fn add_event(
        &mut self,
        now_ms: u64,
        stream: StreamId,
        event: ParsedEvent,
    ) -> Result<Vec<Effect>, Reject> {
        let (result, effects) = self
            .on_replica(now_ms, stream, |replica, ctx| {
                replica.add_client_event(ctx, event)
            })
            .ok_or(Reject::UnknownStream(stream))?;
        result.map(|()| effects)
    }

    /// A leader asks for this node's proposal.
    pub fn propose(
        &mut self,
        now_ms: u64,
        from: Address,
        stream: StreamId,
        request: &ProposalRequest,
    ) -> Answer<Result<ProposalReply, Reject>> {
        match self.on_stream(now_ms, stream, |replica, ctx| {
            replica.propose(ctx, from, request)
        }) {
            Some((answer, effects)) => Answer { answer, effects },
            None => Answer {
                answer: Err(Reject::UnknownStream(stream)),
                effects: Vec::new(),
            },
        }
    }

    /// A leader's candidate.
    pub fn candidate(
        &mut self,
        now_ms: u64,
        from: Address,
        stream: StreamId,
        miniblock: ParsedMiniblock,
    ) -> Answer<CandidateVerdict> {
        match self.on_stream(now_ms, stream, |replica, ctx| {
            replica.on_candidate(ctx, from, miniblock)
        }) {
            Some((answer, effects)) => Answer { answer, effects },
            None => Answer {
                answer: CandidateVerdict::Refused(Reject::UnknownStream(stream)),
                effects: Vec::new(),
            },
        }
    }

    /// Gossip from another node: the verdict says whether the sender behaved.
    pub fn gossip(
        &mut self,
        now_ms: u64,
        from: Address,
        stream: StreamId,
        gossip: PeerGossip,
    ) -> Answer<Verdict> {
        let outcome = self.on_replica(now_ms, stream, |replica, ctx| match gossip {
            PeerGossip::Events(events) => replica.peer_events(ctx, from, events),
            PeerGossip::InPool(hashes) => replica.peer_holds(ctx, from, hashes, false),
            PeerGossip::InPoolArriving(hashes) => replica.peer_holds(ctx, from, hashes, true),
            PeerGossip::HeldAlready(hashes) => replica.peer_sent_held(ctx, from, hashes),
        });
        match outcome {
            Some((answer, effects)) => Answer { answer, effects },
            // A stream this node does not hold (yet): nothing wrong with the sender.
            None => Answer {
                answer: Verdict::Ignore,
                effects: Vec::new(),
            },
        }
    }

    /// Everything that only causes effects.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        match input {
            Input::StreamAllocated {
                stream,
                nodes,
                genesis,
            } => self.allocate(stream, nodes, genesis),
            Input::Tick => {
                let due: Vec<StreamId> = self
                    .streams
                    .iter()
                    .filter(|(_, replica)| replica.tick_due(now_ms))
                    .map(|(id, _)| *id)
                    .collect();
                self.on_streams(now_ms, due, Replica::on_tick)
            }
            Input::ChainBlock { number, prevrandao } => {
                self.blocks.insert(number, prevrandao);
                self.each_stream(now_ms, |replica, ctx| {
                    replica.on_block(ctx, number, prevrandao)
                })
            }
            Input::ChainHead(number) => {
                self.blocks.head_at_least(number);
                Vec::new()
            }
            Input::Params { from_block, params } => {
                tracing::info!(from_block, ?params, "network rules change");
                self.params.set(from_block, params);
                Vec::new()
            }
            Input::NodeStatus {
                node,
                from_block,
                status,
            } => {
                self.electorate.set(node, from_block, status);
                Vec::new()
            }
            Input::MiniblockRegistered { stream, num, hash } => self
                .on_stream(now_ms, stream, |replica, ctx| {
                    replica.on_registered(ctx, num, hash)
                })
                .map(|(_, effects)| effects)
                .unwrap_or_default(),
            Input::RegistrationRejected { stream, num, hash } => {
                if let Some(replica) = self.streams.get_mut(&stream) {
                    replica.on_registration_rejected(num, hash);
                }
                Vec::new()
            }
            Input::Response {
                from,
                stream,
                response,
            } => {
                if let Response::Miniblocks { randomness, .. } = &response {
                    for (number, prevrandao) in randomness {
                        self.blocks.remember(*number, *prevrandao);
                    }
                }
                self.on_stream(now_ms, stream, |replica, ctx| {
                    on_response(replica, ctx, from, response)
                })
                .map(|(_, effects)| effects)
                .unwrap_or_default()
            }
        }
    }

    fn each_stream(
        &mut self,
        now_ms: u64,
        f: impl FnMut(&mut Replica, &mut Ctx<'_>),
    ) -> Vec<Effect> {
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        self.on_streams(now_ms, ids, f)
    }

    fn on_streams(
        &mut self,
        now_ms: u64,
        ids: Vec<StreamId>,
        mut f: impl FnMut(&mut Replica, &mut Ctx<'_>),
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for id in ids {
            if let Some(((), more)) = self.on_stream(now_ms, id, &mut f) {
                effects.extend(more);
            }
        }
        effects
    }

    fn allocate(
        &mut self,
        id: StreamId,
        nodes: Vec<Address>,
        genesis: ParsedMiniblock,
    ) -> Vec<Effect> {
        if self.streams.contains_key(&id) || !nodes.contains(&self.me) {
            return Vec::new();
        }
        match Stream::from_genesis(id, nodes.clone(), &genesis) {
            Ok(stream) => {
                self.streams.insert(id, Replica::new(stream));
                vec![
                    Effect::Store(StoreOp::CreateStream {
                        stream: id,
                        nodes,
                        genesis: genesis.clone(),
                    }),
                    Effect::Notify(Notification::MiniblockPromoted {
                        stream: id,
                        miniblock: genesis,
                    }),
                ]
            }
            Err(reason) => vec![Effect::Rejected {
                stream: id,
                from: None,
                reason,
            }],
        }
    }
}

fn on_response(replica: &mut Replica, ctx: &mut Ctx<'_>, from: Address, response: Response) {
    match response {
        Response::Proposal(reply) => replica.on_proposal_reply(ctx, from, reply),
        Response::Events(events) => {
            // Fetched events: the verdict only matters for gossip.
            let _ = replica.peer_events(ctx, from, events);
        }
        Response::Miniblocks {
            miniblocks,
            candidates,
            ..
        } => replica.on_fetched_miniblocks(ctx, from, miniblocks, candidates),
        Response::Failed(RequestKind::Proposal) => replica.on_proposal_failed(ctx, from),
        answer @ (Response::CandidateSaved(_)
        | Response::CandidateDeferred(_)
        | Response::CandidateRefused(_)
        | Response::Failed(RequestKind::SaveCandidate(_))) => {
            replica.on_candidate_answer(ctx, from, answer)
        }
        // Fetches are retried on ticks.
        Response::Failed(RequestKind::GetEvents | RequestKind::GetMiniblocks) => {}
    }
}
