//! Gossip waiting for the next batch: per destination node, the events to send and the hashes
//! to announce, for every stream the two nodes share. Flushed every few milliseconds into at
//! most a few messages per destination.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_engine::Gossip;
use rill_p2p::GossipBatch;
use rill_protocol::{StreamId, pb};

/// At most this many bytes of events in one gossip message (a larger event goes alone).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// At most this many announced hashes in one gossip message.
const MAX_BATCH_HASHES: usize = 4_096;

#[derive(Default)]
struct Pending {
    events: Vec<pb::Envelope>,
    hashes: Vec<B256>,
}

/// The gossip to send at the next flush.
#[derive(Default)]
pub(crate) struct Outbox {
    pending: BTreeMap<Address, BTreeMap<StreamId, Pending>>,
}

impl Outbox {
    /// Queues `message` about `stream` for each of `to`.
    pub(crate) fn add(&mut self, to: &[Address], stream: StreamId, message: &Gossip) {
        for node in to {
            let pending = self
                .pending
                .entry(*node)
                .or_default()
                .entry(stream)
                .or_default();
            match message {
                Gossip::EventReceived(event) => pending.events.push(event.envelope().clone()),
                Gossip::EventInPool(hash) => pending.hashes.push(*hash),
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Everything queued, as batches per destination, each within the size limits.
    pub(crate) fn take(&mut self) -> Vec<(Address, GossipBatch)> {
        let mut out = Vec::new();
        for (to, streams) in std::mem::take(&mut self.pending) {
            let mut batch = GossipBatch::default();
            let (mut bytes, mut hashes) = (0, 0);
            for (stream, pending) in streams {
                let mut events = Vec::new();
                for envelope in pending.events {
                    let len = envelope.encoded_len();
                    if bytes + len > MAX_BATCH_BYTES && (bytes > 0 || !events.is_empty()) {
                        if !events.is_empty() {
                            batch.received.push((stream, std::mem::take(&mut events)));
                        }
                        out.push((to, std::mem::take(&mut batch)));
                        (bytes, hashes) = (0, 0);
                    }
                    bytes += len;
                    events.push(envelope);
                }
                if !events.is_empty() {
                    batch.received.push((stream, events));
                }
                for chunk in pending.hashes.chunks(MAX_BATCH_HASHES) {
                    if hashes + chunk.len() > MAX_BATCH_HASHES && !batch.is_empty() {
                        out.push((to, std::mem::take(&mut batch)));
                        (bytes, hashes) = (0, 0);
                    }
                    hashes += chunk.len();
                    batch.in_pool.push((stream, chunk.to_vec()));
                }
            }
            if !batch.is_empty() {
                out.push((to, batch));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(size: usize) -> pb::Envelope {
        pb::Envelope {
            hash: vec![0; 32],
            signature: vec![0; 65],
            event: vec![1; size],
        }
    }

    #[test]
    fn one_message_per_destination_for_every_shared_stream() {
        let mut outbox = Outbox::default();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        for i in 0..100u8 {
            let stream = StreamId([i; 32]);
            outbox.add(&[a, b], stream, &Gossip::EventInPool(B256::repeat_byte(i)));
        }
        let batches = outbox.take();
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|(_, batch)| batch.in_pool.len() == 100));
        assert!(outbox.is_empty());
    }

    #[test]
    fn large_batches_are_split_and_nothing_is_lost() {
        let mut outbox = Outbox::default();
        let to = Address::repeat_byte(1);
        let stream = StreamId([1; 32]);
        let mut pending = Pending::default();
        for _ in 0..40 {
            pending.events.push(envelope(16 * 1024));
        }
        outbox
            .pending
            .entry(to)
            .or_default()
            .insert(stream, pending);
        let batches = outbox.take();
        assert!(batches.len() >= 3, "{} batches", batches.len());
        let events: usize = batches
            .iter()
            .flat_map(|(_, b)| &b.received)
            .map(|(_, e)| e.len())
            .sum();
        assert_eq!(events, 40);
        assert!(
            batches
                .iter()
                .all(|(_, b)| b.encoded_len() <= MAX_BATCH_BYTES + 64 * 1024)
        );
    }
}
