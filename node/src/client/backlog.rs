//! Backpressure on admission. A node acknowledges a client's events once they are on its own
//! disk, so nothing else stops its clients from adding faster than the stream's other nodes
//! take the events in. Unchecked, the difference piles up in the replicas' queues: gossip
//! waits there for seconds, the senders push it again, candidates miss their write quorum
//! and every round is given up (measured: BENCHMARKS.md, "Backpressure on admission").
//!
//! So each stream has a budget of events this node took from clients that its replicas do not
//! all hold yet: the share of an event comes back once a quorum of the stream's nodes holds it
//! *and* so does every node heard from lately (the engine's `EventReplicated`). Waiting for a
//! quorum alone let one slow replica of three fall further and further behind while the
//! other two went on, until the rounds it led stalled (BENCHMARKS.md, "Pacing writers to
//! the slowest live replica"); a replica silent for a few seconds (crashed, cut off) no
//! longer counts, so it does not stop the writers.
//!
//! An add takes its share before its events are opened (a refused add costs no signature
//! check); each event gives its share back when it is replicated so, when it is promoted,
//! when it is refused, or at the latest after [`LEASE`]. An add that finds the budget spent
//! waits up to [`WAIT`] and is then refused `UNAVAILABLE`: the client slows down to the pace
//! of the stream's replicas, and one stream that cannot reach a quorum does not hold back the
//! node's other streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::B256;
use futures::FutureExt;
use rill_protocol::{StreamId, pb};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::Acks;
use crate::convert::error;

/// How long an add waits for room in its stream's budget before it is refused.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// The longest an event holds its share: one whose replication is never reported (its stream
/// was evicted, its replicas are down) gives it back after this long.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
/// Streams with a budget entry beyond which unused entries are dropped.
const TRIM_AT: usize = 1024;

/// The per-stream budgets of one node.
#[derive(Debug)]
pub(crate) struct Backlog {
    /// Events per stream; `None`: no limit.
    limit: Option<usize>,
    streams: Mutex<HashMap<StreamId, Arc<Semaphore>>>,
}

/// Shares of a stream's budget, given back when dropped (all at once) or one by one
/// ([`Share::give_back`]).
#[derive(Debug)]
pub(crate) struct Share {
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the add had to wait for them (the budget was spent when it came).
    paced: bool,
}

impl Share {
    /// Gives back `n` of the shares (fewer if it holds fewer).
    pub(crate) fn give_back(&mut self, n: usize) {
        let Some(permit) = self.permit.as_mut() else {
            return;
        };
        if n >= permit.num_permits() {
            self.permit = None;
        } else {
            drop(permit.split(n));
        }
    }

    /// How many shares it still holds.
    pub(crate) fn held(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Whether the add waited for room in its stream's budget.
    pub(crate) fn paced(&self) -> bool {
        self.paced
    }

    fn none() -> Self {
        Self {
            permit: None,
            paced: false,
        }
    }
}

impl Backlog {
    /// A budget of `limit` events per stream (`None`: unlimited).
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Self {
            limit: limit.map(|l| l.max(1)),
            streams: Mutex::default(),
        }
    }

    /// Takes `count` shares of `stream`'s budget, waiting up to `wait` for them (an add larger
    /// than the whole budget takes all of it).
    pub(crate) async fn enter(
        &self,
        stream: StreamId,
        count: usize,
        wait: Duration,
    ) -> Result<Share, pb::Error> {
        let Some(limit) = self.limit else {
            return Ok(Share::none());
        };
        if count == 0 {
            return Ok(Share::none());
        }
        let semaphore = {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if streams.len() >= TRIM_AT {
                // Entries nobody holds a share of (or waits on) are at their full budget.
                streams.retain(|_, s| Arc::strong_count(s) > 1);
            }
            streams
                .entry(stream)
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        };
        let wanted = u32::try_from(count.min(limit)).unwrap_or(u32::MAX);
        // One poll first, to tell an add that had to wait from one that did not; the same
        // future then keeps its place in the semaphore's queue (adds go in arrival order).
        let mut acquire = std::pin::pin!(semaphore.acquire_many_owned(wanted));
        if let Some(Ok(permit)) = acquire.as_mut().now_or_never() {
            return Ok(Share {
                permit: Some(permit),
                paced: false,
            });
        }
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Ok(Share {
                permit: Some(permit),
                paced: true,
            }),
            _ => Err(error(
                pb::ErrorCode::Unavailable,
                format!(
                    "stream {stream}: {limit} events this node took wait for the stream's \
                     replicas to hold them; retry later"
                ),
            )),
        }
    }
}

