//! `rill-bench`: measures a devnet end to end.
//!
//! Starts its own devnet (release `rill-node` beside this binary) and runs one of two modes:
//! - throughput (default): `--clients` connections add `--events` messages to one stream (or
//!   `--spread N` streams) through its replicas, `--batch` per request; reports events/s admitted and finalized, add → every replica's
//!   minipool and add → promoted on every replica (p50/p99), registration transactions per
//!   block; with `--rate R`, the writers offer R events/s on a schedule, for latencies below
//!   saturation; `--latencies FILE` writes every event's times for analysis elsewhere;
//! - many streams (`--streams N --active M`): creation rate, each node's idle CPU and memory
//!   with the N streams held, restart-to-serving time, then events spread over the M active
//!   streams (finalized events/s, latencies on a sample of `--watch` streams);
//! - a replica far behind (`--catch-up-mb N`): one replica down while N MiB are finalized,
//!   then its restart to serving and to caught up, and the write quorum's cost.
//!
//! `--hosts` puts every node on its own host (see `rill_devnet::hosts`), and `--latency`,
//! `--jitter`, `--loss` degrade the network between them for the whole run.

mod catch_up;
mod chain;
mod crypto;
mod flood;
mod scale;
mod single;
mod tail;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rill_chain::NetworkConfig;
use rill_client::Client;
use rill_devnet::hosts::{Faults, Hosts, HostsLayout};
use rill_devnet::{ChainSource, DevnetChain, DevnetConfig, NodeProcess, bootstrap, wait_serving};
use rill_protocol::{NodeKey, pb};

#[derive(Parser)]
#[command(about = "Benchmark a local Rill devnet end to end")]
pub(crate) struct Args {
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    replication: u64,
    #[arg(long, default_value_t = 1.0)]
    block_time: f64,
    /// Events to add in total.
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Throughput mode: events per request (`AddEvents` when more than one).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Throughput mode: streams the writers are spread over (each writer on one of them).
    #[arg(long, default_value_t = 1)]
    spread: usize,
    /// Throughput mode: offer this many events/s in all, on a fixed schedule, instead of each
    /// writer sending its next request as soon as the last is answered. Latencies then count
    /// from when a request was due, so a writer held up behind a slow answer is charged for
    /// the wait.
    #[arg(long)]
    rate: Option<f64>,
    /// Throughput mode: write every watched event's times to this CSV file (when it was
    /// added, wall-clock ms; add → acknowledged, → in that node's minipool, → in every
    /// replica's, µs), and the chain's blocks as this process saw them to `FILE.blocks.csv`:
    /// to place slow events within the block time.
    #[arg(long)]
    latencies: Option<PathBuf>,
    /// Streams to create; more than one selects the many-streams mode.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Many-streams mode: how many of the streams get events (default: all, at most 1,000).
    #[arg(long)]
    active: Option<usize>,
    /// Many-streams mode: stream creations in flight at once.
    #[arg(long, default_value_t = 512)]
    create_concurrency: usize,
    /// Many-streams mode: active streams watched on every replica for latencies.
    #[arg(long, default_value_t = 32)]
    watch: usize,
    /// Many-streams mode: the nodes evict a stream idle this long (seconds).
    #[arg(long, default_value_t = 10.0)]
    evict_idle_after: f64,
    /// Many-streams mode: how long idle CPU is measured (seconds).
    #[arg(long, default_value_t = 20.0)]
    idle_seconds: f64,
    /// Catch-up mode: MiB finalized while one replica is down.
    #[arg(long)]
    catch_up_mb: Option<u64>,
    /// Flood mode: a writer's add → quorum latency (`--events` adds) without a flooding
    /// client, with one, and with one against nodes that do not limit clients.
    #[arg(long)]
    flood: bool,
    /// Each node on its own host (network namespaces joined by an emulated network; root).
    #[arg(long)]
    hosts: bool,
    /// With `--hosts`: one-way latency between hosts, in milliseconds.
    #[arg(long, default_value_t = 0, requires = "hosts")]
    latency: u64,
    /// With `--hosts`: the latency's uniform variation either way, in milliseconds.
    #[arg(long, default_value_t = 0, requires = "hosts")]
    jitter: u64,
    /// With `--hosts`: packets lost between hosts, in percent.
    #[arg(long, default_value_t = 0.0, requires = "hosts")]
    loss: f64,
    #[arg(long, default_value = ".devnet-bench")]
    dir: PathBuf,
}

