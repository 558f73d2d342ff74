//! Per-stream update logs for `watch` long polls. A log exists while someone watches the
//! stream: it starts at the first poll, keeps a bounded window of numbered updates, and is
//! dropped when nobody has polled it for a while, so unwatched streams cost nothing. A
//! promoted miniblock is kept parsed and given to each watcher in the form it asked for: whole,
//! or its header alone for a watcher that follows the minipool and holds the envelopes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rill_p2p::Responder;
use rill_protocol::{ParsedMiniblock, StreamId, pb};

use crate::reads::PAGE_BYTES;

/// Updates kept per watched stream.
const WINDOW: usize = 2_000;
/// A log nobody polled for this long is dropped.
const IDLE: Duration = Duration::from_secs(600);

/// What a poll asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Poll {
    /// The updates numbered after this one.
    pub(crate) after: u64,
    /// Promoted miniblocks as their header alone.
    pub(crate) headers_only: bool,
}

struct Waiter {
    poll: Poll,
    deadline: Instant,
    responder: Responder<pb::ClientResponse>,
}

/// One update as the log keeps it.
enum Item {
    /// Sent as it is (an admitted event).
    Sent(pb::stream_update::Kind),
    /// A promoted miniblock, sent whole or as its header.
    Promoted(ParsedMiniblock),
}

impl Item {
    fn to_kind(&self, headers_only: bool) -> pb::stream_update::Kind {
        match self {
            Item::Sent(kind) => kind.clone(),
            Item::Promoted(miniblock) if headers_only => pb::stream_update::Kind::MiniblockHeader(
                miniblock.header_event().envelope().clone(),
            ),
            Item::Promoted(miniblock) => pb::stream_update::Kind::Miniblock(miniblock.to_pb()),
        }
    }
}

struct Log {
    stream: StreamId,
    next_seq: u64,
    /// Numbered updates, oldest first, each numbered one more than the one before.
    items: VecDeque<(u64, Item)>,
    waiters: Vec<Waiter>,
    polled: Instant,
}

impl Log {
    fn new(stream: StreamId, now: Instant) -> Self {
        Self {
            stream,
            next_seq: 0,
            items: VecDeque::new(),
            waiters: Vec::new(),
            polled: now,
        }
    }

    /// Numbers the update and keeps it, and the last [`WINDOW`] before it.
    fn push(&mut self, item: Item) {
        self.next_seq += 1;
        self.items.push_back((self.next_seq, item));
        while self.items.len() > WINDOW {
            self.items.pop_front();
        }
    }

    fn first_seq(&self) -> u64 {
        self.items
            .front()
            .map_or(self.next_seq + 1, |(seq, _)| *seq)
    }

    /// Answers with the updates after `poll.after`, up to a page of bytes (at least one): the
    /// client asks again from the last one it got.
    fn answer(&self, poll: Poll, responder: Responder<pb::ClientResponse>) {
        let response = pb::ClientResponse {
            kind: Some(pb::client_response::Kind::Subscribe(
                pb::SubscribeResponse {
                    updates: self.page(poll, PAGE_BYTES),
                    first_seq: self.first_seq(),
                },
            )),
            error: None,
        };
        tokio::spawn(responder.send(response));
    }

    /// The updates after `poll.after`, up to `budget` bytes of them (at least one).
    fn page(&self, poll: Poll, mut budget: usize) -> Vec<pb::StreamUpdate> {
        // The updates are numbered one after the other: the first one after `poll.after` is
        // found by its number, not by a scan of the window (under the lock the loop records
        // every update with).
        let skip = poll
            .after
            .saturating_add(1)
            .saturating_sub(self.first_seq());
        let from = usize::try_from(skip).map_or(self.items.len(), |s| s.min(self.items.len()));
        let mut updates = Vec::new();
        for (seq, item) in self.items.range(from..) {
            let update = pb::StreamUpdate {
                stream_id: self.stream.0.to_vec(),
                seq: *seq,
                kind: Some(item.to_kind(poll.headers_only)),
            };
            let size = update.encoded_len();
            if !updates.is_empty() && size > budget {
                break;
            }
            budget = budget.saturating_sub(size);
            updates.push(update);
        }
        updates
    }
}

