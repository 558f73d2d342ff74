//! Round requests in batches. A leader starts the rounds of all the streams it leads on the same
//! chain block, and its candidates follow the replies together: sent one substream per stream,
//! a node with a thousand active streams opens thousands of request-response exchanges per
//! block, and their per-exchange cost (a yamux substream, protocol negotiation, a task on each
//! side) dominated its network time. Here the proposals and candidates for one peer that arise
//! within [`WINDOW`] go out as one `MiniblockRequestBatch`, and the peer answers each item on
//! its own in one `MiniblockResponseBatch`.
//!
//! This module owns the grouping on the sending side ([`Pending`], [`chunks`]) and the gathering
//! of item answers on the answering side ([`Reply`], [`gather`]). What each item means is the
//! engine's business, reached through the request driver and the router as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::Address;
use prost::Message;
use rill_engine::RequestKind;
use rill_p2p::Responder;
use rill_protocol::{StreamId, pb};
use tokio::sync::oneshot;

use crate::convert::error;

/// How long the first round request for a peer waits for others to join it. The requests of
/// one chain block are produced within one pass of the node's loop, well inside this.
pub(crate) const WINDOW: Duration = Duration::from_millis(1);

/// The most items one batch carries.
pub(crate) const MAX_ITEMS: usize = 1024;

/// A round request waiting for its batch.
pub(crate) struct Item {
    pub(crate) stream: StreamId,
    pub(crate) kind: RequestKind,
    pub(crate) request: pb::MiniblockRequest,
}

/// Round requests waiting for their batch, per peer.
#[derive(Clone, Default)]
pub(crate) struct Pending(Arc<Mutex<HashMap<Address, Vec<Item>>>>);

impl Pending {
    /// Queues `item` for `to`; true if it is the first one queued (the caller flushes the
    /// peer's queue after [`WINDOW`]).
    pub(crate) fn push(&self, to: Address, item: Item) -> bool {
        let mut pending = self.0.lock().expect("pending batches lock");
        let queue = pending.entry(to).or_default();
        queue.push(item);
        queue.len() == 1
    }

    /// Everything queued for `to`.
    pub(crate) fn take(&self, to: &Address) -> Vec<Item> {
        let mut pending = self.0.lock().expect("pending batches lock");
        pending.remove(to).unwrap_or_default()
    }
}

/// Room the batch message itself takes around its items (its field tag and length prefix,
/// with room to spare), kept free under the message limit.
const WRAPPER: usize = 16;

/// Room a message takes as an item of a batch: its bytes, its field tag and length prefix.
fn item_len(message: &impl Message) -> usize {
    let len = message.encoded_len();
    len + prost::length_delimiter_len(len) + 1
}

