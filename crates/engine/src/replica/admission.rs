//! Admission: a client's event or a peer's events into the minipool, and peer events parked
//! until this node has promoted what their sender had.

use alloy_primitives::{Address, B256};
use rill_protocol::ParsedEvent;

use super::{Ctx, Replica};
use crate::{Gossip, Notification, Reject, StoreOp, Verdict};

/// How many promotions a parked event may wait.
const PARK_MINIBLOCKS: u64 = 3;
/// At most this many parked events per stream.
const MAX_PARKED: usize = 10_000;

/// A peer's event waiting for this node to catch up with the sender's view of the stream.
#[derive(Debug)]
struct ParkedEvent {
    event: ParsedEvent,
    from: Address,
    at_head: u64,
}

/// Peer events that failed a check that depends on state this node may lag behind on.
#[derive(Debug, Default)]
pub(super) struct Parked(Vec<ParkedEvent>);

impl Parked {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Replica {
    /// Whether `event` may enter the minipool now (with the admission margin, so that it
    /// stays includable for a while once acknowledged).
    fn check_new(&self, ctx: &Ctx<'_>, event: &ParsedEvent) -> Result<(), Reject> {
        self.stream.check(event, &ctx.admission_rules())?;
        if self.pool.contains(&event.hash()) {
            return Err(Reject::Duplicate(event.hash()));
        }
        Ok(())
    }

    /// A client's event: admitted into the minipool and gossiped, or refused.
    pub(crate) fn add_client_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        event: ParsedEvent,
    ) -> Result<(), Reject> {
        self.check_new(ctx, &event)?;
        self.admit(ctx, event.clone());
        ctx.gossip(self.id(), Gossip::EventReceived(event));
        Ok(())
    }

    /// Events from a peer of the stream (gossiped, pushed or fetched). The verdict blames the
    /// sender only for what no honest node sends.
    pub(crate) fn peer_events(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        events: Vec<ParsedEvent>,
    ) -> Verdict {
        if !self.is_node(&from) {
            ctx.rejected(self.id(), Some(from), Reject::NotAStreamNode(from));
            return Verdict::Reject;
        }
        let mut verdict = Verdict::Ignore;
        for event in events {
            let hash = event.hash();
            if self.held_already(ctx, from, hash) {
                continue;
            }
            let outcome = match self.stream.check(&event, &ctx.admission_rules()) {
                Ok(()) => {
                    self.admit_from_peer(ctx, event, from);
                    Verdict::Accept
                }
                Err(reason) if reason.may_pass_later(self.stream.head.num) => {
                    // The sender may have promoted a miniblock this node has not yet (a join,
                    // the event's base): keep the event and check it again after promotions.
                    self.missing.forget(&hash);
                    self.park(event, from);
                    Verdict::Ignore
                }
                Err(reason) => {
                    self.missing.forget(&hash);
                    let honest = reason.is_honest_race();
                    ctx.rejected(self.id(), Some(from), reason);
                    if honest {
                        Verdict::Ignore
                    } else {
                        Verdict::Reject
                    }
                }
            };
            verdict = worst(verdict, outcome);
        }
        verdict
    }

    /// Events `from` sent that the node found it holds before opening them.
    pub(crate) fn peer_sent_held(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: Address,
        hashes: Vec<B256>,
    ) -> Verdict {
        if !self.is_node(&from) {
            ctx.rejected(self.id(), Some(from), Reject::NotAStreamNode(from));
            return Verdict::Reject;
        }
        for hash in hashes {
            self.held_already(ctx, from, hash);
        }
        Verdict::Ignore
    }

    /// If this node holds `hash`, says so to `from` (which sent it, and pushes it until it
    /// hears that) and returns true.
    fn held_already(&mut self, ctx: &mut Ctx<'_>, from: Address, hash: B256) -> bool {
        if !(self.pool.contains(&hash) || self.stream.recently_included(&hash)) {
            return false;
        }
        self.missing.forget(&hash);
        self.hold(ctx, hash, from);
        ctx.gossip_to(from, self.id(), Gossip::EventInPool(hash));
        true
    }

