//! Gossip goes to node inboxes: only the destination receives it, from its sender.

use std::time::Duration;

use alloy_primitives::Address;
use rill_p2p::{GossipBatch, NetworkEvent, Role, Validation, inbox_topic};

use crate::support::{TestPeer, announcement, eventually, peer, registered_nodes};

/// Accepts (and returns) the next gossip batch, like a node that validated it.
async fn receive(node: &mut TestPeer, within: Duration) -> Option<(Address, GossipBatch)> {
    let p2p = node.p2p.clone();
    let (from, via, id, batch) = node
        .next(within, |event| match event {
            NetworkEvent::Gossip {
                from,
                via,
                id,
                batch,
            } => Some((from, via, id, batch)),
            _ => None,
        })
        .await?;
    p2p.report_validation(id, via, Validation::Accept).await;
    Some((from, batch))
}

#[tokio::test]
async fn gossip_reaches_the_inboxes_it_is_sent_to_and_no_one_else() {
    let mut nodes = registered_nodes(4).await;
    // Let the inbox subscriptions spread.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batch = announcement([7; 32]);
    for to in [nodes[1].address(), nodes[2].address()] {
        nodes[0].p2p.gossip(to, batch.clone()).await;
    }
    let from = nodes[0].address();
    for node in &mut nodes[1..3] {
        let got = receive(node, Duration::from_secs(10))
            .await
            .expect("a destination receives it");
        assert_eq!(got, (from, batch.clone()));
    }
    assert!(
        receive(&mut nodes[3], Duration::from_secs(2))
            .await
            .is_none(),
        "a node it was not sent to never sees it"
    );
}

#[tokio::test]
async fn gossip_sent_before_the_destinations_subscription_arrives_still_arrives() {
    let a = peer(Role::Node).await;
    let mut b = peer(Role::Node).await;
    let registry = vec![a.entry(), b.entry()];
    a.p2p.set_nodes(registry.clone()).await;
    b.p2p.set_nodes(registry).await;
    // Connected, but b's inbox subscription has not reached a yet: gossipsub would refuse it.
    a.p2p.dial(b.peer_id(), Some(b.addr.clone())).await.unwrap();
    let batch = announcement([9; 32]);
    a.p2p.gossip(b.address(), batch.clone()).await;
    let got = receive(&mut b, Duration::from_secs(10))
        .await
        .expect("delivered once b's inbox subscription arrived");
    assert_eq!(got, (a.address(), batch));
}

#[tokio::test]
async fn gossip_for_a_node_that_is_not_connected_is_dropped_and_counted() {
    let a = peer(Role::Node).await;
    let mut b = peer(Role::Node).await;
    let registry = vec![a.entry(), b.entry()];
    a.p2p.set_nodes(registry.clone()).await;
    b.p2p.set_nodes(registry).await;
    a.p2p.gossip(b.address(), announcement([3; 32])).await;
    let undelivered = a.config.metrics.gossip_undelivered.clone();
    eventually("the batch is counted undelivered", || {
        let undelivered = undelivered.clone();
        async move { undelivered.get() > 0 }
    })
    .await;
    assert_eq!(a.config.metrics.gossip_undelivered.get(), 1);
    // Connecting later does not bring it back: the node carries its events again itself.
    a.p2p.dial(b.peer_id(), Some(b.addr.clone())).await.unwrap();
    assert!(receive(&mut b, Duration::from_secs(2)).await.is_none());
}

#[tokio::test]
async fn a_thousand_streams_travel_in_one_message_on_one_topic() {
    let mut nodes = registered_nodes(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut batch = GossipBatch::default();
    for i in 0..1000u32 {
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&i.to_be_bytes());
        batch.in_pool.extend(announcement(hash).in_pool);
    }
    nodes[0].p2p.gossip(nodes[1].address(), batch.clone()).await;
    let (_, got) = receive(&mut nodes[1], Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(got.in_pool.len(), 1000);
    assert_eq!(got, batch);
    assert!(
        inbox_topic(&nodes[1].address())
            .to_string()
            .starts_with(rill_p2p::INBOX_PREFIX)
    );
}
