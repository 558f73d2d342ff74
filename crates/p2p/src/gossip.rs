//! Gossip's layout and wire form.
//!
//! Every node subscribes to exactly one topic, its inbox `/rill/node/1/<address>`. A node
//! sends a stream's events and announcements to the inboxes of the stream's other nodes,
//! batched per destination, so an event costs `replication_factor - 1` messages whatever the
//! number of streams or nodes, and a peer never holds more than one topic (the subscription
//! filter allows a few, inbox topics only). Only registered nodes take part, each holding its
//! own inbox alone; the event loop shuts everyone else out (see `OUTSIDER_SCORE`). Messages are
//! not relayed: the peer that delivers
//! a message is its sender, authenticated by the transport, so gossip messages carry no
//! signature of their own.

use alloy_primitives::{Address, B256};
use libp2p::gossipsub::{
    IdentTopic, MaxCountSubscriptionFilter, TopicHash, TopicSubscriptionFilter,
};
use prost::Message as _;
use rill_protocol::{StreamId, pb};

/// The prefix of every inbox topic.
pub const INBOX_PREFIX: &str = "/rill/node/1/";

/// The inbox topic of a node.
pub fn inbox_topic(node: &Address) -> IdentTopic {
    IdentTopic::new(format!("{INBOX_PREFIX}{node}"))
}

/// The application score of a peer that may not take part in gossip: below gossipsub's
/// gossip, publish and graylist thresholds, so nothing is published, forwarded or announced to
/// it and its messages are ignored.
pub(crate) const OUTSIDER_SCORE: f64 = -1_000_000.0;

/// Topics a peer may hold: a node holds its inbox; a few more leave room for an upgrade.
const MAX_TOPICS_PER_PEER: usize = 4;

/// Accepts inbox topics only.
#[derive(Clone, Debug, Default)]
pub(crate) struct InboxOnly;

impl TopicSubscriptionFilter for InboxOnly {
    fn can_subscribe(&mut self, topic: &TopicHash) -> bool {
        topic.as_str().starts_with(INBOX_PREFIX)
    }
}

/// The subscription filter: inbox topics only, and at most a few per peer.
pub(crate) type Filter = MaxCountSubscriptionFilter<InboxOnly>;

pub(crate) fn filter() -> Filter {
    MaxCountSubscriptionFilter {
        filter: InboxOnly,
        max_subscribed_topics: MAX_TOPICS_PER_PEER,
        max_subscriptions_per_request: 2 * MAX_TOPICS_PER_PEER,
    }
}

/// The events and announcements of one gossip message, per stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GossipBatch {
    /// `NewEventReceived`: full events (not opened yet: that is the receiver's work).
    pub received: Vec<(StreamId, Vec<pb::Envelope>)>,
    /// `NewEventInPool`: the sender holds these events.
    pub in_pool: Vec<(StreamId, Vec<B256>)>,
}

impl GossipBatch {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.received.is_empty() && self.in_pool.is_empty()
    }

    /// Encoded size, roughly (for batching decisions).
    pub fn encoded_len(&self) -> usize {
        let events: usize = self
            .received
            .iter()
            .flat_map(|(_, e)| e)
            .map(|e| e.encoded_len() + 4)
            .sum();
        let hashes: usize = self.in_pool.iter().map(|(_, h)| h.len() * 34).sum();
        events + hashes + 40 * (self.received.len() + self.in_pool.len())
    }

    pub(crate) fn encode(self, sender: Address, seq: u64) -> Vec<u8> {
        pb::GossipBatch {
            sender: sender.to_vec(),
            seq,
            received: self
                .received
                .into_iter()
                .map(|(stream, envelopes)| pb::NewEventReceived {
                    stream_id: stream.0.to_vec(),
                    envelopes,
                })
                .collect(),
            in_pool: self
                .in_pool
                .into_iter()
                .map(|(stream, hashes)| pb::NewEventInPool {
                    stream_id: stream.0.to_vec(),
                    hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Decodes a message and checks its shape; `sender` must be the delivering node.
    pub(crate) fn decode(bytes: &[u8], sender: Address) -> Result<Self, GossipError> {
        let batch = pb::GossipBatch::decode(bytes).map_err(|_| GossipError::Undecodable)?;
        if batch.sender != sender.as_slice() {
            return Err(GossipError::SenderMismatch);
        }
        let stream = |bytes: &[u8]| StreamId::from_slice(bytes).ok_or(GossipError::BadStreamId);
        let received = batch
            .received
            .into_iter()
            .map(|r| Ok((stream(&r.stream_id)?, r.envelopes)))
            .collect::<Result<_, GossipError>>()?;
        let in_pool = batch
            .in_pool
            .into_iter()
            .map(|p| {
                let hashes = p
                    .hashes
                    .iter()
                    .map(|h| B256::try_from(h.as_slice()).map_err(|_| GossipError::BadHash))
                    .collect::<Result<_, _>>()?;
                Ok((stream(&p.stream_id)?, hashes))
            })
            .collect::<Result<_, GossipError>>()?;
        Ok(Self { received, in_pool })
    }
}

/// Why a gossip message is not a Rill gossip batch from its deliverer. No honest node sends
/// one: the peer is penalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// The bytes do not decode.
    #[error("not a gossip batch")]
    Undecodable,
    /// The batch names a sender other than the peer that delivered it.
    #[error("the batch names another sender")]
    SenderMismatch,
    /// A stream id is not 32 bytes.
    #[error("a stream id is not 32 bytes")]
    BadStreamId,
    /// A hash is not 32 bytes.
    #[error("a hash is not 32 bytes")]
    BadHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GossipBatch {
        GossipBatch {
            received: vec![(StreamId([1; 32]), vec![pb::Envelope::default()])],
            in_pool: vec![(StreamId([2; 32]), vec![B256::repeat_byte(3)])],
        }
    }

    #[test]
    fn a_batch_round_trips_from_its_sender() {
        let sender = Address::repeat_byte(9);
        let bytes = sample().encode(sender, 5);
        assert_eq!(GossipBatch::decode(&bytes, sender), Ok(sample()));
    }

    #[test]
    fn a_batch_naming_another_sender_or_with_bad_fields_is_refused() {
        let bytes = sample().encode(Address::repeat_byte(9), 5);
        assert_eq!(
            GossipBatch::decode(&bytes, Address::repeat_byte(8)),
            Err(GossipError::SenderMismatch)
        );
        assert_eq!(
            GossipBatch::decode(&[0xff, 0xff], Address::ZERO),
            Err(GossipError::Undecodable)
        );
        let sender = Address::ZERO;
        let short_stream = pb::GossipBatch {
            sender: sender.to_vec(),
            received: vec![pb::NewEventReceived {
                stream_id: vec![1; 31],
                envelopes: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            GossipBatch::decode(&short_stream.encode_to_vec(), sender),
            Err(GossipError::BadStreamId)
        );
        let short_hash = pb::GossipBatch {
            sender: sender.to_vec(),
            in_pool: vec![pb::NewEventInPool {
                stream_id: vec![1; 32],
                hashes: vec![vec![0; 31]],
            }],
            ..Default::default()
        };
        assert_eq!(
            GossipBatch::decode(&short_hash.encode_to_vec(), sender),
            Err(GossipError::BadHash)
        );
    }

    #[test]
    fn only_inbox_topics_pass_the_filter() {
        let mut filter = InboxOnly;
        assert!(filter.can_subscribe(&inbox_topic(&Address::ZERO).hash()));
        assert!(!filter.can_subscribe(&IdentTopic::new("/rill/stream/0x00").hash()));
    }
}
