//! Node settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::Address;
use rill_p2p::Multiaddr;

/// What `rill-node run` is told.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node key file.
    pub key_file: PathBuf,
    /// The sled data directory.
    pub data_dir: PathBuf,
    /// Where to listen (libp2p multiaddr).
    pub listen: Multiaddr,
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The registry contract.
    pub registry: Address,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The chain's block time (the registrar flushes after a quarter of it).
    pub block_time: Duration,
}
