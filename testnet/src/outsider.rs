//! A libp2p peer that is not a registered node and tries to overhear stream gossip anyway: it
//! dials the nodes and subscribes to their inbox topics (the topics that carry every stream's
//! events), as any gossipsub implementation can. Built from plain libp2p, not from Rill's
//! network crate, so it behaves as an outsider's software would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_primitives::Address;
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAuthenticity, ValidationMode};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, noise, tcp, yamux};
use tokio::task::JoinHandle;

/// What the outsider saw.
#[derive(Debug, Default)]
struct Seen {
    /// Gossip messages delivered to it.
    messages: AtomicUsize,
    /// Subscriptions the nodes announced to it (gossipsub spoke with them).
    node_subscriptions: AtomicUsize,
}

/// The running outsider; stops when dropped.
pub struct Outsider {
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Outsider {
    /// Dials `nodes` and subscribes to the inbox of each `(address, multiaddr)`.
    pub fn start(nodes: Vec<(Address, Multiaddr)>) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(500))
                    .validation_mode(ValidationMode::Permissive)
                    .max_transmit_size(4 << 20)
                    .build()
                    .expect("gossipsub config");
                gossipsub::Behaviour::<
                    gossipsub::IdentityTransform,
                    gossipsub::AllowAllSubscriptionFilter,
                >::new(
                    MessageAuthenticity::Author(key.public().to_peer_id()),
                    config,
                )
                .expect("gossipsub")
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        for (address, addr) in nodes {
            swarm
                .behaviour_mut()
                .subscribe(&rill_p2p::inbox_topic(&address))
                .expect("subscribe");
            swarm.dial(addr).expect("dial");
        }
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(gossipsub::Event::Message { .. }) => {
                        counts.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) => {
                        counts.node_subscriptions.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        Self { seen, task }
    }

    /// Gossip messages that reached it.
    pub fn messages(&self) -> usize {
        self.seen.messages.load(Ordering::Relaxed)
    }

    /// Inbox subscriptions the nodes announced to it: proof that gossipsub spoke with them.
    pub fn node_subscriptions(&self) -> usize {
        self.seen.node_subscriptions.load(Ordering::Relaxed)
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        self.task.abort();
    }
}
