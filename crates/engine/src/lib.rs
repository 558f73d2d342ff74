//! The per-stream protocol of Rill as a pure state machine.
//!
//! [`Engine`] owns every rule of "life of an event": admission of events into the minipool,
//! gossip announcements and the fetch of missing events, leader election and placement,
//! proposals and the quorum cut, candidate building and checking, registration and promotion,
//! and catch-up. It takes inputs (an event from a client or a peer, a timer tick, a chain
//! block, a registration log, a proposal request, a candidate, the answer to one of its own
//! requests) with the current time, and returns [`Effect`]s (store, gossip, send, register,
//! notify) for the node to carry out. Inputs that ask a question (a proposal, a candidate, a
//! gossip message) also return an [`Answer`] for the peer that asked.
//!
//! It must not do IO: no sockets, no disk, no clock, no randomness of its own. The only secret
//! it holds is the node key, to sign the headers of the miniblocks it leads (deterministic
//! RFC 6979 signatures). That keeps all protocol logic testable in a seeded simulation.

mod chain;
mod config;
mod effect;
mod election;
mod electorate;
mod engine;
mod input;
mod minipool;
mod placement;
mod reject;
mod replica;
mod stream;

pub use config::{EngineConfig, NetworkParams};
pub use effect::{
    Answer, CandidateVerdict, Effect, Gossip, Notification, Registration, RegistrationKind,
    StoreOp, Verdict,
};
pub use election::elect_leader;
pub use electorate::NodeStatus;
pub use engine::{Engine, RestoredStream, check_genesis};
pub use input::{
    Holdings, Input, PeerGossip, ProposalReply, ProposalRequest, Request, RequestKind, Response,
};
pub use placement::place;
pub use reject::Reject;
pub use replica::{Gap, StreamView};
pub use stream::Head;
