//! Many streams: creation rate, idle cost of held streams, restart to serving, and events
//! spread over the active streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::providers::Provider as _;
use rill_chain::connect;
use rill_client::Client;
use rill_devnet::wait_serving;
use rill_protocol::{NodeKey, StreamId, pb};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::chain::registry_transactions;
use crate::watch::{Journal, latencies, watch};
use crate::{Args, Devnet, histogram_mean, info_clients, metric, percentile, sum};
use crate::{crypto, tail};

/// A created stream and the indexes of its nodes.
type Placed = (StreamId, Vec<usize>);

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let evict = ("RILL_EVICT_IDLE_AFTER", args.evict_idle_after.to_string());
    let costs = crypto::measure();
    let [rate, creations] = crate::unlimited_clients();
    let mut devnet = Devnet::start(args, &[evict, rate, creations]).await?;
    let rpc = connect(&devnet.chain.file.rpc_url)?;
    let infos = info_clients(&devnet).await?;
    let rss_empty: Vec<u64> = devnet.processes.iter().map(|p| rss(p.pid())).collect();

    // Creation.
    let first_block = rpc.get_block_number().await?;
    let started = Instant::now();
    let creator = NodeKey::generate();
    let (streams, failed) =
        create(&devnet, &creator, args.streams, args.create_concurrency).await?;
    let creation = started.elapsed();
    let last_block = rpc.get_block_number().await?;
    let txs = registry_transactions(
        &rpc,
        devnet.chain.file.registry,
        first_block + 1,
        last_block,
    )
    .await?;

    // Idle, once every node evicted what creation loaded.
    tokio::time::sleep(Duration::from_secs_f64(args.evict_idle_after + 2.0)).await;
    let deadline = Instant::now() + Duration::from_secs_f64(args.evict_idle_after + 60.0);
    while sum(&infos, |i| i.streams_loaded).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let idle = Duration::from_secs_f64(args.idle_seconds);
    let cpu = idle_cpu(&devnet, idle).await;
    let mut idle_rows = Vec::new();
    for (i, p) in devnet.processes.iter().enumerate() {
        let info = infos[i].info(false).await?;
        let rss = rss(p.pid());
        idle_rows.push((
            info.streams_held,
            info.streams_loaded,
            cpu[i],
            rss,
            rss_empty[i],
        ));
    }

    // Restart to serving: node 0 killed with everything it holds.
    devnet.processes[0].kill9();
    let restarted = Instant::now();
    devnet.processes[0].start_again()?;
    let fresh = wait_serving(&devnet.processes[0].node, Duration::from_secs(120)).await?;
    // Serving means holding its streams again, not just answering.
    let mut held_after_restart = 0;
    while held_after_restart == 0 && restarted.elapsed() < Duration::from_secs(120) {
        held_after_restart = fresh.info(false).await?.streams_held;
    }
    let to_serving = restarted.elapsed();
    // What holding the streams costs, without what creating them left behind.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_restarted = rss(devnet.processes[0].pid());
    let mut infos = infos;
    infos[0] = fresh;

    // Events over the active streams.
    let active = args.active.unwrap_or(1000).min(streams.len());
    let load = load(&devnet, &infos, &creator, &streams[..active], args).await?;

    let secs = |d: Duration| d.as_secs_f64();
    let block = secs(devnet.block_time);
    println!(
        "## rill-bench --streams {}: {} nodes, replication {}, block time {:?}\n",
        args.streams, args.nodes, args.replication, devnet.block_time
    );
    println!("| measure | value |\n|---|---:|");
    println!("| streams created | {} ({failed} failed) |", streams.len());
    println!(
        "| creation rate ({} in flight) | {:.0} streams/s |",
        args.create_concurrency,
        streams.len() as f64 / secs(creation)
    );
    println!(
        "| registry transactions during creation: total / per block / max per node and block | {} / {:.2} / {} |",
        txs.total(),
        txs.average(),
        txs.max_per_sender_block
    );
    println!(
        "| gas per created stream (blocks' gas / streams) | {} |",
        txs.gas_used / streams.len().max(1) as u64
    );
    println!(
        "| restart (kill -9) to serving, node holding {held_after_restart} streams | {to_serving:.2?} |"
    );
    println!(
        "| RSS of that node once restarted (nothing loaded) / per held stream over an empty node | {} MiB / {} B |",
        rss_restarted >> 20,
        rss_restarted.saturating_sub(rss_empty[0]) / held_after_restart.max(1)
    );
    println!(
        "| active streams / writers / events acknowledged | {active} / {} / {} ({} failed) |",
        args.clients, load.acked, load.failed
    );
    let finalized = load.acked as f64 / secs(load.finalized);
    println!("| finalized events/s (promoted on every replica) | {finalized:.0} |");
    println!(
        "| add → every replica's minipool, p50 / p99 (sample of {} streams) | {:.1?} / {:.1?} |",
        load.watched,
        percentile(load.to_pools.clone(), 0.5),
        percentile(load.to_pools, 0.99)
    );
    println!(
        "| add → promoted on every replica, p50 / p99 | {:.1?} / {:.1?} ({:.1} / {:.1} blocks) |",
        percentile(load.to_final.clone(), 0.5),
        percentile(load.to_final.clone(), 0.99),
        secs(percentile(load.to_final.clone(), 0.5)) / block,
        secs(percentile(load.to_final, 0.99)) / block,
    );
    // Where the time from add to promoted goes, as the nodes measured it themselves.
    let mut stages = Vec::new();
    for name in [
        "rill_block_to_candidate_seconds",
        "rill_candidate_to_write_quorum_seconds",
        "rill_candidate_to_registered_seconds",
        "rill_registration_queued_seconds",
        "rill_registration_inclusion_seconds",
        "rill_add_to_promoted_seconds",
    ] {
        stages.push(nodes_mean(&devnet, name).await / block);
    }
    println!(
        "| means over the nodes, in blocks: block → candidate built / candidate → write quorum / write quorum → registered (of which in the registrar's queue / sent → receipt) / add → promoted on the node that took it | {:.2} / {:.2} / {:.2} ({:.2} / {:.2}) / {:.2} |",
        stages[0], stages[1], stages[2], stages[3], stages[4], stages[5]
    );
    let (mut built, mut chained) = (0.0, 0.0);
    for i in 0..devnet.processes.len() {
        built += metric(&devnet, i, "rill_miniblocks_produced_total").await;
        chained += metric(&devnet, i, "rill_miniblocks_chained_total").await;
    }
    println!(
        "| candidates built by leaders / of which chained on one not yet registered | {built} / {chained} |"
    );
    // Cumulative counts of the leaders' `registration_lag_blocks` buckets 1, 2, 3 and all.
    let mut lag = [0.0; 4];
    for i in 0..devnet.processes.len() {
        for (slot, le) in ["1.0", "2.0", "3.0", "+Inf"].into_iter().enumerate() {
            let bucket = format!("rill_registration_lag_blocks_bucket{{le=\"{le}\"}}");
            lag[slot] += metric(&devnet, i, &bucket).await;
        }
    }
    let share = |n: f64| 100.0 * n / lag[3].max(1.0);
    println!(
        "| candidates promoted 1 / 2 / 3 / more blocks after the block their round was elected at | {:.0} % / {:.0} % / {:.0} % / {:.0} % |",
        share(lag[0]),
        share(lag[1] - lag[0]),
        share(lag[2] - lag[1]),
        share(lag[3] - lag[2]),
    );
    let (all, slowest) = &load.breakdown;
    println!(
        "| watched events, all ({}) / the slowest 1 % ({}): add → candidate built, blocks / blocks its round came after the first block past the add (share with one or more; share left out of a round their stream had at that block) / candidate built → promoted on every replica, blocks | {:.2} / {:.2} ({:.0} %; {:.0} %) / {:.2}; {:.2} / {:.2} ({:.0} %; {:.0} %) / {:.2} |",
        all.events,
        slowest.events,
        all.to_built,
        all.missed,
        all.missed_any * 100.0,
        all.missed_a_round * 100.0,
        all.built_to_final,
        slowest.to_built,
        slowest.missed,
        slowest.missed_any * 100.0,
        slowest.missed_a_round * 100.0,
        slowest.built_to_final,
    );
    println!("\nIdle, all streams held and evicted from memory ({idle:?} measured):\n");
    println!("| node | held | loaded | CPU (% of a core) | RSS | RSS empty | per held stream |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (held, loaded, cpu, rss, empty)) in idle_rows.into_iter().enumerate() {
        println!(
            "| {i} | {held} | {loaded} | {:.1} % | {} MiB | {} MiB | {} B |",
            cpu * 100.0,
            rss >> 20,
            empty >> 20,
            rss.saturating_sub(empty) / held.max(1)
        );
    }
    drop(devnet);
    let costs = crypto::measure_again(costs);
    crypto::report(&costs, args.replication, finalized);
    Ok(())
}

