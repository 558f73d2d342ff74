//! Rill's libp2p network: a cloneable [`P2p`] handle and an event loop that owns the `Swarm`.
//!
//! The loop turns libp2p events into [`NetworkEvent`]s (gossip to validate, requests to answer,
//! peers coming and going) and [`P2p`] commands into swarm calls: publish on a stream's topic,
//! request over `/rill/events/1`, `/rill/miniblock/1` and `/rill/client/1`, answer, dial.
//! It also enforces gating: node protocols and stream topics are for registered, Operational
//! nodes only (their PeerIds map to registry addresses); everyone else is refused with a typed
//! error or penalised through gossipsub's peer scoring, and is welcome on the client protocol.
//!
//! It must not decide anything about streams: whether gossip is valid is the node's call, which
//! it reports back with [`P2p::report_validation`].

mod behaviour;
mod codec;
mod event_loop;
mod handle;

pub use codec::ProtoCodec;
pub use event_loop::spawn;
pub use handle::{
    NetworkEvent, P2p, P2pConfig, RequestError, Responder, Role, Validation, stream_topic,
};
pub use libp2p::gossipsub::MessageId;
pub use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};
