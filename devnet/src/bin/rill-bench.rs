//! `rill-bench`: measures a devnet end to end.
//!
//! Starts its own devnet (release `rill-node` beside this binary), creates a stream, has
//! `--clients` connections add `--events` messages (local acknowledgement) spread over the
//! stream's replicas, and watches every replica. Reports events/s admitted and finalized, the
//! latency from add to every replica's minipool and to a registered miniblock on every replica
//! (p50/p99), and registration transactions per chain block.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use anyhow::Context as _;
use clap::Parser;
use rill_chain::{NetworkConfig, connect};
use rill_client::Client;
use rill_devnet::{DevnetConfig, NodeProcess, bootstrap, wait_serving};
use rill_protocol::{NodeKey, StreamId, pb};

#[derive(Parser)]
#[command(about = "Benchmark a local Rill devnet end to end")]
struct Args {
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    replication: u64,
    #[arg(long, default_value_t = 1.0)]
    block_time: f64,
    #[arg(long, default_value_t = 5000)]
    events: usize,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value = ".devnet-bench")]
    dir: PathBuf,
}

#[derive(Default, Clone)]
struct Times {
    sent: Option<Instant>,
    acked: Option<Instant>,
    /// Per replica: first seen in its minipool, promoted.
    seen: HashMap<usize, Instant>,
    promoted: HashMap<usize, Instant>,
}

type Book = Arc<Mutex<HashMap<B256, Times>>>;

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

async fn watch(
    client: Client,
    replica: usize,
    stream: StreamId,
    book: Book,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut after = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(batch) = client.watch(stream, after, 1000).await else {
            continue;
        };
        let now = Instant::now();
        let mut book = book.lock().expect("lock");
        for update in batch.updates {
            after = after.max(update.seq);
            match update.kind {
                Some(pb::stream_update::Kind::Event(e)) => {
                    book.entry(B256::from_slice(&e.hash))
                        .or_default()
                        .seen
                        .entry(replica)
                        .or_insert(now);
                }
                Some(pb::stream_update::Kind::Miniblock(m)) => {
                    for e in m.events {
                        book.entry(B256::from_slice(&e.hash))
                            .or_default()
                            .promoted
                            .entry(replica)
                            .or_insert(now);
                    }
                }
                None => {}
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let config = DevnetConfig {
        dir: args.dir.clone(),
        nodes: args.nodes,
        block_time,
        network: NetworkConfig {
            replication_factor: args.replication,
            ..NetworkConfig::default()
        },
    };
    let chain = bootstrap(&config).await?;
    let processes: Vec<NodeProcess> = (0..args.nodes)
        .map(|i| NodeProcess::start(&binary, &chain.file, i, block_time))
        .collect::<anyhow::Result<_>>()?;
    for p in &processes {
        wait_serving(&p.node, Duration::from_secs(60)).await?;
    }
    let key = NodeKey::generate();
    let addr = |i: usize| processes[i].node.multiaddr.parse().expect("multiaddr");
    let created = Client::connect(addr(0), key.clone())
        .await?
        .create_stream(None)
        .await?;
    let stream = StreamId::from_slice(&created.stream_id).context("stream id")?;
    let replicas: Vec<usize> = (0..args.nodes)
        .filter(|i| created.nodes.contains(&processes[*i].node.address.to_vec()))
        .collect();

    let book: Book = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (index, replica) in replicas.iter().enumerate() {
        let client = Client::connect(addr(*replica), NodeKey::generate()).await?;
        tokio::spawn(watch(client, index, stream, book.clone(), stop.clone()));
    }
    let rpc = connect(&chain.file.rpc_url)?;
    let first_block = rpc.get_block_number().await?;

    let started = Instant::now();
    let per_client = args.events / args.clients;
    let mut writers = Vec::new();
    for c in 0..args.clients {
        let client = Client::connect(addr(replicas[c % replicas.len()]), key.clone()).await?;
        let book = book.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..per_client {
                let sent = Instant::now();
                let (event, _) = client
                    .add_message(stream, &format!("c{c} e{i}"), pb::Ack::Local)
                    .await
                    .expect("add");
                let acked = Instant::now();
                let mut book = book.lock().expect("lock");
                let t = book.entry(event.hash()).or_default();
                t.sent = Some(sent);
                t.acked = Some(acked);
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let admitted_at = Instant::now();
    let total = per_client * args.clients;
    let all_final = |book: &HashMap<B256, Times>| {
        book.values()
            .filter(|t| t.sent.is_some() && t.promoted.len() == replicas.len())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while all_final(&book.lock().expect("lock")) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last_block = rpc.get_block_number().await?;

    let book = book.lock().expect("lock").clone();
    let sent: Vec<&Times> = book.values().filter(|t| t.sent.is_some()).collect();
    let finalized_at = sent
        .iter()
        .filter_map(|t| t.promoted.values().max())
        .max()
        .copied()
        .unwrap_or(admitted_at);
    let to_pools: Vec<Duration> = sent
        .iter()
        .filter(|t| t.seen.len() == replicas.len())
        .map(|t| *t.seen.values().max().expect("seen") - t.sent.expect("sent"))
        .collect();
    let to_final: Vec<Duration> = sent
        .iter()
        .filter(|t| t.promoted.len() == replicas.len())
        .map(|t| *t.promoted.values().max().expect("promoted") - t.sent.expect("sent"))
        .collect();

    // Registration transactions per block, per sender.
    let mut per_block: Vec<usize> = Vec::new();
    let mut per_sender_block: HashMap<(u64, Address), usize> = HashMap::new();
    for number in first_block + 1..=last_block {
        let block = rpc
            .get_block_by_number(number.into())
            .full()
            .await?
            .context("block")?;
        let mut count = 0;
        for tx in block.transactions.txns() {
            use alloy::consensus::Transaction as _;
            use alloy::network::TransactionResponse as _;
            if tx.to() == Some(chain.file.registry) {
                count += 1;
                *per_sender_block.entry((number, tx.from())).or_default() += 1;
            }
        }
        per_block.push(count);
    }
    let blocks = per_block.len().max(1);
    let max_per_node = per_sender_block.values().max().copied().unwrap_or(0);

    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "## rill-bench: {} nodes, replication {}, block time {:?}, {} clients\n",
        args.nodes, args.replication, block_time, args.clients
    );
    println!("| measure | value |\n|---|---:|");
    println!("| events sent | {} |", sent.len());
    println!("| events finalized on every replica | {} |", to_final.len());
    println!(
        "| admitted events/s | {:.0} |",
        total as f64 / secs(admitted_at - started)
    );
    println!(
        "| finalized events/s | {:.0} |",
        to_final.len() as f64 / secs(finalized_at - started)
    );
    println!(
        "| add → every replica's minipool, p50 / p99 | {:.1?} / {:.1?} |",
        percentile(to_pools.clone(), 0.5),
        percentile(to_pools, 0.99)
    );
    println!(
        "| add → promoted on every replica, p50 / p99 | {:.1?} / {:.1?} |",
        percentile(to_final.clone(), 0.5),
        percentile(to_final, 0.99)
    );
    println!(
        "| registration transactions per block (all nodes) | {:.2} avg |",
        per_block.iter().sum::<usize>() as f64 / blocks as f64
    );
    println!("| registration transactions per block per node, max | {max_per_node} |");
    drop(processes);
    drop(chain);
    Ok(())
}
