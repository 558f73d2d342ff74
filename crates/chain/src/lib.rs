//! Rill's view of the EVM chain (alloy): the registry contract's bindings and typed reads and
//! writes ([`Registry`]), the batched writer of new streams and miniblock heads that is a node's one transaction sender
//! ([`Registrar`]), the ordered, gap-free feed of blocks and registry logs ([`ChainMonitor`]),
//! and a real anvil process for tests and devnets ([`anvil`]).
//!
//! This crate speaks JSON-RPC and nothing else: it decides nothing about streams (the engine
//! does) and never touches the node's store or the p2p network.

pub mod anvil;
pub mod bindings;
mod error;
mod monitor;
mod provider;
mod registrar;
mod registry;
mod types;

pub use error::ChainError;
pub use monitor::{BlockInfo, ChainBlock, ChainMonitor, MonitorConfig, block_info};
pub use provider::{
    RECEIPT_TIMEOUT, REQUEST_TIMEOUT, connect, connect_with_key, receipt_within, transfer,
};
pub use registrar::{
    AllocationOutcome, Leading, NewStream, Queued, Registrar, RegistrarConfig, RegistrarError,
    RegistrarMetrics, RegistrationOutcome,
};
pub use registry::Registry;
pub use types::{
    AllocationFailure, MAX_STREAM_NODES, MiniblockRegistration, NetworkConfig, NodeRecord,
    NodeStatus, RegistrationFailure, RegistryEvent, StreamRecord,
};

/// The provider type every handle here holds: type-erased, cheap to clone.
pub type ChainProvider = alloy::providers::DynProvider;
