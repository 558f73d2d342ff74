//! Flood mode: one client floods a node with adds while another adds its events through the
//! same node; the other client's add → quorum latency, without a flood, with one, and with one
//! when the node does not limit clients (a second devnet with `RILL_CLIENT_RATE=0`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use rill_client::Client;
use rill_protocol::{NodeKey, StreamId, pb};

use crate::{Args, Devnet, percentile};

/// Requests a flooder keeps in flight.
const FLOOD_IN_FLIGHT: usize = 64;

/// Environment of a devnet's nodes.
type NodeEnv = Vec<(&'static str, String)>;

/// A phase to run: its name, and whether a client floods meanwhile.
type Run = (&'static str, bool);

/// What one phase measured.
struct Phase {
    name: &'static str,
    latencies: Vec<Duration>,
    flood_sent: u64,
    flood_limited: u64,
    seconds: f64,
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let devnets: [(NodeEnv, Vec<Run>); 2] = [
        (vec![], vec![("no flood", false), ("flood, limited", true)]),
        (
            vec![("RILL_CLIENT_RATE", "0".into())],
            vec![("flood, no limit", true)],
        ),
    ];
    let mut phases = Vec::new();
    for (env, runs) in devnets {
        let devnet = Devnet::start(args, &env).await?;
        let (writer, stream) = writer(&devnet).await?;
        for (name, flood) in runs {
            phases.push(phase(&devnet, &writer, stream, args.events, name, flood).await?);
        }
    }
    println!(
        "## rill-bench --flood: {} nodes, replication {}, one writer adding {} events one at a time (ack quorum) through node 0\n",
        args.nodes, args.replication, args.events
    );
    println!(
        "| phase | writer add → quorum p50 / p99 | flood requests/s sent | refused RATE_LIMITED |"
    );
    println!("|---|---:|---:|---:|");
    for p in phases {
        println!(
            "| {} | {:.1?} / {:.1?} | {:.0} | {:.0} % |",
            p.name,
            percentile(p.latencies.clone(), 0.5),
            percentile(p.latencies, 0.99),
            p.flood_sent as f64 / p.seconds,
            if p.flood_sent == 0 {
                0.0
            } else {
                100.0 * p.flood_limited as f64 / p.flood_sent as f64
            }
        );
    }
    Ok(())
}

async fn writer(devnet: &Devnet) -> anyhow::Result<(Client, StreamId)> {
    let writer = Client::connect(devnet.addr(0), NodeKey::generate()).await?;
    let created = writer.create_stream(None).await?;
    let stream = StreamId::from_slice(&created.stream_id).context("stream id")?;
    Ok((writer, stream))
}

async fn phase(
    devnet: &Devnet,
    writer: &Client,
    stream: StreamId,
    events: usize,
    name: &'static str,
    flood: bool,
) -> anyhow::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooder = if flood {
        // A flooder does not wait when told to.
        let client = Client::connect(devnet.addr(0), NodeKey::generate())
            .await?
            .unpaced();
        let (stop, sent, limited) = (stop.clone(), sent.clone(), limited.clone());
        Some(tokio::spawn(async move {
            futures::stream::iter(std::iter::from_fn(|| {
                (!stop.load(Ordering::Relaxed)).then_some(())
            }))
            .map(|()| {
                let client = &client;
                async move {
                    client
                        .add_envelopes(stream, vec![pb::Envelope::default()], pb::Ack::Local)
                        .await
                }
            })
            .buffer_unordered(FLOOD_IN_FLIGHT)
            .for_each(|answer| {
                sent.fetch_add(1, Ordering::Relaxed);
                if matches!(&answer, Err(e) if e.code() == Some(pb::ErrorCode::RateLimited)) {
                    limited.fetch_add(1, Ordering::Relaxed);
                }
                async {}
            })
            .await;
        }))
    } else {
        None
    };
    // Let the flood reach its pace (and spend its burst) before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (sent_before, limited_before) = (
        sent.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(events);
    for i in 0..events {
        let at = Instant::now();
        writer
            .add_message(stream, &format!("{name} {i}"), pb::Ack::Quorum)
            .await
            .with_context(|| format!("{name}: the writer's add {i}"))?;
        latencies.push(at.elapsed());
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(flooder) = flooder {
        flooder.await?;
    }
    Ok(Phase {
        name,
        latencies,
        flood_sent: sent.load(Ordering::Relaxed) - sent_before,
        flood_limited: limited.load(Ordering::Relaxed) - limited_before,
        seconds,
    })
}