/// One `Info` client per node.
/// The mean over the nodes that observed any of histogram `name`.
async fn nodes_mean(devnet: &Devnet, name: &str) -> f64 {
    let mut means = Vec::new();
    for i in 0..devnet.processes.len() {
        let mean = histogram_mean(devnet, i, name).await;
        if mean > 0.0 {
            means.push(mean);
        }
    }
    means.iter().sum::<f64>() / means.len().max(1) as f64
}

/// Creates `count` streams owned by `creator`, `concurrency` at a time, spread over the
/// nodes.
async fn create(
    devnet: &Devnet,
    creator: &NodeKey,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Placed>, usize)> {
    let mut clients = Vec::new();
    for i in 0..devnet.processes.len() * 2 {
        let addr = devnet.addr(i % devnet.processes.len());
        clients.push(Client::connect(addr, creator.clone()).await?);
    }
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await?;
        let client = clients[i % clients.len()].clone();
        tasks.spawn(async move {
            let created = client.create_stream(None).await;
            drop(permit);
            created
        });
    }
    let (mut placed, mut failed) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done? {
            Ok(created) => match StreamId::from_slice(&created.stream_id) {
                Some(id) => placed.push((id, devnet.indexes(&created.nodes))),
                None => failed += 1,
            },
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("create failed: {e}");
                }
            }
        }
    }
    Ok((placed, failed))
}

