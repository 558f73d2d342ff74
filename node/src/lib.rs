//! The Rill node: wires the engine, the store, the p2p network and the chain.
//!
//! [`run`] reads the registry (nodes, streams, config), restores every stream it holds from the
//! store, and then runs one loop: network events, chain blocks and registry logs, timer ticks
//! and the results of its own requests become engine inputs, and the engine's effects are
//! carried out (store, gossip, requests, registration, client answers). It serves clients for
//! the streams it holds and forwards the rest to a node of the stream.
//!
//! Protocol rules live in `rill-engine`; this crate must not decide what is valid, only move
//! bytes between the engine and the world.

mod client_api;
mod config;
mod durability;
mod metrics;
mod node;
mod updates;

pub use config::NodeConfig;
pub use node::run;
