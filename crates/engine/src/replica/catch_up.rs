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
//!
//! A replica far behind does not replay the whole gap. Snapshots are at most twice the
//! interval apart, so the last `2 × interval + window` miniblocks before the registered head
//! hold one; the run starts there instead, and once the registered head vouches for it the
//! replica rebases on its last snapshot (the window before it kept for duplicate checks). The
//! miniblocks it skipped are not stored; other replicas serve them.

use alloy_primitives::Address;
use rill_protocol::ParsedMiniblock;

use super::{Ctx, Gap, Replica};
use crate::stream::Stream;
use crate::{Notification, Reject, Request, StoreOp};

/// At most this many bytes of fetched, not yet vouched miniblocks are held in memory; past
/// that the run is dropped and fetched again from another peer.
const MAX_UNVOUCHED_BYTES: usize = 512 * 1024 * 1024;

/// A catch-up in progress.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    asked_ms: u64,
    attempt: usize,
    /// Far behind: the number the run starts at (it does not link from the head).
    jump_from: Option<u64>,
    /// Fetched miniblocks that link from the head (or from each other, after a jump), not
    /// vouched for yet.
    run: Vec<ParsedMiniblock>,
    run_bytes: usize,
}

impl CatchUp {
    /// A catch-up from `head` to the registered `to`: a jump if the gap holds a snapshot
    /// worth starting from.
    fn new(head: u64, to: u64, snapshot_interval: u64, window: u64) -> Self {
        let start = to.saturating_sub(snapshot_interval.saturating_mul(2).saturating_add(window));
        Self {
            jump_from: (snapshot_interval > 0 && start > head + 1).then_some(start),
            ..Self::default()
        }
    }

    /// The number of the next miniblock the run needs.
    fn next(&self, head: u64) -> u64 {
        self.jump_from.unwrap_or(head + 1) + self.run.len() as u64
    }

    fn clear(&mut self) {
        self.run.clear();
        self.run_bytes = 0;
    }
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
        let head = self.stream.head.num;
        let (interval, window) = (ctx.params_now().snapshot_interval, ctx.rules_now().window);
        let catch_up = self
            .catch_up
            .get_or_insert_with(|| CatchUp::new(head, to, interval, window));
        if catch_up.jump_from.is_some_and(|s| s <= head + 1) {
            // The head moved past where the jump would start: an ordinary catch-up.
            catch_up.jump_from = None;
            catch_up.clear();
        }
        let from = catch_up.next(head);
        tracing::debug!(
            from,
            to,
            attempt,
            jump = catch_up.jump_from.is_some(),
            "catching up"
        );
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
        if self.on_backfill_page(ctx, from, &miniblocks) {
            return;
        }
        let Some(mut catch_up) = self.catch_up.take() else {
            // Not catching up: at most a candidate for the next number.
            return self.keep_fetched_candidate(ctx, candidates);
        };
        let before = catch_up.run.len();
        for miniblock in miniblocks {
            let expected = catch_up.next(self.stream.head.num);
            if miniblock.num() < expected {
                continue;
            }
            if miniblock.num() > expected {
                break;
            }
            // A jump's first miniblock links to nothing this node has; the registered head
            // vouches for it through the rest of the run.
            let prev = match catch_up.run.last() {
                Some(last) => Some(last.hash()),
                None if catch_up.jump_from.is_some() => None,
                None => Some(self.stream.head.hash),
            };
            if prev.is_some_and(|prev| miniblock.prev_hash() != prev) {
                tracing::debug!(
                    num = miniblock.num(),
                    "fetched miniblock does not link; starting over"
                );
                catch_up.clear();
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
            let mut vouched = std::mem::replace(&mut catch_up.run, rest);
            catch_up.run_bytes = catch_up.run.iter().map(size).sum();
            if catch_up.jump_from.take().is_some()
                && let Err(reason) = self.rebase(ctx, &mut vouched)
            {
                // No snapshot in reach (the interval was larger then), or a snapshot that
                // does not open: replay from the head instead.
                tracing::warn!(%reason, "cannot start from a peer's snapshot; replaying");
                vouched.clear();
                catch_up.clear();
            }
            for miniblock in vouched {
                if let Err(reason) = self.check_links(ctx, &miniblock) {
                    ctx.rejected(self.id(), Some(from), reason);
                    catch_up.clear();
                    break;
                }
                self.promote(ctx, miniblock);
            }
            // A registered candidate chained on the last of them may be held already.
            self.try_promote(ctx);
        }
        if catch_up.run_bytes > MAX_UNVOUCHED_BYTES {
            tracing::warn!(
                bytes = catch_up.run_bytes,
                "catch-up run too large; starting over"
            );
            catch_up.clear();
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

    /// Takes the vouched run of a jump up to its last base (genesis or snapshot) as the new
    /// state, leaving in `run` the miniblocks after the base to promote one by one. Fails,
    /// changing nothing, if the run holds no base or does not open.
    fn rebase(&mut self, ctx: &mut Ctx<'_>, run: &mut Vec<ParsedMiniblock>) -> Result<(), Reject> {
        let base_at = run
            .iter()
            .rposition(|m| m.num() == 0 || m.header().snapshot.is_some())
            .ok_or(Reject::BadSnapshot(
                "no snapshot within twice the interval before the registered head",
            ))?;
        let mut stream = Stream::from_base(self.id(), self.stream.nodes.clone(), &run[base_at])?;
        for older in run[..base_at].iter().rev() {
            stream.remember_older(older)?;
        }
        let after = run.split_off(base_at + 1);
        let taken = std::mem::replace(run, after);
        let old_head = self.stream.head.num;
        tracing::info!(
            from = old_head,
            to = stream.head.num,
            "far behind: starting from a peer's snapshot"
        );
        // What is skipped (with what an earlier jump left, if its backfill did not finish).
        let gap = Gap {
            down_to: self
                .backfill
                .as_ref()
                .map_or(old_head + 1, |b| b.gap.down_to.min(old_head + 1)),
            below: taken[0].num(),
            hash: taken[0].prev_hash(),
        };
        self.stream = stream;
        self.moved_head(&taken);
        self.set_gap(Some(gap));
        ctx.store(StoreOp::Rebase {
            stream: self.id(),
            miniblocks: taken.clone(),
            gap,
        });
        self.next_generation(ctx);
        for miniblock in taken {
            ctx.notify(Notification::MiniblockPromoted {
                stream: self.id(),
                miniblock,
            });
        }
        Ok(())
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