/// Each node's CPU use over `period`, as a fraction of one core.
async fn idle_cpu(devnet: &Devnet, period: Duration) -> Vec<f64> {
    let before: Vec<Option<u64>> = devnet
        .processes
        .iter()
        .map(|p| cpu_ticks(p.pid()))
        .collect();
    tokio::time::sleep(period).await;
    let ticks_per_second = clock_ticks() as f64;
    devnet
        .processes
        .iter()
        .zip(before)
        .map(|(p, before)| match (before, cpu_ticks(p.pid())) {
            (Some(b), Some(a)) => (a - b) as f64 / ticks_per_second / period.as_secs_f64(),
            _ => f64::NAN,
        })
        .collect()
}

/// User plus system CPU time of a process, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Resident memory of a process in bytes (`VmRSS` in `/proc/<pid>/status`), 0 if unknown.
fn rss(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// What the load over the active streams achieved.
struct Loaded {
    acked: u64,
    failed: u64,
    /// From the first add until every acknowledged event was promoted on all its replicas.
    finalized: Duration,
    watched: usize,
    to_pools: Vec<Duration>,
    to_final: Vec<Duration>,
    /// Where the watched events' time went: all of them, and the slowest 1 %.
    breakdown: (tail::Breakdown, tail::Breakdown),
}

/// `args.clients` writers add `args.events` events over `active`, each through one of the
/// stream's nodes; a sample of streams is watched on every replica.
async fn load(
    devnet: &Devnet,
    infos: &[Client],
    key: &NodeKey,
    active: &[Placed],
    args: &Args,
) -> anyhow::Result<Loaded> {
    let nodes = devnet.processes.len();
    let journal = Journal::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watched = args.watch.min(active.len());
    let mut watch_clients = HashMap::new();
    for (stream, replicas) in &active[..watched] {
        for replica in replicas {
            if !watch_clients.contains_key(replica) {
                let client = Client::connect(devnet.addr(*replica), NodeKey::generate()).await?;
                watch_clients.insert(*replica, client);
            }
            let client = watch_clients[replica].clone();
            tokio::spawn(watch(
                client,
                *replica,
                *stream,
                journal.clone(),
                stop.clone(),
            ));
        }
    }
    let blocks = tail::BlockClock::default();
    tokio::spawn(tail::clock(
        connect(&devnet.chain.file.rpc_url)?,
        blocks.clone(),
        stop.clone(),
    ));
    let replication = active.first().map_or(1, |(_, r)| r.len()) as u64;
    let promoted_before = sum(infos, |i| i.events_promoted).await;
    let (acked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let per_node = args.clients.div_ceil(nodes);
    let per_writer = args.events / args.clients;
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for c in 0..args.clients {
        let node = c % nodes;
        let mine: Vec<(StreamId, bool)> = active
            .iter()
            .enumerate()
            .filter(|(_, (_, replicas))| replicas.contains(&node))
            .enumerate()
            .filter(|(k, _)| k % per_node == c / nodes)
            .map(|(_, (index, (id, _)))| (*id, index < watched))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let client = Client::connect(devnet.addr(node), key.clone()).await?;
        let (journal, acked, failed) = (journal.clone(), acked.clone(), failed.clone());
        writers.spawn(async move {
            for i in 0..per_writer {
                let (stream, watched) = mine[i % mine.len()];
                let sent = (Instant::now(), tail::now_ms());
                match client
                    .add_message(stream, &format!("w{c} e{i}"), pb::Ack::Local)
                    .await
                {
                    Ok((event, _)) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        if watched {
                            journal.sent(vec![event.hash()], stream, sent, None);
                        }
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("add failed: {e}");
                        }
                    }
                }
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let acked = acked.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(300);
    while sum(infos, |i| i.events_promoted).await - promoted_before < acked * replication
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finalized = started.elapsed();
    // The watchers see the last promotions a moment later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let book = journal.book();
    let (to_pools, to_final) = latencies(&book, |_| replication as usize);
    let block_ms = args.block_time * 1000.0;
    let blocks = blocks.lock().expect("lock").clone();
    let breakdown = tail::breakdown(&book, replication as usize, &blocks, block_ms);
    Ok(Loaded {
        acked,
        failed: failed.load(Ordering::Relaxed),
        finalized,
        watched,
        to_pools,
        to_final,
        breakdown,
    })
}
