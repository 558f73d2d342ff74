//! `rill-devnet`: a local Rill network in one command.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rill_chain::NetworkConfig;
use rill_devnet::{DevnetConfig, bootstrap};

#[derive(Parser)]
#[command(version, about = "Launch a local Rill network on anvil")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start anvil, deploy and configure the registry, and register funded node keys; keeps
    /// the chain running until Ctrl-C.
    Chain {
        /// Number of nodes to register.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Replication factor written to the registry.
        #[arg(long, default_value_t = 3)]
        replication: u64,
        /// Block time in seconds.
        #[arg(long, default_value_t = 1.0)]
        block_time: f64,
        /// Devnet directory.
        #[arg(long, default_value = ".devnet")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Chain {
            nodes,
            replication,
            block_time,
            dir,
        } => {
            let config = DevnetConfig {
                dir: dir.clone(),
                nodes,
                block_time: Duration::from_secs_f64(block_time),
                network: NetworkConfig {
                    replication_factor: replication,
                    ..NetworkConfig::default()
                },
            };
            let chain = bootstrap(&config).await?;
            println!("anvil      {}", chain.file.rpc_url);
            println!("registry   {}", chain.file.registry);
            for node in &chain.file.nodes {
                println!("node       {} {}", node.address, node.multiaddr);
            }
            println!(
                "wrote {}; Ctrl-C stops the chain",
                rill_devnet::DevnetFile::path(&dir).display()
            );
            tokio::signal::ctrl_c().await?;
            drop(chain);
            Ok(())
        }
    }
}
