//! `rill-devnet`: a local Rill network in one command.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rill_chain::NetworkConfig;
use rill_devnet::hosts::{Faults, Hosts, HostsLayout};
use rill_devnet::{
    ChainSource, DevnetConfig, DevnetFile, NodeProcess, bootstrap, resume, status, wait_serving,
};

#[derive(Parser)]
#[command(
    version,
    about = "Launch a Rill devnet: on anvil or an existing EVM chain, on one address or on hosts of their own"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start anvil, deploy and configure the registry, register funded node keys and start the
    /// nodes; show their status until Ctrl-C stops everything.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Replication factor (nodes per stream), at most 11: what a stream's record in the
        /// registry holds.
        #[arg(long, default_value_t = 3,
              value_parser = clap::value_parser!(u64).range(1..=rill_chain::MAX_STREAM_NODES))]
        replication: u64,
        /// Block time in seconds.
        #[arg(long, default_value_t = 1.0)]
        block_time: f64,
        /// Devnet directory: an existing devnet there is resumed (its chain and the nodes' data
        /// as they were), unless `--fresh`.
        #[arg(long, default_value = ".devnet")]
        dir: PathBuf,
        /// Start a new devnet even if one exists in the directory (its data is deleted).
        #[arg(long)]
        fresh: bool,
        /// Return once every node serves, leaving the devnet running (`rill-devnet down` stops it).
        #[arg(long, conflicts_with = "hosts")]
        detach: bool,
        /// Put each node on its own host: a network namespace with its own address
        /// (10.SUBNET.0.i+2), joined to the others by an emulated network that
        /// `rill-devnet fault` degrades. Needs root.
        #[arg(long)]
        hosts: bool,
        /// The hosts' subnet: 10.SUBNET.0.0/24.
        #[arg(long, default_value_t = 77, requires = "hosts")]
        subnet: u8,
        /// Bootstrap on an existing EVM chain at this JSON-RPC URL instead of starting anvil.
        #[arg(long, requires = "deployer_key")]
        rpc_url: Option<String>,
        /// File holding the hex private key that deploys (and owns) the registry and funds the
        /// node keys on the existing chain.
        #[arg(long, requires = "rpc_url")]
        deployer_key: Option<PathBuf>,
        /// Reuse this registry (owned by the deployer key) instead of deploying one.
        #[arg(long, requires = "rpc_url")]
        registry: Option<Address>,
        /// What each node key is topped up to on an existing chain, in ether.
        #[arg(long, default_value_t = 1.0)]
        fund: f64,
    },
    /// Degrade the network between the hosts of a running `up --hosts` devnet (in force within
    /// a second; faults of different kinds add up, `heal` removes them all).
    Fault {
        #[command(subcommand)]
        fault: FaultCommand,
        /// Devnet directory.
        #[arg(long, default_value = ".devnet", global = true)]
        dir: PathBuf,
    },
    /// Stop a detached devnet.
    Down {
        /// Devnet directory.
        #[arg(long, default_value = ".devnet")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum FaultCommand {
    /// Delay every packet between hosts by MS milliseconds, ± JITTER.
    Latency {
        /// One-way delay in milliseconds.
        ms: u64,
        /// Uniform variation either way, in milliseconds.
        #[arg(long, default_value_t = 0)]
        jitter: u64,
    },
    /// Drop PERCENT of the packets between hosts.
    Loss {
        /// Share of packets dropped, in percent.
        percent: f64,
    },
    /// Cut nodes (by index) off from every other host, the chain and the clients included.
    Partition {
        /// Node indexes, e.g. `0` or `0 1`.
        #[arg(required = true)]
        nodes: Vec<usize>,
    },
    /// Remove every fault.
    Heal,
}

fn fault(dir: &Path, command: FaultCommand) -> anyhow::Result<()> {
    let file = DevnetFile::load(dir)?;
    if file.nodes.iter().all(|n| n.netns.is_none()) {
        bail!(
            "the devnet in {} does not run on hosts: start it with `rill-devnet up --hosts`",
            dir.display()
        );
    }
    let path = faults_path(dir);
    let mut faults: Faults = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    match command {
        FaultCommand::Latency { ms, jitter } => {
            faults.latency_ms = ms;
            faults.jitter_ms = jitter;
        }
        FaultCommand::Loss { percent } => {
            anyhow::ensure!((0.0..=100.0).contains(&percent), "loss is a percentage");
            faults.loss_percent = percent;
        }
        FaultCommand::Partition { nodes } => {
            if let Some(i) = nodes.iter().find(|i| **i >= file.nodes.len()) {
                bail!("no node {i}: the devnet has {}", file.nodes.len());
            }
            faults.partitioned = nodes.into_iter().collect();
        }
        FaultCommand::Heal => faults = Faults::default(),
    }
    std::fs::write(&path, serde_json::to_string_pretty(&faults)?)?;
    println!("faults between hosts: {}", serde_json::to_string(&faults)?);
    Ok(())
}

fn faults_path(dir: &Path) -> PathBuf {
    dir.join("faults.json")
}

