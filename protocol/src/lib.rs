//! The Rill wire protocol: protobuf messages (`pb`), identifiers, the production network's
//! hash framing, event sealing and opening, and node keys.
//!
//! This crate owns every rule about bytes on the wire: how an event is hashed and signed, how
//! received bytes become a [`ParsedEvent`] (or a typed [`OpenError`]), and how one secp256k1
//! secret is at once an Ethereum address, an alloy signer and a libp2p identity. It must not do
//! IO beyond reading and writing key files, and it knows nothing of streams' state: whether an
//! event is *admissible* (membership, recency, duplicates) is the engine's business.

pub mod envelope;
pub mod hash;
pub mod ids;
pub mod keys;
pub mod miniblock;
pub mod pb;
pub mod signature;

pub use envelope::{Limits, OpenError, ParsedEvent, Payload, open, seal};
pub use hash::{HashTag, framed_hash};
pub use ids::{Address, Hash, StreamId};
pub use keys::{KeyError, NodeKey};
pub use miniblock::{MiniblockError, ParsedMiniblock};
pub use signature::{Backend, SignerCache};

/// At most this many events in one `AddEvents` request: a node refuses more (`TOO_LARGE`).
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;
