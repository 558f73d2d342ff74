//! The local devnet: starts anvil, deploys and configures the registry, creates, funds and
//! registers node keys, and describes the result in `DIR/devnet.json`.
//!
//! It owns the devnet directory layout (`DIR/devnet.json`, `DIR/nodes/<i>/node.key`,
//! `DIR/nodes/<i>/data`). It must not contain protocol logic: nodes are separate processes
//! that read the registry like any other network's nodes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use anyhow::Context as _;
use rill_chain::anvil::{Anvil, AnvilConfig};
use rill_chain::{NetworkConfig, NodeStatus, Registry, connect_with_key, transfer};
use rill_protocol::NodeKey;
use serde::{Deserialize, Serialize};

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

/// `DIR/devnet.json`: everything a client or a node needs to find the devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetFile {
    /// anvil's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The chain id.
    pub chain_id: u64,
    /// The registry contract.
    pub registry: Address,
    /// The nodes, in registration order.
    pub nodes: Vec<DevnetNode>,
}

/// One node of the devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetNode {
    /// Its address.
    pub address: Address,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its address for peers and clients: the listen address and `/p2p/<peer id>`.
    pub multiaddr: String,
    /// What it listens on.
    pub listen: String,
    /// Its Prometheus metrics address.
    pub metrics: String,
    /// Its key file.
    pub key_file: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl DevnetFile {
    /// Where the file lives in a devnet directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("devnet.json")
    }

    /// Reads `DIR/devnet.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no devnet at {} (start one with `rill-devnet up`)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a devnet file", path.display()))
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(Self::path(dir), text + "\n")?;
        Ok(())
    }
}

mod nodes;
pub use nodes::{NodeProcess, NodeStatusRow, status, wait_serving};

/// A bootstrapped chain: anvil keeps running while this lives.
#[derive(Debug)]
pub struct DevnetChain {
    /// The anvil process.
    pub anvil: Anvil,
    /// What was written to `devnet.json`.
    pub file: DevnetFile,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts anvil, deploys and configures the registry, creates (or reuses) the node keys under
/// `DIR/nodes/<i>/node.key`, funds them from anvil's dev account, registers them as
/// Operational, and writes `DIR/devnet.json`.
pub async fn bootstrap(config: &DevnetConfig) -> anyhow::Result<DevnetChain> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let anvil = Anvil::start(AnvilConfig::with_block_time(config.block_time))?;
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
