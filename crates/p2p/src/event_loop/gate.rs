//! Who may do what on this node's network, as the registry says: registered nodes alone take
//! part in gossip (each holding only its own inbox), and client peers are held to their rate
//! (by the [`ClientGate`](crate::admission::ClientGate) this keeps told who the nodes are).
//! Part of the event loop (it reads and updates the loop's peer tables), kept apart so the
//! rules read in one place.

use alloy_primitives::Address;
use libp2p::PeerId;
use libp2p::gossipsub::TopicHash;
use tracing::debug;

use super::EventLoop;
use crate::gossip::{OUTSIDER_SCORE, inbox_topic};
use crate::handle::NodeEntry;

impl EventLoop {
    /// Who counts as a node: only they may use node protocols and gossip. Gossipsub ignores
    /// every other peer entirely, so an outsider can neither send nor receive stream gossip.
    pub(super) fn set_nodes(&mut self, nodes: Vec<NodeEntry>) {
        self.nodes.clear();
        self.peers_of.clear();
        self.registered_addrs.clear();
        for entry in nodes {
            self.nodes.insert(entry.peer, entry.address);
            self.peers_of.insert(entry.address, entry.peer);
            if let Some(addr) = entry.addr {
                self.swarm.add_peer_address(entry.peer, addr.clone());
                self.registered_addrs.insert(entry.peer, addr);
            }
        }
        self.client_gate
            .lock()
            .set_nodes(self.nodes.keys().copied());
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            self.gate_gossip(&peer);
        }
    }

    /// Lets a registered node take part in gossip and shuts everyone else out, both ways: a
    /// blacklisted peer's messages are dropped, and a score below every threshold keeps it out
    /// of publishing, meshes and IHAVE gossip, so a subscription it holds (gossipsub records
    /// subscriptions whoever sends them) brings it nothing. An admitted node's inbox
    /// subscription, whenever it arrived (before the registry named the node, say), releases
    /// the gossip waiting for it.
    pub(super) fn gate_gossip(&mut self, peer: &PeerId) {
        let own = self
            .nodes
            .get(peer)
            .map(|address| inbox_topic(address).hash());
        let topics = self.subscriptions.get(peer);
        let admitted = own
            .as_ref()
            .is_some_and(|own| topics.is_none_or(|topics| topics.iter().all(|t| t == own)));
        let subscribed = own.filter(|own| admitted && topics.is_some_and(|t| t.contains(own)));
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if admitted {
            gossipsub.remove_blacklisted_peer(peer);
            gossipsub.set_application_score(peer, 0.0);
        } else {
            gossipsub.blacklist_peer(peer);
            gossipsub.set_application_score(peer, OUTSIDER_SCORE);
            self.outgoing.gone(peer);
        }
        if let Some(inbox) = subscribed {
            for data in self.outgoing.subscribed(*peer, inbox.clone()) {
                self.publish(inbox.clone(), data);
            }
        }
    }

    /// A peer subscribed to `topic`. A registered node's own inbox is the only topic a peer
    /// may hold: any other subscription shuts the peer out of gossip while it holds it.
    pub(super) fn subscribed(&mut self, peer: PeerId, topic: TopicHash) {
        self.subscriptions
            .entry(peer)
            .or_default()
            .insert(topic.clone());
        // Counted when the inbox is a known node's and not the peer's own: a node whose own
        // subscription arrives before the registry names it is not an eavesdropper.
        let inbox_of = |address: &Address| inbox_topic(address).hash() == topic;
        let own = self.nodes.get(&peer).is_some_and(inbox_of);
        if !own && self.peers_of.keys().any(inbox_of) {
            debug!(%peer, %topic, registered = self.nodes.contains_key(&peer), "subscription to another node's inbox; shut out of gossip");
            self.config.metrics.gossip_subscriptions_refused.inc();
        }
        self.gate_gossip(&peer);
    }

    pub(super) fn unsubscribed(&mut self, peer: PeerId, topic: &TopicHash) {
        self.outgoing.unsubscribed(&peer, topic);
        if let Some(topics) = self.subscriptions.get_mut(&peer) {
            topics.remove(topic);
        }
        self.gate_gossip(&peer);
    }
}
