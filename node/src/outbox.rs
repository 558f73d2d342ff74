//! Gossip waiting for the next batch: per destination node, the events to send and the hashes
//! to announce, for every stream the two nodes share. Flushed every few milliseconds into at
//! most a few messages per destination.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_engine::Gossip;
use rill_p2p::GossipBatch;
use rill_protocol::{StreamId, pb};

/// At most this many bytes in one gossip message, everything counted (a larger event goes
/// alone); the network accepts messages of this size plus one maximal event.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// What one announced hash costs in a message.
const HASH_BYTES: usize = 34;
/// What naming a stream costs in a message.
const STREAM_BYTES: usize = 40;

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

    /// Everything queued, as batches per destination, each within [`MAX_BATCH_BYTES`].
    pub(crate) fn take(&mut self) -> Vec<(Address, GossipBatch)> {
        let mut out = Vec::new();
        for (to, streams) in std::mem::take(&mut self.pending) {
            let mut batch = Batcher::default();
            for (stream, pending) in streams {
                for envelope in pending.events {
                    let size = envelope.encoded_len() + 4;
                    batch.room(size + STREAM_BYTES, to, &mut out);
                    batch.event(stream, envelope, size);
                }
                for hash in pending.hashes {
                    batch.room(HASH_BYTES + STREAM_BYTES, to, &mut out);
                    batch.hash(stream, hash);
                }
            }
            batch.finish(to, &mut out);
        }
        out
    }
}

/// Fills one message at a time.
#[derive(Default)]
struct Batcher {
    batch: GossipBatch,
    bytes: usize,
}

impl Batcher {
    /// Makes room for `size` more bytes, sending the current message if it would not fit.
    fn room(&mut self, size: usize, to: Address, out: &mut Vec<(Address, GossipBatch)>) {
        if self.bytes > 0 && self.bytes + size > MAX_BATCH_BYTES {
            self.finish(to, out);
        }
    }

    fn event(&mut self, stream: StreamId, envelope: pb::Envelope, size: usize) {
        match self.batch.received.last_mut() {
            Some((last, events)) if *last == stream => events.push(envelope),
            _ => {
                self.batch.received.push((stream, vec![envelope]));
                self.bytes += STREAM_BYTES;
            }
        }
        self.bytes += size;
    }

    fn hash(&mut self, stream: StreamId, hash: B256) {
        match self.batch.in_pool.last_mut() {
            Some((last, hashes)) if *last == stream => hashes.push(hash),
            _ => {
                self.batch.in_pool.push((stream, vec![hash]));
                self.bytes += STREAM_BYTES;
            }
        }
        self.bytes += HASH_BYTES;
    }

    fn finish(&mut self, to: Address, out: &mut Vec<(Address, GossipBatch)>) {
        if !self.batch.is_empty() {
            out.push((to, std::mem::take(&mut self.batch)));
        }
        self.bytes = 0;
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
    fn events_and_announcements_together_stay_within_one_message() {
        let mut outbox = Outbox::default();
        let to = Address::repeat_byte(1);
        let stream = StreamId([1; 32]);
        let pending = outbox
            .pending
            .entry(to)
            .or_default()
            .entry(stream)
            .or_default();
        for i in 0..6u8 {
            pending.events.push(envelope(40 * 1024));
            pending.hashes.push(B256::repeat_byte(i));
        }
        for i in 0..5_000u32 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            pending.hashes.push(B256::from(hash));
        }
        let batches = outbox.take();
        let hashes: usize = batches
            .iter()
            .flat_map(|(_, b)| &b.in_pool)
            .map(|(_, h)| h.len())
            .sum();
        assert_eq!(hashes, 5_006);
        for (_, batch) in &batches {
            assert!(
                batch.encoded_len() <= MAX_BATCH_BYTES,
                "{}",
                batch.encoded_len()
            );
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
