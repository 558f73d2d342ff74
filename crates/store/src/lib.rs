//! Persistence of a node's streams in sled.
//!
//! Trees: `streams` (id → its nodes), `pool` (id ‖ seq → the minipool's events, hash and
//! envelope, in arrival order: a row appended to while it is small), `candidates` (id ‖ num ‖
//! hash → header) with `candidate_bodies` (… ‖ part → its events that were not in the pool),
//! `miniblocks` (id ‖ num → header) with `bodies` (… ‖ part → its events), `heads` (id → num ‖
//! hash), `gaps` and `meta` (the last chain block seen). Envelopes are stored in runs, a row
//! or a part of up to 32 KiB, never one key per event: sled charges per insert, whatever the
//! value's size. `events` (hash → envelope) is an older version's layout, read and never
//! written. Promoting a miniblock is one sled transaction, so a node killed at any point
//! reopens to a consistent state; a promoted candidate may first move the head alone, its
//! events left where the candidate keeps them (`pending`: id ‖ num → the candidate's key),
//! and settle later (see `settle.rs`). [`Store::load`] rebuilds what the engine needs after a
//! restart. Transactions on one side, flushes and closes on the other, pass one gate for
//! the whole process (`gate.rs`): sled's own process-wide lock was seen deadlocked where they
//! met.
//!
//! It owns the bytes on disk and nothing else: it decides nothing (the engine does; the node
//! turns the engine's store effects into [`Write`]s) and re-opens everything it reads, so a
//! corrupted file yields an error, never a bad event.

mod entries;
mod gap;
mod gate;
mod keys;
mod minipool;
mod reads;
mod settle;
mod store;

pub use gap::StoredGap;
pub use settle::Settling;
pub use store::{Store, StoreError, StoredStream, Write, open_sled};
