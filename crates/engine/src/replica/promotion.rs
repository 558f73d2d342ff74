//! Promotion: the registry's logs name the registered head; a replica that holds that
//! candidate promotes it in one store write, and the minipool starts its next generation with
//! the events that are still admissible.

use std::collections::HashSet;

use alloy_primitives::B256;
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

    /// The registry refused this node's registration: another miniblock got that number.
    pub(crate) fn on_registration_rejected(&mut self, hash: B256) {
        let _ = self.candidates.take(&hash);
    }

    /// Promotes the candidate the registry registered, if this node has it.
    pub(super) fn try_promote(&mut self, ctx: &mut Ctx<'_>) {
        let next = self.stream.head.num + 1;
        let Some(hash) = self.registered.get(&next).copied() else {
            return;
        };
        if let Some(candidate) = self.candidates.take(&hash) {
            self.promote(ctx, candidate);
        }
    }

    /// Promotes a checked miniblock that follows the head and the registry vouches for.
    pub(super) fn promote(&mut self, ctx: &mut Ctx<'_>, miniblock: ParsedMiniblock) {
        let _span = tracing::info_span!("miniblock", num = miniblock.num()).entered();
        self.stream.apply(&miniblock, &ctx.rules_now());
        let head = self.stream.head.num;
        self.registered = self.registered.split_off(&(head + 1));
        if self.registered.is_empty() {
            self.catch_up = None;
        }
        if self.round.as_ref().is_some_and(|r| r.num() <= head) {
            self.round = None;
        }
        self.forget_offer_upto(head);
        self.candidates.promoted(head);
        let included: HashSet<B256> = miniblock.events().iter().map(|e| e.hash()).collect();
        for hash in &included {
            self.missing.forget(hash);
        }
        self.pool.remove_where(|e| included.contains(&e.hash()));
        // The next generation: what the new state no longer admits is dropped.
        let rules = ctx.rules_now();
        let stream = &self.stream;
        let dropped: Vec<B256> = self
            .pool
            .remove_where(|e| stream.check(e, &rules).is_err())
            .iter()
            .map(|e| e.hash())
            .collect();
        tracing::info!(
            hash = %miniblock.hash(),
            events = miniblock.events().len(),
            pool = self.pool.len(),
            dropped = dropped.len(),
            "promoted"
        );
        let id = self.id();
        ctx.store(StoreOp::Promote {
            stream: id,
            miniblock: miniblock.clone(),
        });
        if !dropped.is_empty() {
            ctx.store(StoreOp::DropFromMinipool {
                stream: id,
                hashes: dropped,
            });
        }
        ctx.notify(Notification::MiniblockPromoted {
            stream: id,
            miniblock,
        });
        self.unpark(ctx);
    }
}
