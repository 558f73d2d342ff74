//! Fetching events this node lacks: a peer announced it holds them (`NewEventInPool`) and the
//! full event did not arrive within the fetch delay.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256};

use super::{Ctx, Replica};
use crate::{Reject, Request, Verdict};

/// Give up on an announced event after this many fetches.
const MAX_TRIES: u32 = 8;
/// An announced event whose copy the node is checking already is fetched only after this
/// many fetch delays.
const ARRIVING_DELAYS: u64 = 10;

#[derive(Debug, Default)]
struct Missing {
    announcers: Vec<Address>,
    next_try_ms: u64,
    tries: u32,
}

/// Events peers announced that this node does not hold.
#[derive(Debug, Default)]
pub(super) struct MissingEvents(BTreeMap<B256, Missing>);

impl MissingEvents {
    pub(super) fn forget(&mut self, hash: &B256) {
        self.0.remove(hash);
    }

    /// Forgets `hash`, which arrived: returns the peers that announced holding it.
    pub(super) fn take(&mut self, hash: &B256) -> Vec<Address> {
        self.0
            .remove(hash)
            .map(|m| m.announcers)
            .unwrap_or_default()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Replica {
    /// `NewEventInPool`: `from` holds these events (`arriving`: their copy is being checked).
    pub(crate) fn peer_holds(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        hashes: Vec<B256>,
        arriving: bool,
    ) -> Verdict {
        if !self.is_node(&from) {
            ctx.rejected(self.id(), Some(from), Reject::NotAStreamNode(from));
            return Verdict::Reject;
        }
        for hash in hashes {
            if self.pool.contains(&hash) {
                self.hold(ctx, hash, from);
                continue;
            }
            let delays = if arriving { ARRIVING_DELAYS } else { 1 };
            self.lacking(ctx, from, hash, ctx.config.fetch_delay_ms * delays);
        }
        Verdict::Accept
    }

    /// `from` holds `hash` and this node does not: fetch it from there after `delay_ms`
    /// (unless it arrives first, or a recent miniblock already has it).
    pub(super) fn lacking(&mut self, ctx: &Ctx<'_>, from: Address, hash: B256, delay_ms: u64) {
        if self.pool.contains(&hash) || self.stream.recently_included(&hash) {
            return;
        }
        let first_try = ctx.now_ms + delay_ms;
        let missing = self.missing.0.entry(hash).or_insert_with(|| Missing {
            next_try_ms: first_try,
            ..Missing::default()
        });
        if !missing.announcers.contains(&from) {
            missing.announcers.push(from);
        }
    }

    /// Fetches announced events that never arrived, one request per peer asked.
    pub(super) fn fetch_due(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now_ms;
        let retry_ms = ctx.config.fetch_delay_ms * 4;
        let mut asks: BTreeMap<Address, Vec<B256>> = BTreeMap::new();
        self.missing.0.retain(|hash, missing| {
            if missing.next_try_ms > now {
                return true;
            }
            if missing.tries >= MAX_TRIES || missing.announcers.is_empty() {
                return false;
            }
            let peer = missing.announcers[missing.tries as usize % missing.announcers.len()];
            asks.entry(peer).or_default().push(*hash);
            missing.tries += 1;
            missing.next_try_ms = now + retry_ms;
            true
        });
        let stream = self.id();
        for (peer, hashes) in asks {
            ctx.send(peer, stream, Request::GetEvents(hashes));
        }
    }
}