/// Splits `items`, in order, into batches of at most [`MAX_ITEMS`] items and `max_bytes`
/// encoded bytes. An item over `max_bytes` on its own travels alone (and fails at the
/// transport, as it would unbatched).
pub(crate) fn chunks(items: Vec<Item>, max_bytes: usize) -> Vec<Vec<Item>> {
    let max_bytes = max_bytes.saturating_sub(WRAPPER);
    let mut out: Vec<Vec<Item>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let len = item_len(&item.request);
        match out.last_mut() {
            Some(last) if last.len() < MAX_ITEMS && bytes + len <= max_bytes => {
                bytes += len;
                last.push(item);
            }
            _ => {
                bytes = len;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// The one wire request for `items` (their requests are taken): the item itself when alone,
/// else a batch.
pub(crate) fn wire(items: &mut [Item]) -> pb::MiniblockRequest {
    if let [item] = items {
        return std::mem::take(&mut item.request);
    }
    let items = items.iter_mut().map(|i| std::mem::take(&mut i.request));
    pb::MiniblockRequest {
        kind: Some(pb::miniblock_request::Kind::Batch(
            pb::MiniblockRequestBatch {
                items: items.collect(),
            },
        )),
    }
}

/// The answers to a batch of `n` items, in order; `None` if the answer is not one per item
/// (a node that does not know batches answers the whole request with an error).
pub(crate) fn unpack(
    answer: pb::MiniblockResponse,
    n: usize,
) -> Option<Vec<pb::MiniblockResponse>> {
    match answer.kind {
        Some(pb::miniblock_response::Kind::Batch(batch)) if batch.items.len() == n => {
            Some(batch.items)
        }
        _ => None,
    }
}

/// Where the answer to one round request goes: the asking peer, or its slot in a batch.
pub(crate) enum Reply {
    Peer(Responder<pb::MiniblockResponse>),
    Item(oneshot::Sender<pb::MiniblockResponse>),
}

impl Reply {
    /// Sends the answer.
    pub(crate) async fn send(self, response: pb::MiniblockResponse) {
        match self {
            Reply::Peer(responder) => responder.send(response).await,
            Reply::Item(slot) => {
                let _ = slot.send(response);
            }
        }
    }

    /// Answers with an error, without waiting.
    pub(crate) fn refuse(self, e: pb::Error) {
        tokio::spawn(self.send(refused(e)));
    }
}

fn refused(e: pb::Error) -> pb::MiniblockResponse {
    pb::MiniblockResponse {
        kind: None,
        error: Some(e),
    }
}

/// One [`Reply`] per item of a batch; once every item is answered, the batch's answer goes to
/// `responder`. An item whose reply is dropped unanswered (shed by busy workers, or the node
/// stopping) is answered "unavailable", which the leader takes as "ask again". Items that
/// would carry the answer past `max_bytes` are answered "unavailable" too, instead of failing
/// the whole batch at the transport.
pub(crate) fn gather(
    responder: Responder<pb::MiniblockResponse>,
    n: usize,
    max_bytes: usize,
) -> Vec<Reply> {
    let (slots, answers): (Vec<_>, Vec<_>) = (0..n).map(|_| oneshot::channel()).unzip();
    let max_bytes = max_bytes.saturating_sub(WRAPPER);
    tokio::spawn(async move {
        let mut items = Vec::with_capacity(n);
        let mut bytes = 0;
        for answer in answers {
            let busy = || refused(crate::router::busy());
            let mut item = answer.await.unwrap_or_else(|_| busy());
            if bytes + item_len(&item) > max_bytes {
                item = refused(error(
                    pb::ErrorCode::Unavailable,
                    "the batch's answer is full; ask again",
                ));
            }
            bytes += item_len(&item);
            items.push(item);
        }
        responder
            .send(pb::MiniblockResponse {
                kind: Some(pb::miniblock_response::Kind::Batch(
                    pb::MiniblockResponseBatch { items },
                )),
                error: None,
            })
            .await;
    });
    slots.into_iter().map(Reply::Item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bytes: usize) -> Item {
        Item {
            stream: StreamId([7; 32]),
            kind: RequestKind::Proposal,
            request: pb::MiniblockRequest {
                kind: Some(pb::miniblock_request::Kind::Propose(
                    pb::ProposeMiniblockRequest {
                        stream_id: vec![7; 32],
                        hashes: vec![vec![1; 32]; bytes / 34],
                        ..Default::default()
                    },
                )),
            },
        }
    }

    #[test]
    fn chunks_keep_order_and_respect_both_bounds() {
        let items: Vec<Item> = (0..3000).map(|_| item(100)).collect();
        let per = item_len(&items[0].request);
        let batches = chunks(items, 100 * per + WRAPPER);
        assert!(batches.iter().all(|b| b.len() == 100));
        assert_eq!(batches.len(), 30);

        let items: Vec<Item> = (0..3000).map(|_| item(100)).collect();
        let batches = chunks(items, usize::MAX);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1024, 1024, 952]);
    }

    #[test]
    fn an_item_over_the_bound_travels_alone() {
        let items = vec![item(100), item(10_000), item(100)];
        let batches = chunks(items, 1_000 + WRAPPER);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn a_lone_item_goes_unbatched_and_answers_unpack_only_one_per_item() {
        let mut one = vec![item(100)];
        let request = wire(&mut one);
        assert!(matches!(
            request.kind,
            Some(pb::miniblock_request::Kind::Propose(_))
        ));
        let mut two = vec![item(100), item(100)];
        let request = wire(&mut two);
        let Some(pb::miniblock_request::Kind::Batch(batch)) = request.kind else {
            panic!("two items make a batch");
        };
        assert_eq!(batch.items.len(), 2);

        let answer = |n| pb::MiniblockResponse {
            kind: Some(pb::miniblock_response::Kind::Batch(
                pb::MiniblockResponseBatch {
                    items: vec![pb::MiniblockResponse::default(); n],
                },
            )),
            error: None,
        };
        assert_eq!(unpack(answer(2), 2).map(|a| a.len()), Some(2));
        assert!(unpack(answer(1), 2).is_none(), "one answer short");
        assert!(unpack(refused(crate::router::busy()), 2).is_none());
    }
}