/// Node settings for the throughput modes: their writers share one client key (the stream's
/// one member) over many connections, and one key creates every stream, so the per-client
/// request rate and creation budget would measure the bench's shape, not the nodes. The flood
/// mode measures the limits themselves.
pub(crate) fn unlimited_clients() -> [(&'static str, String); 2] {
    [
        ("RILL_CLIENT_RATE", "0".into()),
        ("RILL_CLIENT_STREAM_CREATIONS", "0".into()),
    ]
}

/// A devnet the bench started; stopped when dropped.
pub(crate) struct Devnet {
    pub(crate) chain: DevnetChain,
    pub(crate) processes: Vec<NodeProcess>,
    pub(crate) block_time: Duration,
    /// The hosts, when each node has its own (removed after the nodes stop).
    _hosts: Option<Hosts>,
}

impl Devnet {
    /// Bootstraps the chain and starts the nodes with `env`, waiting until each serves.
    async fn start(args: &Args, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let block_time = Duration::from_secs_f64(args.block_time);
        let binary = std::env::current_exe()?.with_file_name("rill-node");
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: cargo build --release -p rill-node",
            binary.display()
        );
        if args.dir.exists() {
            std::fs::remove_dir_all(&args.dir)?;
        }
        let layout = args.hosts.then_some(HostsLayout {
            subnet: 78,
            nodes: args.nodes,
        });
        let hosts = layout.map(|layout| Hosts::create(layout, 1)).transpose()?;
        let config = DevnetConfig {
            dir: args.dir.clone(),
            nodes: args.nodes,
            block_time,
            network: NetworkConfig {
                replication_factor: args.replication,
                ..NetworkConfig::default()
            },
            chain: ChainSource::Anvil,
            hosts: layout,
            save_chain_every: None,
        };
        let chain = bootstrap(&config).await?;
        let mut processes = Vec::new();
        for i in 0..args.nodes {
            let mut process = NodeProcess::prepare(&binary, &chain.file, i, block_time);
            for (key, value) in env {
                process.set_env(key, Some(value));
            }
            process.start_again()?;
            processes.push(process);
        }
        for p in &processes {
            wait_serving(&p.node, Duration::from_secs(60)).await?;
        }
        if let Some(hosts) = &hosts {
            let faults = Faults {
                latency_ms: args.latency,
                jitter_ms: args.jitter,
                loss_percent: args.loss,
                ..Faults::default()
            };
            println!("nodes on their own hosts; between hosts: {faults:?}");
            hosts.set_faults(faults);
        }
        Ok(Self {
            chain,
            processes,
            block_time,
            _hosts: hosts,
        })
    }

    /// Node `i`'s client address.
    pub(crate) fn addr(&self, i: usize) -> rill_client::p2p::Multiaddr {
        self.processes[i].node.multiaddr.parse().expect("multiaddr")
    }

    /// The indexes of the nodes among `addresses` (a stream's nodes, as bytes).
    pub(crate) fn indexes(&self, addresses: &[Vec<u8>]) -> Vec<usize> {
        (0..self.processes.len())
            .filter(|i| addresses.contains(&self.processes[*i].node.address.to_vec()))
            .collect()
    }
}

/// The mean of a histogram node `i` serves on its metrics endpoint (`_sum / _count`), 0 if
/// it has no observations.
pub(crate) async fn histogram_mean(devnet: &Devnet, i: usize, name: &str) -> f64 {
    let count = metric(devnet, i, &format!("{name}_count")).await;
    if count == 0.0 {
        0.0
    } else {
        metric(devnet, i, &format!("{name}_sum")).await / count
    }
}

/// One sample node `i` serves on its metrics endpoint (a counter's is `<name>_total`), 0 if
/// it has none.
pub(crate) async fn metric(devnet: &Devnet, i: usize, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut socket) = tokio::net::TcpStream::connect(&devnet.processes[i].node.metrics).await
    else {
        return 0.0;
    };
    let mut body = String::new();
    let request = b"GET /metrics HTTP/1.0\r\nhost: localhost\r\n\r\n";
    if socket.write_all(request).await.is_err() || socket.read_to_string(&mut body).await.is_err() {
        return 0.0;
    }
    let metric = format!("{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&metric)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A client per node, for `Info`.
pub(crate) async fn info_clients(devnet: &Devnet) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for i in 0..devnet.processes.len() {
        clients.push(Client::connect(devnet.addr(i), NodeKey::generate()).await?);
    }
    Ok(clients)
}

/// The sum of one `Info` field over the nodes (a node that does not answer counts 0).
pub(crate) async fn sum(infos: &[Client], field: impl Fn(&pb::InfoResponse) -> u64) -> u64 {
    let mut total = 0;
    for client in infos {
        if let Ok(info) = client.info(false).await {
            total += field(&info);
        }
    }
    total
}

pub(crate) fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(megabytes) = args.catch_up_mb {
        catch_up::run(&args, megabytes).await
    } else if args.flood {
        flood::run(&args).await
    } else if args.streams > 1 {
        scale::run(&args).await
    } else {
        single::run(&args).await
    }
}
