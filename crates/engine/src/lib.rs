//! The per-stream protocol of Rill as a pure state machine.
//!
//! [`Engine`] owns every rule of "life of an event": admission of events into the minipool,
//! gossip announcements and the fetch of missing events, leader election, proposals and the
//! quorum cut, candidate building and checking, registration and promotion, and catch-up. It
//! takes [`Input`]s (an event from a client or a peer, a timer tick, a chain block, a
//! registration log, a proposal, a candidate, fetched data) with the current time, and returns
//! [`Effect`]s (store, gossip, send, register, fetch, notify) for the node to carry out.
//!
//! It must not do IO: no sockets, no disk, no clock, no randomness of its own. The only secret
//! it holds is the node key, to sign the headers of the miniblocks it leads (deterministic
//! RFC 6979 signatures). That keeps all protocol logic testable in a seeded simulation.

mod election;
mod engine;
mod messages;
mod reject;
mod stream;

pub use election::elect_leader;
pub use engine::{Engine, EngineConfig, RestoredStream};
pub use messages::{
    Effect, Gossip, Input, Notification, ProposalReply, ProposalRequest, Registration,
};
pub use reject::Reject;
pub use stream::{Head, StreamView};
