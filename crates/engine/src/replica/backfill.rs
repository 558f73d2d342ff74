//! Backfill: a replica that jumped to a peer's snapshot serves from there at once, and fills
//! in the history it skipped in the background, newest first. Each page is checked backwards
//! from the miniblock above the gap: a fetched miniblock is kept only if its hash is the
//! `prev_hash` of the one above it, so nothing unvouched is stored. Once the gap is closed the
//! replica holds the whole chain, as every replica promises.

use alloy_primitives::{Address, B256};
use rill_protocol::ParsedMiniblock;

use super::{Ctx, Replica};
use crate::{Request, StoreOp};

/// Miniblocks asked for per page at first; halved when a peer's page (bounded in bytes) does
/// not reach the gap's top, so large miniblocks still come through.
const SPAN: u64 = 64;

/// Miniblocks a replica skipped: `down_to..below` are missing, and miniblock `below - 1`
/// must hash to `hash` (the `prev_hash` of miniblock `below`, which the replica holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The first missing number.
    pub down_to: u64,
    /// The first number held above the gap.
    pub below: u64,
    /// What miniblock `below - 1` hashes to.
    pub hash: B256,
}

/// A backfill in progress.
#[derive(Debug)]
pub(super) struct Backfill {
    pub(super) gap: Gap,
    asked_ms: Option<u64>,
    attempt: usize,
    span: u64,
}

impl Backfill {
    pub(super) fn new(gap: Gap) -> Self {
        Self {
            gap,
            asked_ms: None,
            attempt: 0,
            span: SPAN,
        }
    }
}

impl Replica {
    /// Asks a peer for the top of the gap when no request is out (or the last one is late),
    /// and only once caught up: the head comes first.
    pub(super) fn backfill_due(&mut self, ctx: &mut Ctx<'_>) {
        if self.catch_up.is_some() {
            return;
        }
        let peers = self.live_peers(ctx);
        let Some(backfill) = self.backfill.as_mut() else {
            return;
        };
        if peers.is_empty()
            || backfill
                .asked_ms
                .is_some_and(|at| ctx.now_ms < at + ctx.config.catch_up_retry_ms)
        {
            return;
        }
        if backfill.asked_ms.is_some() {
            backfill.attempt += 1;
        }
        let Gap { down_to, below, .. } = backfill.gap;
        let from = below.saturating_sub(backfill.span).max(down_to);
        backfill.asked_ms = Some(ctx.now_ms);
        let to = peers[backfill.attempt % peers.len()];
        ctx.send(
            to,
            self.id(),
            Request::GetMiniblocks {
                from,
                to: below - 1,
            },
        );
    }

    /// A page that may close part of the gap: kept from the top down while each miniblock is
    /// the one the miniblock above it names. Returns whether the page was for the gap.
    pub(super) fn on_backfill_page(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        miniblocks: &[ParsedMiniblock],
    ) -> bool {
        let Some(backfill) = self.backfill.as_mut() else {
            return false;
        };
        let Gap {
            down_to,
            below,
            mut hash,
        } = backfill.gap;
        if miniblocks
            .iter()
            .all(|m| m.num() >= below || m.num() < down_to)
        {
            return false;
        }
        let mut kept = Vec::new();
        for miniblock in miniblocks.iter().rev() {
            let expected = below - 1 - kept.len() as u64;
            if miniblock.num() > expected {
                continue;
            }
            if miniblock.num() < expected || miniblock.hash() != hash || expected < down_to {
                break;
            }
            hash = miniblock.prev_hash();
            kept.push(miniblock.clone());
        }
        backfill.asked_ms = None;
        if kept.is_empty() {
            // The page did not reach the top of the gap (large miniblocks), or the peer sent
            // something else: smaller pages, from the next peer.
            tracing::debug!(%from, "backfill page does not link; asking for less");
            backfill.span = (backfill.span / 2).max(1);
            backfill.attempt += 1;
            return true;
        }
        kept.reverse();
        let lowest = kept[0].num();
        let gap = (lowest > down_to).then_some(Gap {
            down_to,
            below: lowest,
            hash,
        });
        tracing::debug!(from = lowest, to = below - 1, "backfilled");
        match gap {
            Some(gap) => backfill.gap = gap,
            None => {
                tracing::info!("backfill complete: the replica holds the whole chain");
                self.backfill = None;
            }
        }
        ctx.store(StoreOp::Backfill {
            stream: self.id(),
            miniblocks: kept,
            gap,
        });
        true
    }
}