fn read_key(path: &Path) -> anyhow::Result<rill_protocol::NodeKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the deployer key {}", path.display()))?;
    let bytes = alloy::hex::decode(text.trim())
        .with_context(|| format!("{} does not hold a hex private key", path.display()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: a private key is 32 bytes", path.display()))?;
    Ok(rill_protocol::NodeKey::from_secret_bytes(&bytes)?)
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn pids_path(dir: &Path) -> PathBuf {
    dir.join("pids.json")
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let path = pids_path(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no detached devnet in {} (nothing to stop)", dir.display()))?;
    let pids: Vec<u32> = serde_json::from_str(&text)?;
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    std::fs::remove_file(&path)?;
    println!("stopped the devnet in {}", dir.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let up = match Cli::parse().command {
        Command::Down { dir } => return down(&dir),
        Command::Fault {
            fault: command,
            dir,
        } => return fault(&dir, command),
        up @ Command::Up { .. } => up,
    };
    let Command::Up {
        nodes,
        replication,
        block_time,
        dir,
        fresh,
        detach,
        hosts,
        subnet,
        rpc_url,
        deployer_key,
        registry,
        fund,
    } = up
    else {
        unreachable!("matched above")
    };
    if pids_path(&dir).exists() {
        bail!(
            "a detached devnet runs in {}; stop it with `rill-devnet down --dir {}`",
            dir.display(),
            dir.display()
        );
    }
    let binary = std::env::current_exe()?.with_file_name("rill-node");
    if !binary.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p rill-node` (scripts/devnet does both)",
            binary.display()
        );
    }
    let block_time = Duration::from_secs_f64(block_time);
    let resuming = !fresh && DevnetFile::path(&dir).exists();
    let chain_source = match (rpc_url, deployer_key) {
        (Some(rpc_url), Some(key_file)) => ChainSource::Existing {
            rpc_url,
            deployer: Box::new(read_key(&key_file)?),
            registry,
            fund: U256::from((fund * 1e18) as u128),
        },
        _ => ChainSource::Anvil,
    };
    let mut config = DevnetConfig {
        dir: dir.clone(),
        nodes,
        block_time,
        network: NetworkConfig {
            replication_factor: replication,
            ..NetworkConfig::default()
        },
        chain: chain_source,
        hosts: hosts.then_some(HostsLayout { subnet, nodes }),
        save_chain_every: Some(Duration::from_secs(10)),
    };
    if resuming {
        // The devnet keeps its shape: its node count and where its nodes live.
        let file = DevnetFile::load(&dir)?;
        config.nodes = file.nodes.len();
        config.hosts = HostsLayout::of(&file);
    }
    if let (Some(layout), ChainSource::Existing { rpc_url, .. }) = (config.hosts, &config.chain)
        && (rpc_url.contains("127.0.0.1") || rpc_url.contains("localhost"))
    {
        bail!(
            "nodes on their own hosts cannot reach {rpc_url}: give the chain's address on the \
             hosts' network (e.g. http://{}:8545, with the chain listening there or on 0.0.0.0)",
            layout.host_ip()
        );
    }
    // The hosts' network lives in this process: it goes when the devnet stops.
    let mut hosts = match config.hosts {
        Some(layout) => {
            let mut hosts = Hosts::create(layout, rand_seed())?;
            hosts.follow(faults_path(&dir));
            Some(hosts)
        }
        None => None,
    };
    let chain = if resuming {
        println!(
            "resuming the devnet in {} ({} nodes; `--fresh` starts a new one)…",
            dir.display(),
            config.nodes
        );
        resume(&config).await?
    } else {
        // A new chain: old node data is meaningless on it.
        if dir.join("nodes").exists() {
            std::fs::remove_dir_all(dir.join("nodes"))?;
        }
        let _ = std::fs::remove_file(faults_path(&dir));
        println!("bootstrapping the chain and the registry…");
        bootstrap(&config).await?
    };
    let mut processes = Vec::new();
    for index in 0..config.nodes {
        processes.push(NodeProcess::start(&binary, &chain.file, index, block_time)?);
    }
    let mut clients = Vec::new();
    for process in &processes {
        clients.push(wait_serving(&process.node, Duration::from_secs(60)).await?);
    }
    let file = &chain.file;
    println!("chain     {}\nregistry  {}", file.rpc_url, file.registry);
    for node in &file.nodes {
        println!("node      {} {}", node.address, node.multiaddr);
    }
    println!("wrote {}", DevnetFile::path(&dir).display());
    println!("try:      target/release/rill stream create");

    if detach {
        let mut pids: Vec<u32> = chain.anvil.iter().map(|a| a.pid()).collect();
        pids.extend(processes.into_iter().filter_map(NodeProcess::detach));
        std::fs::write(pids_path(&dir), serde_json::to_string(&pids)?)?;
        std::mem::forget(chain);
        println!(
            "detached; stop with `rill-devnet down --dir {}`",
            dir.display()
        );
        return Ok(());
    }

    let terminal = std::io::stdout().is_terminal();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // SIGTERM (a service manager, `kill`) stops the devnet as cleanly as Ctrl-C: anvil saves
    // its state, the hosts' namespaces go.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let mut table = String::from(
            "node                                       peers streams loaded promoted minipool chain\n",
        );
        for (process, client) in processes.iter().zip(&clients) {
            match status(client).await {
                Some(r) => {
                    table += &format!(
                        "{} {:>5} {:>7} {:>6} {:>8} {:>8} {:>5}\n",
                        process.node.address,
                        r.node_peers,
                        r.streams_held,
                        r.streams_loaded,
                        r.promoted,
                        r.minipool,
                        r.chain_head
                    )
                }
                None => table += &format!("{} (not answering)\n", process.node.address),
            }
        }
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        println!("{table}Ctrl-C stops the devnet");
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = terminate.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    println!("stopping…");
    drop(processes);
    drop(chain);
    drop(hosts.take());
    Ok(())
}
