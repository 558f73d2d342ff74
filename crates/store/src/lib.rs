//! Persistence of a node's streams in sled.
//!
//! Trees: `events` (hash → envelope bytes, shared by minipools, candidates and miniblocks),
//! `streams` (id → its nodes), `minipool` (id ‖ seq → hashes in arrival order, a row
//! appended to while it is small), `candidates` (id ‖ num ‖ hash → miniblock), `miniblocks`
//! (id ‖ num → miniblock), `heads` (id → num ‖ hash) and `meta` (the last chain block seen).
//! Storing a candidate and promoting a miniblock are each one sled transaction, so a node
//! killed at any point reopens to a consistent state; [`Store::load`] rebuilds what the engine
//! needs after a restart.
//!
//! It owns the bytes on disk and nothing else: it decides nothing (the engine does; the node
//! turns the engine's store effects into [`Write`]s) and re-opens everything it reads, so a
//! corrupted file yields an error, never a bad event.

mod gap;
mod keys;
mod minipool;
mod reads;
mod store;

pub use gap::StoredGap;
pub use store::{Store, StoreError, StoredStream, Write, open_sled};
