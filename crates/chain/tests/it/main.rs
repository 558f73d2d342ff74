//! rill-chain against a real anvil.

mod artifact;
mod monitor;
mod registrar;
mod registry;
mod support;