    /// Admits an event `from` holds, and announces it.
    pub(super) fn admit_from_peer(&mut self, ctx: &mut Ctx<'_>, event: ParsedEvent, from: Address) {
        let hash = event.hash();
        self.admit(ctx, event);
        self.hold(ctx, hash, from);
        ctx.gossip(self.id(), Gossip::EventInPool(hash));
    }

    /// Stores the event in the minipool and tells subscribers. The peers that announced it
    /// before it arrived hold it: they count toward its quorum and are not pushed it.
    pub(super) fn admit(&mut self, ctx: &mut Ctx<'_>, event: ParsedEvent) {
        let hash = event.hash();
        let push_at = ctx.now_ms + ctx.config.push_delay_ms;
        if !self.pool.insert(event.clone(), ctx.me, push_at) {
            return;
        }
        let announcers = self.missing.take(&hash);
        let stream = self.id();
        ctx.store(StoreOp::AddToMinipool {
            stream,
            event: event.clone(),
        });
        ctx.notify(Notification::EventAdmitted { stream, event });
        self.hold(ctx, hash, ctx.me);
        for announcer in announcers {
            self.hold(ctx, hash, announcer);
        }
    }

    /// `who` holds `hash`; waiting clients are told once more than half the nodes do, and
    /// the node once every live node does too (the nodes heard from within
    /// [`EngineConfig::pace_window_ms`](crate::EngineConfig::pace_window_ms)).
    pub(super) fn hold(&mut self, ctx: &mut Ctx<'_>, hash: B256, who: Address) {
        if who != ctx.me {
            self.heard.insert(who, ctx.now_ms);
        }
        let (me, now, window) = (ctx.me, ctx.now_ms, ctx.config.pace_window_ms);
        let heard = &self.heard;
        let live = |n: &Address| {
            *n == me
                || heard
                    .get(n)
                    .is_some_and(|at| now.saturating_sub(*at) <= window)
        };
        let reached = self.pool.hold(&hash, who, &self.stream.nodes, live);
        let stream = self.id();
        if reached.quorum {
            ctx.notify(Notification::EventQuorum { stream, hash });
        }
        if reached.replicated {
            ctx.notify(Notification::EventReplicated { stream, hash });
        }
    }

    fn park(&mut self, event: ParsedEvent, from: Address) {
        let parked = &mut self.parked.0;
        if parked.len() < MAX_PARKED && !parked.iter().any(|p| p.event.hash() == event.hash()) {
            parked.push(ParkedEvent {
                event,
                from,
                at_head: self.stream.head.num,
            });
        }
    }

    /// After a promotion: admits parked events that became admissible, keeps those that may
    /// still pass for a few more miniblocks, and drops the rest.
    pub(super) fn unpark(&mut self, ctx: &mut Ctx<'_>) {
        let head = self.stream.head.num;
        for parked in std::mem::take(&mut self.parked.0) {
            match self.check_new(ctx, &parked.event) {
                Ok(()) => self.admit_from_peer(ctx, parked.event, parked.from),
                Err(reason)
                    if reason.may_pass_later(head) && head < parked.at_head + PARK_MINIBLOCKS =>
                {
                    self.parked.0.push(parked);
                }
                Err(Reject::Duplicate(_)) => {}
                Err(reason) => ctx.rejected(self.id(), Some(parked.from), reason),
            }
        }
    }
}

/// One bad event rejects a message; one useful event makes it accepted.
pub(crate) fn worst(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Reject, _) | (_, Verdict::Reject) => Verdict::Reject,
        (Verdict::Accept, _) | (_, Verdict::Accept) => Verdict::Accept,
        _ => Verdict::Ignore,
    }
}
