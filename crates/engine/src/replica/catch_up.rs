//! Catch-up: the registry names a head this node does not have, so it fetches the miniblocks
//! in between from the stream's other nodes (one at a time, the next one on every retry) and
//! promotes those the registered chain vouches for.

use alloy_primitives::Address;
use rill_protocol::ParsedMiniblock;

use super::{Ctx, Replica};
use crate::Request;

/// A catch-up in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct CatchUp {
    asked_ms: u64,
    attempt: usize,
}

impl Replica {
    /// Asks the next peer for the miniblocks between the head and the registered head.
    pub(super) fn request_catch_up(&mut self, ctx: &mut Ctx<'_>) {
        let Some(&to) = self.registered.keys().next_back() else {
            self.catch_up = None;
            return;
        };
        let peers: Vec<Address> = self.peers(ctx.me).collect();
        if peers.is_empty() {
            return;
        }
        let attempt = self.catch_up.map_or(0, |c| c.attempt + 1);
        let from = self.stream.head.num + 1;
        tracing::debug!(from, to, attempt, "catching up");
        ctx.send(
            peers[attempt % peers.len()],
            self.id(),
            Request::GetMiniblocks { from, to },
        );
        self.catch_up = Some(CatchUp {
            asked_ms: ctx.now_ms,
            attempt,
        });
    }

    /// Retries a catch-up whose answer is late.
    pub(super) fn catch_up_due(&mut self, ctx: &mut Ctx<'_>) {
        if self
            .catch_up
            .is_some_and(|c| ctx.now_ms >= c.asked_ms + ctx.config.catch_up_retry_ms)
        {
            self.request_catch_up(ctx);
        }
    }

    /// Miniblocks a peer sent: the run that links from the head is promoted up to the last
    /// miniblock the registry vouches for (the prev-hash links vouch for the ones before it).
    /// A well-formed next miniblock that is not registered yet is kept as a candidate.
    pub(crate) fn on_fetched_miniblocks(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        mut miniblocks: Vec<ParsedMiniblock>,
    ) {
        miniblocks.sort_by_key(|m| m.num());
        miniblocks.dedup_by_key(|m| m.num());
        let head = self.stream.head.num;
        let run: Vec<ParsedMiniblock> = miniblocks
            .into_iter()
            .filter(|m| m.num() > head)
            .enumerate()
            .take_while(|(i, m)| m.num() == head + 1 + *i as u64)
            .map(|(_, m)| m)
            .collect();
        let Some(last) = run
            .iter()
            .rposition(|m| self.registered.get(&m.num()) == Some(&m.hash()))
        else {
            if let Some(next) = run.into_iter().next()
                && self.check_links(ctx, &next).is_ok()
            {
                self.candidates.keep(next);
            }
            return;
        };
        for miniblock in run.into_iter().take(last + 1) {
            if let Err(reason) = self.check_links(ctx, &miniblock) {
                ctx.rejected(self.id(), Some(from), reason);
                return;
            }
            self.promote(ctx, miniblock);
        }
    }
}
