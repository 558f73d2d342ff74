//! The local devnet: starts anvil, deploys and configures the registry, creates, funds and
//! registers node keys, and describes the result in `DIR/devnet.json`.
//!
//! It owns the devnet directory layout (`DIR/devnet.json`, `DIR/nodes/<i>/node.key`,
//! `DIR/nodes/<i>/data`). It must not contain protocol logic: nodes are separate processes
//! that read the registry like any other network's nodes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::U256;
use anyhow::Context as _;
use rill_chain::anvil::{Anvil, AnvilConfig};
use rill_chain::{NetworkConfig, NodeStatus, Registry, connect_with_key, transfer};
use rill_protocol::NodeKey;

/// What to launch.
#[derive(Clone, Debug)]
pub struct DevnetConfig {
    /// The devnet directory.
    pub dir: PathBuf,
    /// How many nodes.
    pub nodes: usize,
    /// The chain's block time.
    pub block_time: Duration,
    /// Network settings written to the registry.
    pub network: NetworkConfig,
}

pub use rill_client::{DevnetFile, DevnetNode};

pub mod load;
mod nodes;
pub mod promise;
pub use nodes::{NodeProcess, NodeStatusRow, status, wait_serving};

/// A bootstrapped chain: anvil keeps running while this lives.
#[derive(Debug)]
pub struct DevnetChain {
    /// The anvil process.
    pub anvil: Anvil,
    /// What was written to `devnet.json`.
    pub file: DevnetFile,
}

/// The devnet chain's block gas limit.
pub const DEVNET_GAS_LIMIT: u64 = 300_000_000;

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts anvil, deploys and configures the registry, creates (or reuses) the node keys under
/// `DIR/nodes/<i>/node.key`, funds them from anvil's dev account, registers them as
/// Operational, and writes `DIR/devnet.json`.
pub async fn bootstrap(config: &DevnetConfig) -> anyhow::Result<DevnetChain> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let anvil = Anvil::start(AnvilConfig {
        // Room for every node's full batch of new streams in one block (a new stream costs
        // about 200 k gas: its record and the genesis in the log).
        gas_limit: Some(DEVNET_GAS_LIMIT),
        ..AnvilConfig::with_block_time(config.block_time)
    })?;
    let rpc_url = anvil.url();
    let admin_provider = connect_with_key(&rpc_url, &Anvil::dev_key())?;
    let registry = Registry::deploy(admin_provider.clone()).await?;
    registry.apply_config(&config.network).await?;
    let chain_id = {
        use alloy::providers::Provider;
        admin_provider.get_chain_id().await?
    };

    let mut nodes = Vec::with_capacity(config.nodes);
    for index in 0..config.nodes {
        let node_dir = config.dir.join("nodes").join(index.to_string());
        let key_file = node_dir.join("node.key");
        let (key, _) = NodeKey::load_or_generate(&key_file)?;
        transfer(
            &admin_provider,
            key.address(),
            U256::from(100u128 * 10u128.pow(18)),
        )
        .await?;
        let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port()?);
        let multiaddr = format!("{listen}/p2p/{}", key.peer_id());
        registry
            .register_node(key.address(), &multiaddr, NodeStatus::Operational)
            .await?;
        nodes.push(DevnetNode {
            address: key.address(),
            peer_id: key.peer_id().to_string(),
            multiaddr,
            listen,
            metrics: format!("127.0.0.1:{}", free_port()?),
            key_file,
            data_dir: node_dir.join("data"),
        });
    }
    let file = DevnetFile {
        rpc_url,
        chain_id,
        registry: registry.address(),
        nodes,
    };
    file.save(&config.dir)?;
    Ok(DevnetChain { anvil, file })
}
