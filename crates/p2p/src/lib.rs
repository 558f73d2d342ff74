//! Rill's libp2p network: a cloneable [`P2p`] handle and an event loop that owns the `Swarm`.
//!
//! The loop turns libp2p events into [`NetworkEvent`]s (gossip batches decoded and
//! shape-checked, requests to answer, peers coming and going) and [`P2p`] commands into swarm
//! calls: gossip to a node's inbox, requests over `/rill/events/1`, `/rill/miniblock/1` and
//! `/rill/client/1`, answers, dials. Client requests go over client sessions
//! (`/rill/client-session/1`, one substream kept for many requests) where the node serves
//! them. It also gates peers: node protocols and gossip are for
//! registered nodes only (their PeerIds map to registry addresses); everyone else is refused
//! with a typed error, ignored by gossip entirely, and welcome on the client protocol, within
//! a per-peer rate (refused `RATE_LIMITED` at the edge, before the node sees a request). The
//! channels to and from the node are bounded, and the swarm never waits on the node: what
//! the node cannot take is shed (gossip ignored, requests answered "busy") and counted.
//!
//! The loop ends, freeing its listen addresses, when the node drops the event receiver.
//!
//! It must not decide anything about streams: whether gossip is valid is the node's call,
//! which it reports back with [`P2p::report_validation`].

mod admission;
mod behaviour;
mod codec;
mod config;
mod error;
mod event_loop;
mod gossip;
mod handle;
mod inbound;
pub mod limits;
mod metrics;
mod outgoing;
mod session;

pub use codec::ProtoCodec;
pub use config::{DEFAULT_CLIENT_RATE, P2pConfig, Role};
pub use error::{DialFailure, RequestError, SpawnError};
pub use event_loop::spawn;
pub use gossip::{GossipBatch, GossipError, INBOX_PREFIX, inbox_topic};
pub use handle::{NetworkEvent, NodeEntry, NodeRequest, NodeResponse, P2p, Responder, Validation};
pub use libp2p::gossipsub::MessageId;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
pub use metrics::P2pMetrics;
