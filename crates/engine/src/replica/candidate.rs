//! Candidates: the leader hands its signed candidate to the replicas and registers it; a
//! replica checks a candidate (elected leader, links, timestamp, offsets, snapshot, every
//! event) before it stores it. Every candidate for the next number is kept until one is
//! promoted: leaders may race, and any of them may be the one the registry accepts.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256};
use rill_protocol::ParsedMiniblock;

use super::{Ctx, Replica};
use crate::{CandidateVerdict, Effect, Registration, Reject, Request, StoreOp, elect_leader};

/// At most this many candidates wait for a chain block this node has not seen yet.
const MAX_DEFERRED: usize = 64;

/// The candidates a replica holds for `head + 1`, and those waiting for their chain block.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    /// By hash, with the chain block that elected their leader.
    held: BTreeMap<B256, (ParsedMiniblock, u64)>,
    deferred: Vec<(Address, ParsedMiniblock)>,
}

impl Candidates {
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

    /// Forgets candidates up to `head`.
    pub(super) fn promoted(&mut self, head: u64) {
        self.held.retain(|_, (c, _)| c.num() > head);
    }
}

impl Replica {
    /// The leader's side: store the candidate, send it to the other nodes, and queue its
    /// registration.
    pub(super) fn offer_candidate(
        &mut self,
        ctx: &mut Ctx<'_>,
        miniblock: ParsedMiniblock,
        chain_block: u64,
    ) {
        let stream = self.id();
        ctx.store(StoreOp::StoreCandidate {
            stream,
            miniblock: miniblock.clone(),
        });
        let peers: Vec<Address> = self.peers(ctx.me).collect();
        for node in peers {
            ctx.send(node, stream, Request::SaveCandidate(miniblock.clone()));
        }
        ctx.effects.push(Effect::Register(Registration {
            stream,
            prev_hash: self.stream.head.hash,
            hash: miniblock.hash(),
            num: miniblock.num(),
        }));
        debug_assert_eq!(miniblock.header().chain_block, chain_block);
        self.candidates.keep(miniblock);
        // The registration may have been seen before the candidate (a fast chain).
        self.try_promote(ctx);
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
        if num > head + 1 {
            // This node is behind: it catches up to the registered chain first.
            return CandidateVerdict::Refused(Reject::WrongNum {
                expected: head + 1,
                got: num,
            });
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
        if self.candidates.held.contains_key(&miniblock.hash()) {
            return CandidateVerdict::Stored;
        }
        ctx.store(StoreOp::StoreCandidate {
            stream: self.id(),
            miniblock: miniblock.clone(),
        });
        self.candidates.keep(miniblock);
        self.try_promote(ctx);
        CandidateVerdict::Stored
    }

    /// Candidates that waited for a chain block: checked again now that one arrived.
    pub(super) fn recheck_deferred(&mut self, ctx: &mut Ctx<'_>) {
        for (from, miniblock) in std::mem::take(&mut self.candidates.deferred) {
            let _ = self.on_candidate(ctx, from, miniblock);
        }
    }

    /// A replica's checks of a candidate for `head + 1`.
    fn check_candidate(&self, ctx: &Ctx<'_>, miniblock: &ParsedMiniblock) -> Result<(), Reject> {
        let header = miniblock.header();
        let block = header.chain_block;
        let prevrandao = ctx
            .blocks
            .get(block)
            .ok_or(Reject::UnknownChainBlock(block))?;
        let leader = elect_leader(&self.id(), block, &prevrandao, &self.stream.nodes);
        if leader != miniblock.producer() {
            return Err(Reject::WrongLeader {
                expected: leader,
                got: miniblock.producer(),
                block,
            });
        }
        self.check_links(ctx, miniblock)?;
        let snapshot_due = ctx.config.snapshot_due(miniblock.num());
        match (&header.snapshot, snapshot_due) {
            (Some(snapshot), true)
                if *snapshot == self.stream.snapshot_after(miniblock.events()) => {}
            (None, false) => {}
            _ => return Err(Reject::BadHeader("snapshot missing, unexpected or wrong")),
        }
        Ok(())
    }

    /// Checks that hold for any next miniblock, candidate or fetched: number, prev hash,
    /// timestamp, offsets, size, and every event admissible on top of the head.
    pub(super) fn check_links(
        &self,
        ctx: &Ctx<'_>,
        miniblock: &ParsedMiniblock,
    ) -> Result<(), Reject> {
        let head = self.stream.head;
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
        if header.event_num_offset != self.stream.event_count
            || header.prev_snapshot_num != self.stream.last_snapshot_num
        {
            return Err(Reject::BadHeader(
                "event offset or previous snapshot number",
            ));
        }
        if miniblock.events().len() > ctx.config.max_events_per_miniblock {
            return Err(Reject::BadHeader("too many events"));
        }
        let rules = ctx.config.rules();
        let mut seen = BTreeSet::new();
        for (index, event) in miniblock.events().iter().enumerate() {
            let reason = if !seen.insert(event.hash()) {
                Some(Reject::Duplicate(event.hash()))
            } else {
                self.stream.check(event, &rules).err()
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
}
