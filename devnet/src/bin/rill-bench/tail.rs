//! Where the slowest events' time went. For each watched event: the round that cut it (the
//! chain block that elected it, and when the leader built its candidate) against when it was
//! added, with the chain's blocks timed as this process saw them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::B256;
use alloy::providers::Provider;
use rill_protocol::StreamId;

use crate::watch::Times;

/// Wall-clock milliseconds (the clock a leader stamps its headers with, on this machine).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When this process first saw each chain block, in wall-clock milliseconds.
pub(crate) type BlockClock = Arc<Mutex<BTreeMap<u64, u64>>>;

/// Polls the chain's head every 20 ms until `stop`, timing each new block.
pub(crate) async fn clock(rpc: impl Provider, blocks: BlockClock, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(number) = rpc.get_block_number().await {
            blocks
                .lock()
                .expect("lock")
                .entry(number)
                .or_insert_with(now_ms);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Means over some events, in blocks.
#[derive(Default)]
pub(crate) struct Breakdown {
    pub(crate) events: usize,
    /// From the add to its candidate being built.
    pub(crate) to_built: f64,
    /// Blocks between the first one after the add and the one that elected the event's round.
    pub(crate) missed: f64,
    /// The share of events whose round came one or more blocks after the first it could have.
    pub(crate) missed_any: f64,
    /// The share of events whose stream had a round at that first block that did not take them
    /// (the rest missed it because their stream had no round there).
    pub(crate) missed_a_round: f64,
    /// From the candidate built to promoted on every replica.
    pub(crate) built_to_final: f64,
}

/// The breakdown of every watched event promoted on all `replicas`, and of the slowest 1 %.
pub(crate) fn breakdown(
    book: &HashMap<B256, Times>,
    replicas: usize,
    blocks: &BTreeMap<u64, u64>,
    block_ms: f64,
) -> (Breakdown, Breakdown) {
    // The blocks that elected a round of each stream that cut a watched event.
    let mut rounds: HashMap<StreamId, BTreeSet<u64>> = HashMap::new();
    for t in book.values() {
        if let (Some(stream), Some((elected, _))) = (t.stream, t.round) {
            rounds.entry(stream).or_default().insert(elected);
        }
    }
    let mut rows = Vec::new();
    for t in book.values() {
        let (Some(sent), Some((elected, built_ms))) = (t.sent, t.round) else {
            continue;
        };
        if t.promoted.len() != replicas {
            continue;
        }
        let total = (*t.promoted.values().max().expect("promoted") - sent).as_millis() as u64;
        let Some((&first, _)) = blocks.iter().find(|(_, seen)| **seen > t.sent_ms) else {
            continue;
        };
        let had_round = t
            .stream
            .and_then(|s| rounds.get(&s))
            .is_some_and(|r| r.contains(&first));
        rows.push(Row {
            total,
            to_built: built_ms.saturating_sub(t.sent_ms),
            missed: elected.saturating_sub(first),
            missed_a_round: elected > first && had_round,
            built_to_final: (t.sent_ms + total).saturating_sub(built_ms),
        });
    }
    rows.sort_unstable_by_key(|r| r.total);
    let slowest = rows.len() - rows.len() / 100;
    (
        mean(&rows, block_ms),
        mean(&rows[slowest.min(rows.len().saturating_sub(1))..], block_ms),
    )
}

/// One event, in milliseconds, except `missed` (blocks).
struct Row {
    /// Add → promoted on every replica.
    total: u64,
    to_built: u64,
    missed: u64,
    /// Its stream had a round at the first block after the add, and it was not in it.
    missed_a_round: bool,
    built_to_final: u64,
}

fn mean(rows: &[Row], block_ms: f64) -> Breakdown {
    let n = rows.len().max(1) as f64;
    let sum = |f: fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / n;
    Breakdown {
        events: rows.len(),
        to_built: sum(|r| r.to_built as f64) / block_ms,
        missed: sum(|r| r.missed as f64),
        missed_any: sum(|r| f64::from(u8::from(r.missed > 0))),
        missed_a_round: sum(|r| f64::from(u8::from(r.missed_a_round))),
        built_to_final: sum(|r| r.built_to_final as f64) / block_ms,
    }
}

/// Add → every one of `replicas`' minipools, for the events added in each quarter of a block
/// time after the last block this process saw. The work each block brings to every node at
/// once (promotions, candidates) shows up as the slow quarter.
pub(crate) fn by_block_quarter(
    book: &HashMap<B256, Times>,
    replicas: usize,
    blocks: &BTreeMap<u64, u64>,
    block_ms: u64,
) -> [Vec<Duration>; 4] {
    let seen: Vec<u64> = blocks.values().copied().collect();
    let mut out: [Vec<Duration>; 4] = Default::default();
    for t in book.values() {
        let Some(sent) = t.sent else { continue };
        if t.seen.len() != replicas {
            continue;
        }
        let Some(quarter) = quarter_of(t, &seen, block_ms) else {
            continue;
        };
        out[quarter].push(*t.seen.values().max().expect("seen") - sent);
    }
    out
}

/// Which quarter of the block time after the last block (`seen`: the blocks' times, in order)
/// the event was added in; `None` before the first block.
pub(crate) fn quarter_of(t: &Times, seen: &[u64], block_ms: u64) -> Option<usize> {
    let after = seen.partition_point(|at| *at <= t.sent_ms);
    let last = seen[after.checked_sub(1)?];
    Some(((t.sent_ms - last) * 4 / block_ms.max(1)).min(3) as usize)
}

/// Writes every event that reached all `replicas` (when it was added, on the wall clock, and
/// its [`Hops`](crate::watch::Hops) but the last other replica's) to `path`, as CSV, and the
/// chain's blocks as this process saw them beside it. An event whose origin never showed it
/// pooled has that field empty.
pub(crate) fn write_latencies(
    path: &Path,
    book: &HashMap<B256, Times>,
    replicas: usize,
    blocks: &BTreeMap<u64, u64>,
) -> std::io::Result<()> {
    let mut rows: Vec<_> = book
        .values()
        .filter_map(|t| Some((t.sent_ms, t.hops(replicas)?)))
        .collect();
    rows.sort_unstable_by_key(|(added, _)| *added);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "added_ms,acknowledged_us,origin_pool_us,every_pool_us")?;
    for (added, hops) in rows {
        let origin = hops
            .origin
            .map_or(String::new(), |d| d.as_micros().to_string());
        writeln!(
            out,
            "{added},{},{origin},{}",
            hops.acked.as_micros(),
            hops.every.as_micros()
        )?;
    }
    out.flush()?;
    let mut chain = path.as_os_str().to_owned();
    chain.push(".blocks.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(chain)?);
    writeln!(out, "block,seen_ms")?;
    for (number, seen) in blocks {
        writeln!(out, "{number},{seen}")?;
    }
    out.flush()
}
