//! A replica far behind: one of a stream's replicas is down while `--catch-up-mb` of large
//! events are finalized; restarted, how fast it serves and catches up from its peers. Also
//! what the write quorum costs on the way from add to promoted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rill_client::Client;
use rill_devnet::wait_serving;
use rill_protocol::{NodeKey, StreamId, pb};
use tokio::task::JoinSet;

use crate::{Args, Devnet, histogram_mean};

/// Bytes of text per event (the default limit is 64 KiB).
const EVENT_BYTES: usize = 40 * 1024;

pub(crate) async fn run(args: &Args, megabytes: u64) -> anyhow::Result<()> {
    let mut devnet = Devnet::start(args, &crate::unlimited_clients()).await?;
    let creator = NodeKey::generate();
    let created = Client::connect(devnet.addr(0), creator.clone())
        .await?
        .create_stream(None)
        .await?;
    let stream = StreamId::from_slice(&created.stream_id).context("stream id")?;
    let replicas = devnet.indexes(&created.nodes);
    anyhow::ensure!(replicas.len() >= 3, "the catch-up bench needs 3 replicas");
    let (up, lagging) = (&replicas[..2], replicas[2]);
    devnet.processes[lagging].stop();

    // Load through the replicas that are up until `megabytes` are acknowledged by a quorum.
    let target = megabytes * 1024 * 1024;
    let (acked, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for c in 0..args.clients {
        let client = Client::connect(devnet.addr(up[c % up.len()]), creator.clone()).await?;
        let (acked, bytes) = (acked.clone(), bytes.clone());
        writers.spawn(async move {
            let text = "x".repeat(EVENT_BYTES);
            let mut i = 0u64;
            while bytes.load(Ordering::Relaxed) < target {
                i += 1;
                let text = format!("w{c} e{i} {text}");
                if client
                    .add_message(stream, &text, pb::Ack::Quorum)
                    .await
                    .is_ok()
                {
                    acked.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let acked = acked.load(Ordering::Relaxed);
    let bytes = bytes.load(Ordering::Relaxed);
    let loaded = started.elapsed();
    // Everything finalized on the replicas that are up: the registered head stops moving.
    let registry = rill_chain::Registry::new(
        devnet.chain.file.registry,
        rill_chain::connect(&devnet.chain.file.rpc_url)?,
    );
    let reader = Client::connect(devnet.addr(up[0]), NodeKey::generate()).await?;
    let mut head = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let local = reader.head(stream, true).await?.0;
        let registered = registry
            .stream(stream)
            .await?
            .context("allocated")?
            .last_miniblock_num;
        let pool = reader.info(false).await?.minipool_events;
        if local == registered && pool == 0 && local == head.0 {
            break;
        }
        head = (local, registered);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let target_head = head.0;

    // The lagging replica comes back.
    let restarted = Instant::now();
    devnet.processes[lagging].start_again()?;
    let lagger = wait_serving(&devnet.processes[lagging].node, Duration::from_secs(60)).await?;
    let to_serving = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok((num, _)) = lagger.head(stream, true).await
            && num >= target_head
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = restarted.elapsed();

    // The write quorum's share of add → promoted, from the nodes' histograms.
    let mut quorum = Vec::new();
    let mut promoted = Vec::new();
    for i in up {
        quorum.push(histogram_mean(&devnet, *i, "rill_candidate_to_write_quorum_seconds").await);
        promoted.push(histogram_mean(&devnet, *i, "rill_add_to_promoted_seconds").await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;

    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "## rill-bench --catch-up-mb {megabytes}: {} nodes, replication {}, block time {:?}, {} writers\n",
        args.nodes, args.replication, devnet.block_time, args.clients
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| finalized while one replica was down | {acked} events, {mb:.1} MiB, {} miniblocks in {loaded:.1?} |",
        target_head
    );
    println!("| restart to serving (SIGTERM, then start) | {to_serving:.2?} |");
    println!(
        "| restart to caught up | {caught_up:.2?}: {:.1} MiB/s, {:.0} events/s |",
        mb / caught_up.as_secs_f64(),
        acked as f64 / caught_up.as_secs_f64()
    );
    println!(
        "| candidate built → write quorum, mean (leaders up) | {:.1} ms |",
        mean(&quorum) * 1000.0
    );
    println!(
        "| add → promoted on the node that admitted it, mean | {:.0} ms |",
        mean(&promoted) * 1000.0
    );
    Ok(())
}
