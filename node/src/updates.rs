//! Per-stream update logs for `watch` long polls: a bounded window of numbered updates and the
//! clients waiting for the next one.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rill_p2p::Responder;
use rill_protocol::{StreamId, pb};

const WINDOW: usize = 10_000;

struct Waiter {
    after: u64,
    deadline: Instant,
    responder: Responder<pb::ClientResponse>,
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    items: VecDeque<pb::StreamUpdate>,
    waiters: Vec<Waiter>,
}

impl Log {
    fn first_seq(&self) -> u64 {
        self.items.front().map_or(self.next_seq + 1, |u| u.seq)
    }

    fn after(&self, after: u64) -> Vec<pb::StreamUpdate> {
        self.items
            .iter()
            .filter(|u| u.seq > after)
            .cloned()
            .collect()
    }

    fn answer(&self, after: u64, responder: Responder<pb::ClientResponse>) {
        responder.send(pb::ClientResponse {
            kind: Some(pb::client_response::Kind::Subscribe(
                pb::SubscribeResponse {
                    updates: self.after(after),
                    first_seq: self.first_seq(),
                },
            )),
            error: None,
        });
    }
}

/// Update logs of every stream this node holds.
#[derive(Default)]
pub(crate) struct Updates {
    logs: HashMap<StreamId, Log>,
}

impl Updates {
    /// Records an update and answers the clients waiting for it.
    pub(crate) fn push(&mut self, stream: StreamId, kind: pb::stream_update::Kind) {
        let log = self.logs.entry(stream).or_default();
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
        &mut self,
        stream: StreamId,
        after: u64,
        deadline: Instant,
        responder: Responder<pb::ClientResponse>,
    ) {
        let log = self.logs.entry(stream).or_default();
        if log.items.back().is_some_and(|u| u.seq > after) || Instant::now() >= deadline {
            log.answer(after, responder);
        } else {
            log.waiters.push(Waiter {
                after,
                deadline,
                responder,
            });
        }
    }

    /// Answers (empty) the clients whose wait is over.
    pub(crate) fn expire(&mut self, now: Instant) {
        for log in self.logs.values_mut() {
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut log.waiters)
                .into_iter()
                .partition(|w| w.deadline <= now);
            log.waiters = waiting;
            for waiter in due {
                log.answer(waiter.after, waiter.responder);
            }
        }
    }
}
