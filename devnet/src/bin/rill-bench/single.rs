//! Throughput: writers spread over `--spread` streams (one by default) and over each stream's
//! replicas. Finalization is counted from the nodes' own counters (every event promoted on all
//! its replicas); the latencies come from the first stream, watched on every replica (watching
//! them all would cost the bench, on the same cores, as much as a replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::providers::Provider as _;
use anyhow::Context as _;
use rill_chain::connect;
use rill_client::Client;
use rill_protocol::{NodeKey, Payload, StreamId, pb};

use crate::chain::registry_transactions;
use crate::crypto;
use crate::tail::{self, BlockClock};
use crate::watch::{Journal, latencies, stages, watch};
use crate::{Args, Devnet, info_clients, metric, percentile, sum};

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let costs = crypto::measure();
    let devnet = Devnet::start(args, &crate::unlimited_clients()).await?;
    let key = NodeKey::generate();
    let creator = Client::connect(devnet.addr(0), key.clone()).await?;
    // Each stream with its replicas (devnet indexes).
    let mut streams: Vec<(StreamId, Vec<usize>)> = Vec::new();
    for _ in 0..args.spread.max(1) {
        let created = creator.create_stream(None).await?;
        let stream = StreamId::from_slice(&created.stream_id).context("stream id")?;
        streams.push((stream, devnet.indexes(&created.nodes)));
    }
    let replication = streams[0].1.len();

    let journal = Journal::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (watched, replicas) = &streams[0];
    for replica in replicas {
        let client = Client::connect(devnet.addr(*replica), NodeKey::generate()).await?;
        tokio::spawn(watch(
            client,
            *replica,
            *watched,
            journal.clone(),
            stop.clone(),
        ));
    }
    let infos = info_clients(&devnet).await?;
    // A replica counts a stream's genesis (its inception) as a promoted event when it takes
    // the stream in: one that does so after the count starts would report an extra event.
    let placed: u64 = streams
        .iter()
        .map(|(_, replicas)| replicas.len() as u64)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sum(&infos, |i| i.streams_held).await < placed {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replicas did not take the streams in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted_before = sum(&infos, |i| i.events_promoted).await;
    let rpc = connect(&devnet.chain.file.rpc_url)?;
    let first_block = rpc.get_block_number().await?;
    let blocks = BlockClock::default();
    tokio::spawn(tail::clock(rpc.clone(), blocks.clone(), stop.clone()));

    let started = Instant::now();
    let per_client = args.events / args.clients;
    let batch = args.batch.clamp(1, rill_client::MAX_EVENTS_PER_REQUEST);
    let held_back = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let schedule = args.rate.map(|rate| Schedule {
        started,
        every: Duration::from_secs_f64(batch as f64 / rate),
        writers: args.clients as u32,
    });
    let mut writers = Vec::new();
    for c in 0..args.clients {
        let (stream, replicas) = &streams[c % streams.len()];
        let (stream, watched) = (*stream, c % streams.len() == 0);
        let origin = replicas[(c / streams.len()) % replicas.len()];
        let client = Client::connect(devnet.addr(origin), key.clone()).await?;
        let (journal, held_back, late) = (journal.clone(), held_back.clone(), late.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            let mut request = 0;
            while i < per_client {
                let n = batch.min(per_client - i);
                let payloads: Vec<Payload> = (i..i + n)
                    .map(|e| {
                        Payload::Message(pb::Message {
                            data: format!("c{c} e{e}").into_bytes(),
                        })
                    })
                    .collect();
                i += n;
                let sent = match schedule {
                    Some(schedule) => schedule.wait(c as u32, request, &late).await,
                    None => (Instant::now(), tail::now_ms()),
                };
                request += 1;
                let added = add_all(&client, stream, payloads, batch == 1, &held_back).await;
                if !watched {
                    continue;
                }
                let acked = Some((Instant::now(), origin));
                let events = added.iter().map(|e| e.hash()).collect();
                journal.sent(events, stream, sent, acked);
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let admitted_at = Instant::now();
    let total = per_client * args.clients;
    let expected = promoted_before + (total * replication) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut promoted = promoted_before;
    while promoted < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        promoted = sum(&infos, |i| i.events_promoted).await;
    }
    let finalized_at = Instant::now();
    let finalized_events = (promoted - promoted_before) / replication as u64;
    // The watchers see the last promotions a moment later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let last_block = rpc.get_block_number().await?;

    let book = journal.book();
    let (to_pools, to_final) = latencies(&book, |_| replication);
    let [to_ack, to_origin, to_others] = stages(&book, replication, |_| true);
    let txs = registry_transactions(
        &rpc,
        devnet.chain.file.registry,
        first_block + 1,
        last_block,
    )
    .await?;

    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "## rill-bench: {} nodes, replication {}, block time {:?}, {} clients over {} stream(s), {batch} events per request\n",
        args.nodes,
        args.replication,
        devnet.block_time,
        args.clients,
        streams.len()
    );
    println!("| measure | value |\n|---|---:|");
    println!("| events sent | {total} |");
    if let Some(rate) = args.rate {
        println!("| offered events/s (`--rate`) | {rate:.0} |");
        println!(
            "| requests sent after they were due (a writer still waiting for its last answer) | {} |",
            late.load(Ordering::Relaxed)
        );
    }
    if streams.len() > 1 {
        println!(
            "| latencies from (the first stream's events) | {} |",
            to_final.len()
        );
    }
    println!("| events finalized on every replica | {finalized_events} |");
    println!(
        "| admitted events/s | {:.0} |",
        total as f64 / secs(admitted_at - started)
    );
    let finalized = finalized_events as f64 / secs(finalized_at - started);
    println!("| finalized events/s | {finalized:.0} |");
    println!(
        "| add → every replica's minipool, p50 / p99 | {:.1?} / {:.1?} |",
        percentile(to_pools.clone(), 0.5),
        percentile(to_pools, 0.99)
    );
    for (stage, values) in [
        (
            "add → acknowledged (durable on the node it was sent to)",
            to_ack,
        ),
        ("add → in that node's minipool", to_origin),
        ("add → in the other replicas' minipools", to_others),
    ] {
        println!(
            "| {stage}, p50 / p99 | {:.1?} / {:.1?} |",
            percentile(values.clone(), 0.5),
            percentile(values, 0.99)
        );
    }
    let block_ms = devnet.block_time.as_millis() as u64;
    let blocks = blocks.lock().expect("lock").clone();
    let quarters = tail::by_block_quarter(&book, replication, &blocks, block_ms);
    if let Some(path) = &args.latencies {
        tail::write_latencies(path, &book, replication, &blocks)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for (i, values) in quarters.into_iter().enumerate() {
        let (from, to) = (i as u64 * block_ms / 4, (i as u64 + 1) * block_ms / 4);
        println!(
            "| add → every replica's minipool, added {from}–{to} ms after a block ({} events), p50 / p99 | {:.1?} / {:.1?} |",
            values.len(),
            percentile(values.clone(), 0.5),
            percentile(values, 0.99)
        );
    }
    // The first quarter sets the run's p99 (BENCHMARKS.md): which hop its time is in.
    let seen: Vec<u64> = blocks.values().copied().collect();
    let first = stages(&book, replication, |t| {
        tail::quarter_of(t, &seen, block_ms) == Some(0)
    });
    let [ack, origin, others] = first.map(|values| percentile(values, 0.99));
    println!(
        "| added 0–{} ms after a block: acknowledged / in that node's minipool / in the other replicas', p99 | {ack:.1?} / {origin:.1?} / {others:.1?} |",
        block_ms / 4
    );
    println!(
        "| add → promoted on every replica, p50 / p99 | {:.1?} / {:.1?} |",
        percentile(to_final.clone(), 0.5),
        percentile(to_final, 0.99)
    );
    println!(
        "| events held back (`UNAVAILABLE`: their stream's replicas were behind) and sent again | {} |",
        held_back.load(Ordering::Relaxed)
    );
    println!(
        "| registration transactions per block (all nodes) | {:.2} avg |",
        txs.average()
    );
    println!(
        "| registration transactions per block per node, max | {} |",
        txs.max_per_sender_block
    );
    let mut recovered = 0.0;
    for i in 0..devnet.processes.len() {
        recovered += metric(&devnet, i, "rill_signature_recoveries_total").await;
    }
    println!(
        "| event signatures recovered per event sent, all nodes (replication {replication}) | {:.2} |",
        recovered / total as f64
    );
    drop(devnet);
    let costs = crypto::measure_again(costs);
    crypto::report(&costs, args.replication, finalized);
    Ok(())
}

/// The writers' requests at a fixed rate: writer `w`'s request `k` is due at
/// `started + (k × writers + w) × every`.
#[derive(Clone, Copy)]
struct Schedule {
    started: Instant,
    every: Duration,
    writers: u32,
}

impl Schedule {
    /// Waits until writer `w`'s request `k` is due and returns when that was (also on the wall
    /// clock): a request sent late counts its latency from when it was due, and is counted in
    /// `late`.
    async fn wait(&self, w: u32, k: u32, late: &AtomicU64) -> (Instant, u64) {
        let due = self.started + self.every * (k * self.writers + w);
        let now = Instant::now();
        if now < due {
            tokio::time::sleep_until(due.into()).await;
            return (due, tail::now_ms());
        }
        late.fetch_add(1, Ordering::Relaxed);
        let behind = (now - due).as_millis() as u64;
        (due, tail::now_ms().saturating_sub(behind))
    }
}

/// Adds `payloads` (one request, or `AddEvent` when `single`), sending again, after a pause,
/// those the node held back because their stream's replicas were behind; counts them.
async fn add_all(
    client: &Client,
    stream: StreamId,
    mut payloads: Vec<Payload>,
    single: bool,
    held_back: &AtomicU64,
) -> Vec<rill_protocol::ParsedEvent> {
    let unavailable = Some(pb::ErrorCode::Unavailable);
    let mut added = Vec::new();
    while !payloads.is_empty() {
        let mut again = Vec::new();
        if single {
            let payload = payloads.pop().expect("one");
            match client.add(stream, payload.clone(), pb::Ack::Local).await {
                Ok((event, _)) => added.push(event),
                Err(e) if e.code() == unavailable => again.push(payload),
                Err(e) => panic!("add: {e}"),
            }
        } else {
            let results = client
                .add_batch(stream, payloads.clone(), pb::Ack::Local)
                .await
                .expect("add batch");
            for (payload, a) in payloads.iter().zip(results) {
                match a.result {
                    Ok(_) => added.push(a.event),
                    Err(e) if e.code() == unavailable => again.push(payload.clone()),
                    Err(e) => panic!("added: {e}"),
                }
            }
        }
        if !again.is_empty() {
            held_back.fetch_add(again.len() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        payloads = again;
    }
    added
}
