//! `rill-devnet`: a local Rill network in one command.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rill_chain::NetworkConfig;
use rill_devnet::{DevnetConfig, DevnetFile, NodeProcess, bootstrap, status, wait_serving};

#[derive(Parser)]
#[command(version, about = "Launch a local Rill network on anvil")]
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
        /// Replication factor (nodes per stream).
        #[arg(long, default_value_t = 3)]
        replication: u64,
        /// Block time in seconds.
        #[arg(long, default_value_t = 1.0)]
        block_time: f64,
        /// Devnet directory (recreated on every `up`).
        #[arg(long, default_value = ".devnet")]
        dir: PathBuf,
        /// Return once every node serves, leaving the devnet running (`rill-devnet down` stops it).
        #[arg(long)]
        detach: bool,
    },
    /// Stop a detached devnet.
    Down {
        /// Devnet directory.
        #[arg(long, default_value = ".devnet")]
        dir: PathBuf,
    },
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
    let (nodes, replication, block_time, dir, detach) = match Cli::parse().command {
        Command::Down { dir } => return down(&dir),
        Command::Up {
            nodes,
            replication,
            block_time,
            dir,
            detach,
        } => (nodes, replication, block_time, dir, detach),
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
    // A devnet's chain lives in anvil's memory: old node data is meaningless on a new chain.
    if dir.join("nodes").exists() {
        std::fs::remove_dir_all(dir.join("nodes"))?;
    }
    let block_time = Duration::from_secs_f64(block_time);
    let config = DevnetConfig {
        dir: dir.clone(),
        nodes,
        block_time,
        network: NetworkConfig {
            replication_factor: replication,
            ..NetworkConfig::default()
        },
    };
    println!("starting anvil and deploying the registry…");
    let chain = bootstrap(&config).await?;
    let mut processes = Vec::new();
    for index in 0..nodes {
        processes.push(NodeProcess::start(&binary, &chain.file, index, block_time)?);
    }
    let mut clients = Vec::new();
    for process in &processes {
        clients.push(wait_serving(&process.node, Duration::from_secs(60)).await?);
    }
    let file = &chain.file;
    println!("anvil     {}\nregistry  {}", file.rpc_url, file.registry);
    for node in &file.nodes {
        println!("node      {} {}", node.address, node.multiaddr);
    }
    println!("wrote {}", DevnetFile::path(&dir).display());
    println!("try:      target/release/rill stream create");

    if detach {
        let mut pids = vec![chain.anvil.pid()];
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
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    println!("stopping…");
    drop(processes);
    drop(chain);
    Ok(())
}
