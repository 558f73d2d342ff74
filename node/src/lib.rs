//! The Rill node: wires the engine, the store, the p2p network and the chain.
//!
//! The node is a few roles, each in its own file: [`startup`](Node::start) reads the registry
//! and opens the store; the *directory* follows who is a node and where each stream lives;
//! *streams* keeps in memory only the streams in use (loading a cold one from its latest
//! snapshot when an input concerns it, evicting idle ones); the *loop* owns them and only
//! routes; the *router* turns network events into
//! engine inputs and reports gossip verdicts; the *executor* carries out the engine's effects
//! through one generic *request driver*, the gossip *outbox* and the registrar; the *read
//! server* answers `GetEvents`/`GetMiniblocks`/`GetStream` from the store on its own task;
//! the *client service* serves `/rill/client/1` (acknowledgements, forwarding, watch); a
//! bounded *worker pool* checks signatures off the loop; the store *writer* writes on a
//! thread of its own, in the loop's order, and group-commits flushes, and what others observe
//! waits for the writes before it (*after writes*).
//!
//! Protocol rules live in `rill-engine`; this crate must not decide what is valid, only move
//! bytes between the engine and the world.

mod after_writes;
mod batch;
mod blocks;
mod chain_follower;
mod client;
mod config;
mod convert;
mod directory;
mod event_loop;
mod executor;
pub mod faults;
mod metrics;
mod outbox;
mod promotions;
mod reads;
mod registration_queue;
mod requests;
mod router;
mod startup;
mod streams;
mod workers;
mod writer;

pub use config::{
    ClientLimits, DEFAULT_ACK_TIMEOUT, DEFAULT_STREAM_CREATIONS_PER_HOUR, DEFAULT_UNREPLICATED,
    NodeConfig,
};
pub use rill_p2p::limits::Rate;
pub use startup::{Node, RunError, StartError, run};
pub use streams::Residency;
pub use writer::DEFAULT_SETTLE_AFTER;
