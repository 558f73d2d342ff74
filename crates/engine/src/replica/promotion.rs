//! Promotion: the registry's logs name the registered head; a replica that holds that
//! candidate promotes it in one store write, and the minipool starts its next generation with
//! the events that are still admissible.

use alloy_primitives::B256;
use alloy_primitives::map::B256Set;
use rill_protocol::ParsedMiniblock;

use super::{Ctx, Replica};
use crate::{Notification, StoreOp};

impl Replica {
    /// The registry logged (or reported, at start) the stream's head `num` with `hash`.
    pub(crate) fn on_registered(&mut self, ctx: &mut Ctx<'_>, num: u64, hash: B256) {
        if num <= self.stream.head.num {
            return;
        }
        self.registered.insert(num, hash);
        self.try_promote(ctx);
        let behind = self
            .registered
            .keys()
            .next_back()
            .is_some_and(|n| *n > self.stream.head.num);
        if behind && self.catch_up.is_none() {
            self.request_catch_up(ctx);
        }
    }

    /// The registry refused a registration of `hash`: another miniblock got that number, or
    /// (a chained candidate's base, registered by its producer too) it was registered
    /// already, which this does not undo.
    pub(crate) fn on_registration_rejected(&mut self, num: u64, hash: B256) {
        if num <= self.stream.head.num || self.registered.get(&num) == Some(&hash) {
            return;
        }
        let _ = self.candidates.take(&hash);
    }

    /// Promotes the candidates the registry registered, in order, as far as this node holds
    /// them.
    pub(super) fn try_promote(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let next = self.stream.head.num + 1;
            let Some(hash) = self.registered.get(&next).copied() else {
                return;
            };
            let Some(candidate) = self.candidates.take(&hash) else {
                return;
            };
            self.promote(ctx, candidate);
        }
    }

    /// Promotes a checked miniblock that follows the head and the registry vouches for.
    pub(super) fn promote(&mut self, ctx: &mut Ctx<'_>, miniblock: ParsedMiniblock) {
        let _span = tracing::info_span!("miniblock", num = miniblock.num()).entered();
        self.stream.apply(&miniblock, &ctx.rules_now());
        self.moved_head(std::slice::from_ref(&miniblock));
        ctx.store(StoreOp::Promote {
            stream: self.id(),
            miniblock: miniblock.clone(),
        });
        let dropped = self.next_generation(ctx);
        tracing::info!(
            hash = %miniblock.hash(),
            events = miniblock.events().len(),
            pool = self.pool.len(),
            dropped,
            "promoted"
        );
        ctx.notify(Notification::MiniblockPromoted {
            stream: self.id(),
            miniblock,
        });
        self.unpark(ctx);
    }

    /// The head moved to the last of `miniblocks`: forgets what they settled (registered
    /// heads, rounds, offers, candidates up to it, their events in the pool).
    pub(super) fn moved_head(&mut self, miniblocks: &[ParsedMiniblock]) {
        let head = self.stream.head.num;
        self.registered = self.registered.split_off(&(head + 1));
        if self.registered.is_empty() {
            self.catch_up = None;
        }
        if self.round.as_ref().is_some_and(|r| r.num() <= head) {
            self.round = None;
        }
        self.candidates.promoted(&self.stream.head);
        self.forget_offer_upto(head);
        // Sized at once: grown one insert at a time, a set of a block's 3,000 events is
        // rehashed a dozen times, on the loop, in the block's burst of work.
        let count = miniblocks.iter().map(|m| m.events().len()).sum();
        let mut included = B256Set::with_capacity_and_hasher(count, Default::default());
        included.extend(
            miniblocks
                .iter()
                .flat_map(|m| m.events().iter().map(|e| e.hash())),
        );
        for hash in &included {
            self.missing.forget(hash);
        }
        self.pool.remove_hashes(&included);
    }

    /// The minipool's next generation: what the new state no longer admits is dropped (and
    /// the store told). Returns how many were dropped.
    pub(super) fn next_generation(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let rules = ctx.rules_now();
        let stream = &self.stream;
        let dropped: Vec<B256> = self
            .pool
            .remove_where(|e| stream.check(e, &rules).is_err())
            .iter()
            .map(|e| e.hash())
            .collect();
        let count = dropped.len();
        if count > 0 {
            ctx.store(StoreOp::DropFromMinipool {
                stream: self.id(),
                hashes: dropped,
            });
        }
        count
    }
}
