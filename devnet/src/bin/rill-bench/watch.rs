//! Watching replicas: when each event reached a replica's minipool and a promoted miniblock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use rill_client::Client;
use rill_protocol::{ParsedEvent, StreamId, pb};

/// What happened to one event.
#[derive(Default, Clone)]
pub(crate) struct Times {
    pub(crate) sent: Option<Instant>,
    /// `sent` on the wall clock (milliseconds), to compare with headers' timestamps.
    pub(crate) sent_ms: u64,
    /// The stream it was added to.
    pub(crate) stream: Option<StreamId>,
    /// The round that cut it: the chain block that elected it and when its leader built the
    /// candidate (the header's timestamp, wall-clock milliseconds).
    pub(crate) round: Option<(u64, u64)>,
    /// When the node it was sent to acknowledged it, and which replica that was.
    pub(crate) acked: Option<(Instant, usize)>,
    /// Per replica: first seen in its minipool, promoted.
    pub(crate) seen: HashMap<usize, Instant>,
    pub(crate) promoted: HashMap<usize, Instant>,
}

/// Every event's times, built after the run from the [`Journal`].
pub(crate) type Book = HashMap<B256, Times>;

/// What the writers and the watchers saw, in the order they saw it. Each appends a whole
/// answer or update batch at once and the book is built after the run: the bench's own
/// bookkeeping (a map entry per event and replica, thousands at each promotion, on all
/// watchers at once) would otherwise run on the cores the nodes share, at the moments
/// whose latencies it measures.
#[derive(Clone, Default)]
pub(crate) struct Journal(Arc<Mutex<Vec<Entry>>>);

enum Entry {
    /// A writer's add, answered at `acked` by `origin` (`None` when not recorded).
    Sent {
        events: Vec<B256>,
        stream: StreamId,
        sent: Instant,
        sent_ms: u64,
        acked: Option<(Instant, usize)>,
    },
    /// A watcher's batch of updates from `replica`, received at `at`.
    Seen {
        replica: usize,
        at: Instant,
        updates: Vec<Seen>,
    },
}

impl Journal {
    fn push(&self, entry: Entry) {
        self.0.lock().expect("lock").push(entry);
    }

    /// A writer's add of `events` to `stream`, sent at `sent` and answered at `acked`.
    pub(crate) fn sent(
        &self,
        events: Vec<B256>,
        stream: StreamId,
        (sent, sent_ms): (Instant, u64),
        acked: Option<(Instant, usize)>,
    ) {
        self.push(Entry::Sent {
            events,
            stream,
            sent,
            sent_ms,
            acked,
        });
    }

    /// Every event's times: the first time each replica showed it pooled and promoted.
    pub(crate) fn book(&self) -> Book {
        let mut book = Book::new();
        for entry in self.0.lock().expect("lock").iter() {
            match entry {
                Entry::Sent {
                    events,
                    stream,
                    sent,
                    sent_ms,
                    acked,
                } => {
                    for hash in events {
                        let times = book.entry(*hash).or_default();
                        (times.sent, times.sent_ms) = (Some(*sent), *sent_ms);
                        times.stream = Some(*stream);
                        times.acked = *acked;
                    }
                }
                Entry::Seen {
                    replica,
                    at,
                    updates,
                } => {
                    for seen in updates {
                        record(&mut book, *replica, *at, seen);
                    }
                }
            }
        }
        book
    }
}

fn record(book: &mut Book, replica: usize, now: Instant, seen: &Seen) {
    match seen {
        Seen::Pooled(hash) => {
            book.entry(*hash)
                .or_default()
                .seen
                .entry(replica)
                .or_insert(now);
        }
        Seen::Promoted { round, events } => {
            for hash in events {
                let times = book.entry(*hash).or_default();
                times.promoted.entry(replica).or_insert(now);
                times.round = times.round.or(*round);
            }
        }
    }
}

