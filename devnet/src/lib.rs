//! The local devnet: starts anvil, deploys and configures the registry, creates, funds and
//! registers node keys, and describes the result in `DIR/devnet.json`.
//!
//! It owns the devnet directory layout (`DIR/devnet.json`, `DIR/anvil-state.json`,
//! `DIR/nodes/<i>/node.key`, `DIR/nodes/<i>/data`) and the hosts a devnet may put its nodes on
//! ([`hosts`]). It must not contain protocol logic: nodes are separate processes
//! that read the registry like any other network's nodes.

use std::net::IpAddr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use anyhow::Context as _;
use rill_chain::anvil::{Anvil, AnvilConfig};
use rill_chain::{NetworkConfig, NodeStatus, Registry, connect_with_key, transfer};
use rill_protocol::NodeKey;

/// Where the devnet's chain comes from.
#[derive(Clone, Debug, Default)]
pub enum ChainSource {
    /// An anvil this devnet starts, funded from anvil's dev account; its state is kept in
    /// `DIR/anvil-state.json`, so [`resume`] finds the chain as it was.
    #[default]
    Anvil,
    /// An existing EVM chain reached at `rpc_url`: `deployer` pays for everything, owns the
    /// registry it deploys (or must own `registry` when one is given) and funds the node keys.
    Existing {
        /// The chain's JSON-RPC endpoint.
        rpc_url: String,
        /// The key that deploys, configures and registers, and funds the nodes.
        deployer: Box<NodeKey>,
        /// A registry to reuse instead of deploying one.
        registry: Option<Address>,
        /// What each node key is topped up to, in wei.
        fund: U256,
    },
}

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
    /// The chain.
    pub chain: ChainSource,
    /// Each node on its own host (see [`hosts`]); `None`: every node on 127.0.0.1.
    pub hosts: Option<HostsLayout>,
    /// How often anvil's state is saved besides on exit (`None`: on exit only).
    pub save_chain_every: Option<Duration>,
}

impl DevnetConfig {
    /// `nodes` nodes on 127.0.0.1 and a new anvil mining every `block_time`.
    pub fn local(dir: PathBuf, nodes: usize, block_time: Duration, network: NetworkConfig) -> Self {
        Self {
            dir,
            nodes,
            block_time,
            network,
            chain: ChainSource::Anvil,
            hosts: None,
            save_chain_every: None,
        }
    }
}

pub use rill_client::{DevnetFile, DevnetNode};

pub mod hosts;
pub mod load;
mod nodes;
pub mod promise;
use hosts::HostsLayout;
pub use nodes::{NodeProcess, NodeStatusRow, status, wait_serving};

/// A bootstrapped chain: anvil (when the devnet started one) keeps running while this lives.
#[derive(Debug)]
pub struct DevnetChain {
    /// The anvil process, unless the chain is an existing one.
    pub anvil: Option<Anvil>,
    /// What was written to `devnet.json`.
    pub file: DevnetFile,
}

/// The devnet chain's block gas limit.
pub const DEVNET_GAS_LIMIT: u64 = 300_000_000;

/// Where a devnet keeps anvil's state.
pub fn anvil_state(dir: &Path) -> PathBuf {
    dir.join("anvil-state.json")
}

