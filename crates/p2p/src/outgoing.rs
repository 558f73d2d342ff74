//! Gossip on its way to node inboxes. A message is published only once its destination is
//! subscribed to its inbox: gossipsub refuses it before that, and hashing and copying a large
//! message for every refused attempt would saturate the swarm's task. A message for a
//! destination that is connected but whose subscription has not arrived yet waits for it (a
//! few seconds at most); one for a destination that is not connected is dropped at once and
//! counted: the node carries its events again (anti-entropy pushes and fetches) when the
//! destination is back.

use std::collections::{HashMap, HashSet};

use libp2p::PeerId;
use libp2p::gossipsub::TopicHash;
use tokio::time::Instant;

/// Who is subscribed to which inbox, and what waits for a subscription.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    subscribers: HashMap<TopicHash, HashSet<PeerId>>,
    waiting: HashMap<TopicHash, Vec<(Vec<u8>, Instant)>>,
}

impl Outgoing {
    /// Whether anyone is subscribed to `topic`.
    pub(crate) fn is_subscribed(&self, topic: &TopicHash) -> bool {
        self.subscribers.get(topic).is_some_and(|s| !s.is_empty())
    }

    /// `peer` subscribed to `topic`: the messages that waited for it.
    pub(crate) fn subscribed(&mut self, peer: PeerId, topic: TopicHash) -> Vec<Vec<u8>> {
        let waiting = self.waiting.remove(&topic).unwrap_or_default();
        self.subscribers.entry(topic).or_default().insert(peer);
        waiting.into_iter().map(|(data, _)| data).collect()
    }

    /// `peer` left `topic`.
    pub(crate) fn unsubscribed(&mut self, peer: &PeerId, topic: &TopicHash) {
        if let Some(peers) = self.subscribers.get_mut(topic) {
            peers.remove(peer);
        }
    }

    /// `peer` disconnected: it is subscribed to nothing any more.
    pub(crate) fn gone(&mut self, peer: &PeerId) {
        for peers in self.subscribers.values_mut() {
            peers.remove(peer);
        }
    }

    /// Keeps `data` until `topic` gets a subscriber, or `until`.
    pub(crate) fn wait(&mut self, topic: TopicHash, data: Vec<u8>, until: Instant) {
        self.waiting.entry(topic).or_default().push((data, until));
    }

    /// Whether anything waits.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Drops what waited past its time; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.waiting.retain(|_, messages| {
            let before = messages.len();
            messages.retain(|(_, until)| *until > now);
            dropped += before - messages.len();
            !messages.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn waiting_messages_go_out_when_their_destination_subscribes_or_expire() {
        let mut outgoing = Outgoing::default();
        let (peer, topic, other) = (
            PeerId::random(),
            TopicHash::from_raw("/rill/node/1/a"),
            TopicHash::from_raw("/rill/node/1/b"),
        );
        let now = Instant::now();
        outgoing.wait(topic.clone(), vec![1], now + Duration::from_secs(5));
        outgoing.wait(other.clone(), vec![2], now + Duration::from_secs(1));
        assert!(!outgoing.is_subscribed(&topic));
        assert_eq!(outgoing.subscribed(peer, topic.clone()), vec![vec![1]]);
        assert!(outgoing.is_subscribed(&topic));
        assert_eq!(outgoing.expire(now + Duration::from_secs(2)), 1);
        assert!(!outgoing.has_waiting());
        outgoing.gone(&peer);
        assert!(!outgoing.is_subscribed(&topic));
    }
}