/// The logs of the streams being watched. Shared by the client service (polls) and the node's
/// loop (updates).
#[derive(Clone, Default)]
pub(crate) struct Watch {
    logs: Arc<Mutex<HashMap<StreamId, Log>>>,
}

impl Watch {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Log>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an update of a watched stream and answers the clients waiting for it.
    pub(crate) fn push(&self, stream: StreamId, kind: pb::stream_update::Kind) {
        self.record(stream, Item::Sent(kind));
    }

    /// Records a promotion in a watched stream's log (see [`Watch::push`]).
    pub(crate) fn promoted(&self, stream: StreamId, miniblock: ParsedMiniblock) {
        self.record(stream, Item::Promoted(miniblock));
    }

    fn record(&self, stream: StreamId, item: Item) {
        let mut logs = self.lock();
        let Some(log) = logs.get_mut(&stream) else {
            return;
        };
        log.push(item);
        for waiter in std::mem::take(&mut log.waiters) {
            log.answer(waiter.poll, waiter.responder);
        }
    }

    /// Answers now if there are updates after `poll.after`, else parks the client until
    /// `deadline`.
    pub(crate) fn poll(
        &self,
        stream: StreamId,
        poll: Poll,
        deadline: Instant,
        responder: Responder<pb::ClientResponse>,
    ) {
        let now = Instant::now();
        let mut logs = self.lock();
        let log = logs.entry(stream).or_insert_with(|| Log::new(stream, now));
        log.polled = now;
        if log.items.back().is_some_and(|(seq, _)| *seq > poll.after) || now >= deadline {
            log.answer(poll, responder);
        } else {
            log.waiters.push(Waiter {
                poll,
                deadline,
                responder,
            });
        }
    }

    /// Answers (empty) the clients whose wait is over, and drops logs nobody watches.
    pub(crate) fn expire(&self, now: Instant) {
        let mut logs = self.lock();
        for log in logs.values_mut() {
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut log.waiters)
                .into_iter()
                .partition(|w| w.deadline <= now);
            log.waiters = waiting;
            for waiter in due {
                log.answer(waiter.poll, waiter.responder);
            }
        }
        logs.retain(|_, log| !log.waiters.is_empty() || now.duration_since(log.polled) < IDLE);
    }

    /// Whether anyone watches the stream (building updates costs a copy of every event).
    pub(crate) fn watched(&self, stream: &StreamId) -> bool {
        self.lock().contains_key(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> Item {
        Item::Sent(pb::stream_update::Kind::Event(pb::Envelope {
            hash: i.to_be_bytes().to_vec(),
            ..Default::default()
        }))
    }

    fn seqs(updates: &[pb::StreamUpdate]) -> Vec<u64> {
        updates.iter().map(|u| u.seq).collect()
    }

    fn after(after: u64) -> Poll {
        Poll {
            after,
            headers_only: false,
        }
    }

    #[test]
    fn a_page_starts_after_the_update_asked_for_even_once_the_window_moved_on() {
        let mut log = Log::new(StreamId([7; 32]), Instant::now());
        assert!(log.page(after(0), usize::MAX).is_empty(), "nothing yet");
        let total = WINDOW as u64 + 5;
        for i in 1..=total {
            log.push(event(i));
        }
        assert_eq!(log.first_seq(), 6, "the first five left the window");
        let all: Vec<u64> = (6..=total).collect();
        assert_eq!(
            seqs(&log.page(after(0), usize::MAX)),
            all,
            "behind the window"
        );
        assert_eq!(seqs(&log.page(after(5), usize::MAX)), all);
        assert_eq!(
            seqs(&log.page(after(total - 3), usize::MAX)),
            vec![total - 2, total - 1, total]
        );
        assert!(log.page(after(total), usize::MAX).is_empty(), "up to date");
        assert!(log.page(after(u64::MAX), usize::MAX).is_empty());
        // A page holds what fits, and at least one update.
        let one = log.page(after(10), 0);
        assert_eq!(seqs(&one), vec![11]);
        let size = one[0].encoded_len();
        assert_eq!(seqs(&log.page(after(10), 2 * size)), vec![11, 12]);
    }
}
