//! Anti-entropy: an event in this node's minipool that a node of the stream has not confirmed
//! holding (by announcing it) is pushed to that node again, after a delay that doubles up to a
//! bound, for as long as it waits in the pool. One lost gossip message, a node that was down,
//! a restart that forgot who holds what: the pushes carry the event until the node confirms.
//! The cost is proportional to what a node lacks, not to the minipool.

use std::collections::BTreeMap;

use alloy_primitives::Address;
use rill_protocol::ParsedEvent;

use super::{Ctx, Replica};
use crate::Gossip;

impl Replica {
    /// Pushes the events that are due to the nodes that lack them.
    pub(super) fn push_due(&mut self, ctx: &mut Ctx<'_>) {
        let peers = self.live_peers(ctx);
        if peers.is_empty() {
            return;
        }
        let due = self.pool.due_pushes(
            ctx.now_ms,
            &peers,
            ctx.config.push_delay_ms,
            ctx.config.push_max_delay_ms,
        );
        if due.is_empty() {
            return;
        }
        let mut by_node: BTreeMap<Address, Vec<ParsedEvent>> = BTreeMap::new();
        for (node, event) in due {
            by_node.entry(node).or_default().push(event);
        }
        let stream = self.id();
        for (node, events) in by_node {
            tracing::debug!(%node, events = events.len(), "pushing unconfirmed events");
            for event in events {
                ctx.gossip_to(node, stream, Gossip::EventReceived(event));
            }
        }
    }
}