/// Records `replica`'s updates of `stream` into `journal` until `stop`. The watch asks for
/// promoted miniblocks as their headers alone: the events' envelopes came with the minipool
/// updates, and their hashes are all it records.
pub(crate) async fn watch(
    client: Client,
    replica: usize,
    stream: StreamId,
    journal: Journal,
    stop: Arc<AtomicBool>,
) {
    let mut after = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(batch) = client.watch_headers(stream, after, 1000).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let at = Instant::now();
        let updates: Vec<Seen> = batch
            .updates
            .into_iter()
            .filter_map(|update| {
                after = after.max(update.seq);
                match update.kind? {
                    pb::stream_update::Kind::Event(e) => {
                        Some(Seen::Pooled(B256::from_slice(&e.hash)))
                    }
                    pb::stream_update::Kind::MiniblockHeader(header) => promoted(header),
                    // Not asked for: a node that sends whole miniblocks all the same.
                    pb::stream_update::Kind::Miniblock(m) => promoted(m.header?),
                }
            })
            .collect();
        journal.push(Entry::Seen {
            replica,
            at,
            updates,
        });
    }
}

/// What one update of a watched replica showed.
enum Seen {
    /// An event entered its minipool.
    Pooled(B256),
    /// A miniblock was promoted, cut by `round`.
    Promoted {
        round: Option<(u64, u64)>,
        events: Vec<B256>,
    },
}

/// A promoted miniblock from its header: the events it names and the round that cut it (its
/// chain block and its build time). The header's signature and hashes are the nodes' to
/// check, not the bench's.
fn promoted(header: pb::Envelope) -> Option<Seen> {
    let header = ParsedEvent::open_stored(header).ok()?;
    let fields = header.miniblock_header()?;
    Some(Seen::Promoted {
        round: Some((fields.chain_block, fields.timestamp_ms)),
        events: fields
            .event_hashes
            .iter()
            .filter_map(|h| B256::try_from(h.as_slice()).ok())
            .collect(),
    })
}

/// Latencies of the sent events that every one of `replicas` saw: add → every replica's
/// minipool, add → promoted on every replica.
pub(crate) fn latencies(
    book: &Book,
    replicas: impl Fn(&B256) -> usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut to_pools = Vec::new();
    let mut to_final = Vec::new();
    for (hash, t) in book {
        let (Some(sent), n) = (t.sent, replicas(hash)) else {
            continue;
        };
        if n > 0 && t.seen.len() == n {
            to_pools.push(*t.seen.values().max().expect("seen") - sent);
        }
        if n > 0 && t.promoted.len() == n {
            to_final.push(*t.promoted.values().max().expect("promoted") - sent);
        }
    }
    (to_pools, to_final)
}

/// One event's way to every replica's minipool, each from its add: acknowledged (the
/// origin's durable write), in the origin's minipool, in the last other replica's, in every
/// replica's.
pub(crate) struct Hops {
    pub(crate) acked: Duration,
    pub(crate) origin: Option<Duration>,
    pub(crate) others: Option<Duration>,
    pub(crate) every: Duration,
}

impl Times {
    /// The event's [`Hops`], if it was sent with a local acknowledgement recorded and all
    /// `replicas` showed it pooled.
    pub(crate) fn hops(&self, replicas: usize) -> Option<Hops> {
        let (sent, (acked, origin)) = (self.sent?, self.acked?);
        if self.seen.len() != replicas {
            return None;
        }
        let since = |at: Instant| at.saturating_duration_since(sent);
        Some(Hops {
            acked: since(acked),
            origin: self.seen.get(&origin).map(|at| since(*at)),
            others: self
                .seen
                .iter()
                .filter(|(r, _)| **r != origin)
                .map(|(_, at)| since(*at))
                .max(),
            every: since(*self.seen.values().max()?),
        })
    }
}

/// Where add → every replica's minipool goes, for events sent with a local acknowledgement:
/// add → acknowledged, add → in the origin's minipool, and add → in the last other replica's
/// minipool ([`Times::hops`]); of the events `keep` keeps.
pub(crate) fn stages(
    book: &Book,
    replicas: usize,
    keep: impl Fn(&Times) -> bool,
) -> [Vec<Duration>; 3] {
    let mut out: [Vec<Duration>; 3] = Default::default();
    for hops in book
        .values()
        .filter(|t| keep(t))
        .filter_map(|t| t.hops(replicas))
    {
        out[0].push(hops.acked);
        out[1].extend(hops.origin);
        out[2].extend(hops.others);
    }
    out
}
