//! Network settings.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::P2pMetrics;
use crate::limits::Rate;

/// Requests (or events) per second one client peer may send a node by default.
pub const DEFAULT_CLIENT_RATE: f64 = 2_000.0;

/// Whether this peer is a node (serves node protocols, has a gossip inbox) or a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A registered node.
    Node,
    /// A client: only makes client requests.
    Client,
}

/// Network settings.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Node or client.
    pub role: Role,
    /// Addresses to listen on (e.g. `/ip4/127.0.0.1/tcp/0`, `/ip4/127.0.0.1/udp/0/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// The registry's `maxEventBytes`: bounds gossip messages.
    pub max_event_bytes: usize,
    /// Largest request-response message (miniblocks, streams).
    pub max_message_bytes: usize,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// How long gossip for a connected node waits for its inbox subscription to arrive.
    /// Gossip for a node that is not connected is dropped (and counted) at once.
    pub subscription_wait: Duration,
    /// Room in the channel of network events to the node. When it is full, gossip is ignored
    /// (peers carry it again) and requests are answered "busy": the swarm never waits.
    pub event_capacity: usize,
    /// Room in the channel of commands to the swarm; senders wait when it is full.
    pub command_capacity: usize,
    /// Inbound requests (per peer and protocol) that may be open at once; also the client
    /// sessions one peer may hold.
    pub max_concurrent_requests: usize,
    /// Whether client sessions are on: this side's client requests go over them where the
    /// peer serves them (rather than a substream each over `/rill/client/1`), and a node serves
    /// them. A node serves `/rill/client/1` either way.
    pub client_sessions: bool,
    /// How long a node keeps a client session that brings no request. Clients drop their
    /// idle sessions after a minute, so a node that keeps them longer rarely closes one a
    /// client is about to use (the client then asks again on a new one).
    pub session_idle: Duration,
    /// How much one client peer may ask of this node (a request costs 1, or its number of
    /// events); `None`: no limit. Registered nodes (which forward clients' requests) are
    /// not limited.
    pub client_rate: Option<Rate>,
    /// Where the network counts what it sheds and refuses.
    pub metrics: P2pMetrics,
}

impl P2pConfig {
    /// How long a client request may wait for its answer: long polls of `watch` wait up to
    /// 30 s for updates.
    pub(crate) fn client_request_timeout(&self) -> Duration {
        self.request_timeout.max(Duration::from_secs(40))
    }

    /// Defaults for a node listening on `listen`.
    pub fn node(listen: Vec<Multiaddr>) -> Self {
        Self {
            role: Role::Node,
            listen,
            max_event_bytes: 64 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            subscription_wait: Duration::from_secs(5),
            event_capacity: 4096,
            command_capacity: 4096,
            max_concurrent_requests: 256,
            client_sessions: true,
            session_idle: Duration::from_secs(120),
            client_rate: Some(Rate::per_second(DEFAULT_CLIENT_RATE)),
            metrics: P2pMetrics::default(),
        }
    }

    /// Defaults for a client (listens nowhere).
    pub fn client() -> Self {
        Self {
            role: Role::Client,
            listen: Vec::new(),
            event_capacity: 64,
            ..Self::node(Vec::new())
        }
    }
}
