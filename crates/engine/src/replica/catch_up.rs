//! Catch-up: the registry names a head this node does not have, so it fetches the miniblocks
//! in between from the stream's other nodes, page by page (answers are bounded in bytes), and
//! promotes those the registered chain vouches for.
//!
//! The registry holds only the latest head, so a page usually ends before the registered
//! miniblock that vouches for it. Pages therefore extend a run that links from this node's
//! head, each miniblock checked at once for its link and its producer (the leader elected at
//! its chain block), and the run is promoted as soon as it reaches a registered miniblock: the
//! prev-hash links vouch for everything before it. A peer that does not answer, or sends
//! nothing that links, is left for the next one.

use alloy_primitives::Address;
use rill_protocol::ParsedMiniblock;

use super::{Ctx, Replica};
use crate::Request;

/// At most this many bytes of fetched, not yet vouched miniblocks are held in memory; past
/// that the run is dropped and fetched again from another peer.
const MAX_UNVOUCHED_BYTES: usize = 512 * 1024 * 1024;

/// A catch-up in progress.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    asked_ms: u64,
    attempt: usize,
    /// Fetched miniblocks that link from the head, not vouched for yet.
    run: Vec<ParsedMiniblock>,
    run_bytes: usize,
}

fn size(miniblock: &ParsedMiniblock) -> usize {
    miniblock
        .events()
        .iter()
        .map(|e| e.envelope().event.len())
        .sum::<usize>()
        + miniblock.header_event().envelope().event.len()
}

impl Replica {
    /// Asks the next peer for the miniblocks between the head and the registered head.
    pub(super) fn request_catch_up(&mut self, ctx: &mut Ctx<'_>) {
        let attempt = self.catch_up.as_ref().map_or(0, |c| c.attempt + 1);
        self.ask_page(ctx, attempt);
    }

    /// Asks peer number `attempt` (modulo the peers) for the next page after the run.
    fn ask_page(&mut self, ctx: &mut Ctx<'_>, attempt: usize) {
        let Some(&to) = self.registered.keys().next_back() else {
            self.catch_up = None;
            return;
        };
        let peers = self.live_peers(ctx);
        if peers.is_empty() {
            return;
        }
        let catch_up = self.catch_up.get_or_insert_with(CatchUp::default);
        let from = self.stream.head.num + 1 + catch_up.run.len() as u64;
        tracing::debug!(from, to, attempt, "catching up");
        catch_up.asked_ms = ctx.now_ms;
        catch_up.attempt = attempt;
        ctx.send(
            peers[attempt % peers.len()],
            self.id(),
            Request::GetMiniblocks { from, to },
        );
    }

    /// Retries a catch-up whose answer is late (with the next peer).
    pub(super) fn catch_up_due(&mut self, ctx: &mut Ctx<'_>) {
        if self
            .catch_up
            .as_ref()
            .is_some_and(|c| ctx.now_ms >= c.asked_ms + ctx.config.catch_up_retry_ms)
        {
            self.request_catch_up(ctx);
        }
    }

    /// A page of a peer's promoted miniblocks, and the candidates it holds after them. The
    /// promoted ones that extend the run from the head are checked (link, producer) and added
    /// to it; one that does not link means the run went astray, and it starts over. The run is
    /// promoted up to the last registered miniblock in it. A well-formed next candidate is
    /// kept. If the page helped and more is registered, the same peer is asked for the next
    /// page at once.
    pub(crate) fn on_fetched_miniblocks(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        mut miniblocks: Vec<ParsedMiniblock>,
        candidates: Vec<ParsedMiniblock>,
    ) {
        miniblocks.sort_by_key(|m| m.num());
        miniblocks.dedup_by_key(|m| m.num());
        let Some(mut catch_up) = self.catch_up.take() else {
            // Not catching up: at most a candidate for the next number.
            return self.keep_fetched_candidate(ctx, candidates);
        };
        let before = catch_up.run.len();
        for miniblock in miniblocks {
            let expected = self.stream.head.num + 1 + catch_up.run.len() as u64;
            if miniblock.num() < expected {
                continue;
            }
            if miniblock.num() > expected {
                break;
            }
            let prev = catch_up
                .run
                .last()
                .map_or(self.stream.head.hash, ParsedMiniblock::hash);
            if miniblock.prev_hash() != prev {
                tracing::debug!(
                    num = miniblock.num(),
                    "fetched miniblock does not link; starting over"
                );
                catch_up.run.clear();
                catch_up.run_bytes = 0;
                break;
            }
            if let Err(reason) = self.check_producer(ctx, &miniblock) {
                ctx.rejected(self.id(), Some(from), reason);
                break;
            }
            catch_up.run_bytes += size(&miniblock);
            catch_up.run.push(miniblock);
        }
        let progressed = catch_up.run.len() > before;
        // Promote up to the last miniblock the registry vouches for.
        if let Some(last) = catch_up
            .run
            .iter()
            .rposition(|m| self.registered.get(&m.num()) == Some(&m.hash()))
        {
            let rest = catch_up.run.split_off(last + 1);
            let vouched = std::mem::replace(&mut catch_up.run, rest);
            catch_up.run_bytes = catch_up.run.iter().map(size).sum();
            for miniblock in vouched {
                if let Err(reason) = self.check_links(ctx, &miniblock) {
                    ctx.rejected(self.id(), Some(from), reason);
                    catch_up.run.clear();
                    catch_up.run_bytes = 0;
                    break;
                }
                self.promote(ctx, miniblock);
            }
        }
        if catch_up.run_bytes > MAX_UNVOUCHED_BYTES {
            tracing::warn!(
                bytes = catch_up.run_bytes,
                "catch-up run too large; starting over"
            );
            catch_up.run.clear();
            catch_up.run_bytes = 0;
        }
        let behind = self
            .registered
            .keys()
            .next_back()
            .is_some_and(|n| *n > self.stream.head.num);
        if !behind {
            // Caught up; a candidate the peer holds for the next number may be worth keeping.
            self.catch_up = None;
            return self.keep_fetched_candidate(ctx, candidates);
        }
        let attempt = catch_up.attempt;
        self.catch_up = Some(catch_up);
        if progressed {
            // More to fetch: the next page, from the same peer.
            self.ask_page(ctx, attempt);
        }
    }

    /// Outside a catch-up, a fetched next miniblock may still be a candidate worth keeping.
    fn keep_fetched_candidate(&mut self, ctx: &mut Ctx<'_>, miniblocks: Vec<ParsedMiniblock>) {
        let next = self.stream.head.num + 1;
        if let Some(candidate) = miniblocks.into_iter().find(|m| m.num() == next)
            && self.check_candidate(ctx, &candidate).is_ok()
        {
            self.hold_candidate(ctx, candidate);
        }
    }
}