/// A port free on 127.0.0.1 now, for a process that binds it later. Taken below Linux's
/// ephemeral range (32768–60999): a port the kernel hands out (`:0`) is also what it gives the
/// next outgoing connection of any process, which could take it before the node binds it.
/// Never the same port twice in one process: devnets launched at once (tests in parallel)
/// would otherwise both find a port free before either binds it.
pub fn free_port() -> anyhow::Result<u16> {
    use rand::Rng as _;
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_anvil(config: &DevnetConfig, port: u16) -> anyhow::Result<Anvil> {
    Ok(Anvil::start(AnvilConfig {
        // Room for every node's full batch of new streams in one block (a new stream costs
        // about 115 k gas: its record and the genesis in the log).
        gas_limit: Some(DEVNET_GAS_LIMIT),
        host: config.hosts.map(|h| IpAddr::V4(h.host_ip())),
        port,
        state: Some(anvil_state(&config.dir)),
        state_interval: config.save_chain_every,
        ..AnvilConfig::with_block_time(config.block_time)
    })?)
}

/// Bootstraps the chain side of a devnet: starts anvil (or connects to an existing chain),
/// deploys and configures the registry (or reuses one), creates (or reuses) the node keys under
/// `DIR/nodes/<i>/node.key`, funds them, registers them as Operational with their addresses,
/// and writes `DIR/devnet.json`.
pub async fn bootstrap(config: &DevnetConfig) -> anyhow::Result<DevnetChain> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let (anvil, rpc_url, deployer, reuse, fund) = match &config.chain {
        ChainSource::Anvil => {
            let _ = std::fs::remove_file(anvil_state(&config.dir));
            let anvil = start_anvil(config, 0)?;
            let url = anvil.url();
            let fund = U256::from(100u128 * 10u128.pow(18));
            (Some(anvil), url, Anvil::dev_key(), None, fund)
        }
        ChainSource::Existing {
            rpc_url,
            deployer,
            registry,
            fund,
        } => (
            None,
            rpc_url.clone(),
            (**deployer).clone(),
            *registry,
            *fund,
        ),
    };
    let admin_provider = connect_with_key(&rpc_url, &deployer)?;
    let registry = match reuse {
        Some(address) => Registry::new(address, admin_provider.clone()),
        None => Registry::deploy(admin_provider.clone())
            .await
            .context("deploying the registry")?,
    };
    registry
        .apply_config(&config.network)
        .await
        .context("configuring the registry (the deployer key must own it)")?;
    let chain_id = admin_provider.get_chain_id().await?;
    let registered = registry.nodes().await?;

    let mut nodes = Vec::with_capacity(config.nodes);
    for index in 0..config.nodes {
        let node_dir = config.dir.join("nodes").join(index.to_string());
        let key_file = node_dir.join("node.key");
        let (key, _) = NodeKey::load_or_generate(&key_file)?;
        let balance = admin_provider.get_balance(key.address()).await?;
        if balance < fund {
            transfer(&admin_provider, key.address(), fund - balance)
                .await
                .context("funding a node key")?;
        }
        let (listen, metrics, netns) = match config.hosts {
            Some(hosts) => (
                format!("/ip4/{}/tcp/{NODE_PORT}", hosts.node_ip(index)),
                format!("{}:{METRICS_PORT}", hosts.node_ip(index)),
                Some(hosts.netns(index)),
            ),
            None => (
                format!("/ip4/127.0.0.1/tcp/{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
                None,
            ),
        };
        let multiaddr = format!("{listen}/p2p/{}", key.peer_id());
        match registered.iter().find(|n| n.address == key.address()) {
            None => {
                registry
                    .register_node(key.address(), &multiaddr, NodeStatus::Operational)
                    .await?
            }
            Some(known) => {
                if known.multiaddr != multiaddr {
                    registry
                        .update_node_multiaddr(key.address(), &multiaddr)
                        .await?;
                }
                if known.status != NodeStatus::Operational {
                    registry
                        .update_node_status(key.address(), NodeStatus::Operational)
                        .await?;
                }
            }
        }
        nodes.push(DevnetNode {
            address: key.address(),
            peer_id: key.peer_id().to_string(),
            multiaddr,
            listen,
            metrics,
            key_file,
            data_dir: node_dir.join("data"),
            netns,
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

/// The port a node listens on for peers and clients on its own host.
pub const NODE_PORT: u16 = 30_333;
/// The port of a node's metrics on its own host.
pub const METRICS_PORT: u16 = 9_100;

/// Resumes the devnet in `config.dir` as `devnet.json` describes it: restarts its anvil on the
/// same port from the state it saved (the registry, the nodes and every stream are as they
/// were), or, for a devnet on an existing chain, checks that the chain still answers. The nodes
/// keep their data.
pub async fn resume(config: &DevnetConfig) -> anyhow::Result<DevnetChain> {
    let file = DevnetFile::load(&config.dir)?;
    let anvil = if anvil_state(&config.dir).exists() {
        let port = file
            .rpc_url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .context("the devnet file's RPC URL has no port")?;
        Some(start_anvil(config, port)?)
    } else {
        None
    };
    let registry = Registry::new(file.registry, rill_chain::connect(&file.rpc_url)?);
    let known = registry.nodes().await.with_context(|| {
        format!(
            "reading the registry {} at {} (if that was this devnet's anvil, its state was not \
             saved: start a new devnet with --fresh)",
            file.registry, file.rpc_url
        )
    })?;
    anyhow::ensure!(
        file.nodes
            .iter()
            .all(|n| known.iter().any(|k| k.address == n.address)),
        "the chain at {} does not know this devnet's nodes (start a new devnet with --fresh)",
        file.rpc_url
    );
    Ok(DevnetChain { anvil, file })
}
