//! What the network counts: shed load, dropped gossip, refused peers, client sessions.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The network's counters. Cheap to clone (shared handles); register them with the node's
/// registry to serve them.
#[derive(Clone, Debug, Default)]
pub struct P2pMetrics {
    /// Gossip messages received.
    pub gossip_received: Counter,
    /// Gossip messages published.
    pub gossip_published: Counter,
    /// Gossip ignored because the node's queue was full.
    pub gossip_shed: Counter,
    /// Gossip rejected at the edge: from a non-node, relayed, or malformed.
    pub gossip_refused: Counter,
    /// Gossip not delivered: its destination was not connected, or did not subscribe in time.
    pub gossip_undelivered: Counter,
    /// Gossip the swarm refused to publish (too large, or a publish error).
    pub gossip_publish_failed: Counter,
    /// Requests answered "busy" because the node's queue was full.
    pub requests_shed: Counter,
    /// Node-protocol requests refused because the peer is not a registered node.
    pub requests_not_a_node: Counter,
    /// Gossip subscriptions to an inbox other than the peer's own (an outsider's, or another
    /// node's): the peer is shut out of gossip.
    pub gossip_subscriptions_refused: Counter,
    /// Client requests refused because their peer went over its rate.
    pub client_requests_limited: Counter,
    /// Client sessions open on this node.
    pub client_sessions: Gauge,
    /// Client sessions refused because their peer held as many as it may.
    pub client_sessions_refused: Counter,
}

impl P2pMetrics {
    /// Registers every counter under `registry` (prefix it with `p2p` at the call site).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gossip_received",
            "Gossip messages received from nodes",
            self.gossip_received.clone(),
        );
        registry.register(
            "gossip_published",
            "Gossip messages published to node inboxes",
            self.gossip_published.clone(),
        );
        registry.register(
            "gossip_shed",
            "Gossip messages ignored because the node's queue was full",
            self.gossip_shed.clone(),
        );
        registry.register(
            "gossip_refused",
            "Gossip messages rejected at the edge (not from a node, relayed, or malformed)",
            self.gossip_refused.clone(),
        );
        registry.register(
            "gossip_undelivered",
            "Gossip messages dropped because their destination was not connected or did not subscribe in time",
            self.gossip_undelivered.clone(),
        );
        registry.register(
            "gossip_publish_failed",
            "Gossip messages the swarm refused to publish (too large, or a publish error)",
            self.gossip_publish_failed.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests answered busy because the node's queue was full",
            self.requests_shed.clone(),
        );
        registry.register(
            "requests_not_a_node",
            "Node-protocol requests refused because the peer is not a registered node",
            self.requests_not_a_node.clone(),
        );
        registry.register(
            "gossip_subscriptions_refused",
            "Subscriptions to an inbox other than the peer's own; the peer is shut out of gossip",
            self.gossip_subscriptions_refused.clone(),
        );
        registry.register(
            "client_requests_limited",
            "Client requests refused RATE_LIMITED because their peer went over its rate",
            self.client_requests_limited.clone(),
        );
        registry.register(
            "client_sessions",
            "Client sessions open on this node",
            self.client_sessions.clone(),
        );
        registry.register(
            "client_sessions_refused",
            "Client sessions refused because their peer held as many as it may",
            self.client_sessions_refused.clone(),
        );
    }
}