/// Keeps the accepted events' share of their stream's budget until each is replicated (held
/// by a quorum and every live replica) or promoted: `leased` are their
/// [`Wait::Replicated`](super::Wait) waits, registered with `acks` before admission. At most
/// [`LEASE`].
pub(crate) fn hold_until_replicated(
    acks: &Acks,
    mut share: Share,
    leased: Vec<(B256, oneshot::Receiver<Option<u64>>)>,
) {
    if leased.is_empty() {
        return;
    }
    let acks = acks.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LEASE;
        for (hash, replicated) in leased {
            if tokio::time::timeout_at(deadline, replicated).await.is_err() {
                // Never reported: forget the wait (its receiver is gone now).
                acks.cancel(&hash);
            }
            share.give_back(1);
        }
    });
}

/// The refusal of an add that waited too long behind the node's replication work.
pub(crate) fn busy_replicating() -> pb::Error {
    error(
        pb::ErrorCode::Unavailable,
        "the node is busy keeping up with its streams' other nodes; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(i: u8) -> StreamId {
        StreamId([i; 32])
    }

    #[tokio::test]
    async fn an_add_waits_for_the_shares_its_stream_gives_back() {
        let backlog = Arc::new(Backlog::new(Some(10)));
        let mut first = backlog.enter(stream(1), 8, WAIT).await.unwrap();
        assert_eq!((first.held(), first.paced()), (8, false));
        // Another stream has its own budget.
        let other = backlog.enter(stream(2), 10, WAIT).await.unwrap();
        assert_eq!(other.held(), 10);
        // Four more do not fit beside eight: refused after the wait, with the reason.
        let refused = backlog
            .enter(stream(1), 4, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(refused.code, pb::ErrorCode::Unavailable as i32);
        assert!(
            refused.message.contains("wait for the stream's replicas"),
            "{}",
            refused.message
        );
        // Two events reach their quorum: the waiting add goes in.
        let waiting = {
            let backlog = backlog.clone();
            tokio::spawn(async move { backlog.enter(stream(1), 4, WAIT).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        first.give_back(2);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!((first.held(), second.held()), (6, 4));
        assert!(second.paced(), "it waited for room");
        drop(first);
        drop(second);
        // An add larger than the budget takes all of it, rather than waiting forever.
        let all = backlog.enter(stream(1), 25, WAIT).await.unwrap();
        assert_eq!(all.held(), 10);
    }

    #[tokio::test]
    async fn no_limit_takes_nothing() {
        let backlog = Backlog::new(None);
        let share = backlog.enter(stream(1), 1_000_000, WAIT).await.unwrap();
        assert_eq!(share.held(), 0);
    }

    #[tokio::test]
    async fn unused_budgets_are_trimmed() {
        let backlog = Backlog::new(Some(4));
        for i in 0..=TRIM_AT {
            let id = StreamId(alloy_primitives::keccak256((i as u64).to_be_bytes()).0);
            drop(backlog.enter(id, 1, WAIT).await.unwrap());
        }
        let kept = backlog.enter(stream(7), 1, WAIT).await.unwrap();
        assert!(backlog.streams.lock().unwrap().len() <= 2, "trimmed");
        drop(kept);
    }
}
