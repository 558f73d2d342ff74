//! Per-stream update logs for `watch` long polls. A log exists while someone watches the
//! stream: it starts at the first poll, keeps a bounded window of numbered updates, and is
//! dropped when nobody has polled it for a while, so unwatched streams cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rill_p2p::Responder;
use rill_protocol::{StreamId, pb};

use crate::reads::PAGE_BYTES;

/// Updates kept per watched stream.
const WINDOW: usize = 2_000;
/// A log nobody polled for this long is dropped.
const IDLE: Duration = Duration::from_secs(600);

struct Waiter {
    after: u64,
    deadline: Instant,
    responder: Responder<pb::ClientResponse>,
}

struct Log {
    next_seq: u64,
    items: VecDeque<pb::StreamUpdate>,
    waiters: Vec<Waiter>,
    polled: Instant,
}

impl Log {
    fn new(now: Instant) -> Self {
        Self {
            next_seq: 0,
            items: VecDeque::new(),
            waiters: Vec::new(),
            polled: now,
        }
    }

    fn first_seq(&self) -> u64 {
        self.items.front().map_or(self.next_seq + 1, |u| u.seq)
    }

    /// Answers with the updates after `after`, up to a page of bytes (at least one): the
    /// client asks again from the last one it got.
    fn answer(&self, after: u64, responder: Responder<pb::ClientResponse>) {
        let mut budget = PAGE_BYTES;
        let mut updates = Vec::new();
        for update in self.items.iter().filter(|u| u.seq > after) {
            let size = update.encoded_len();
            if !updates.is_empty() && size > budget {
                break;
            }
            budget = budget.saturating_sub(size);
            updates.push(update.clone());
        }
        let response = pb::ClientResponse {
            kind: Some(pb::client_response::Kind::Subscribe(
                pb::SubscribeResponse {
                    updates,
                    first_seq: self.first_seq(),
                },
            )),
            error: None,
        };
        tokio::spawn(responder.send(response));
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
        let mut logs = self.lock();
        let Some(log) = logs.get_mut(&stream) else {
            return;
        };
        log.next_seq += 1;
        log.items.push_back(pb::StreamUpdate {
            stream_id: stream.0.to_vec(),
            seq: log.next_seq,
            kind: Some(kind),
        });
        while log.items.len() > WINDOW {
            log.items.pop_front();
        }
        for waiter in std::mem::take(&mut log.waiters) {
            log.answer(waiter.after, waiter.responder);
        }
    }

    /// Answers now if there are updates after `after`, else parks the client until `deadline`.
    pub(crate) fn poll(
        &self,
        stream: StreamId,
        after: u64,
        deadline: Instant,
        responder: Responder<pb::ClientResponse>,
    ) {
        let now = Instant::now();
        let mut logs = self.lock();
        let log = logs.entry(stream).or_insert_with(|| Log::new(now));
        log.polled = now;
        if log.items.back().is_some_and(|u| u.seq > after) || now >= deadline {
            log.answer(after, responder);
        } else {
            log.waiters.push(Waiter {
                after,
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
                log.answer(waiter.after, waiter.responder);
            }
        }
        logs.retain(|_, log| !log.waiters.is_empty() || now.duration_since(log.polled) < IDLE);
    }

    /// Whether anyone watches the stream (building updates costs a copy of every event).
    pub(crate) fn watched(&self, stream: &StreamId) -> bool {
        self.lock().contains_key(stream)
    }
}
