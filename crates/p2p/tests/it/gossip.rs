use std::time::Duration;

use rill_p2p::{NetworkEvent, Role, Validation};
use rill_protocol::pb;

use crate::support::{TestPeer, announcement, peer, registered_nodes, stream};

/// Accepts (and returns) the next gossip message, like a node that validated it.
async fn receive(
    node: &mut TestPeer,
    within: Duration,
) -> Option<(alloy_primitives::Address, pb::GossipMessage)> {
    let p2p = node.p2p.clone();
    node.next(within, |event| match event {
        NetworkEvent::Gossip {
            from,
            via,
            id,
            message,
            ..
        } => {
            p2p.report_validation(id, via, Validation::Accept);
            Some((from, message))
        }
        _ => None,
    })
    .await
}

#[tokio::test]
async fn gossip_reaches_the_streams_nodes_and_not_the_fourth() {
    let mut nodes = registered_nodes(4).await;
    let s = stream();
    for node in &nodes[..3] {
        node.p2p.subscribe(s);
    }
    let message = announcement(s, [7; 32], nodes[0].address());
    nodes[0].p2p.publish(s, message.clone());
    let from = nodes[0].address();
    for node in &mut nodes[1..3] {
        let got = receive(node, Duration::from_secs(10))
            .await
            .expect("a stream node receives it");
        assert_eq!(got, (from, message.clone()));
    }
    assert!(
        receive(&mut nodes[3], Duration::from_secs(2))
            .await
            .is_none(),
        "a node without the stream never sees its gossip"
    );
}

#[tokio::test]
async fn publishing_right_after_start_before_any_subscription_still_delivers() {
    let mut a = peer(Role::Node).await;
    let mut b = peer(Role::Node).await;
    let registry = vec![a.registration(), b.registration()];
    a.p2p.set_nodes(registry.clone());
    b.p2p.set_nodes(registry);
    let s = stream();
    a.p2p.subscribe(s);
    // Nobody is connected, let alone subscribed: gossipsub refuses this publish.
    let message = announcement(s, [9; 32], a.address());
    a.p2p.publish(s, message.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.p2p.dial(b.peer_id(), Some(b.addr.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.p2p.subscribe(s);
    let got = receive(&mut b, Duration::from_secs(10))
        .await
        .expect("delivered once b subscribed");
    assert_eq!(got, (a.address(), message));
    let _ = &mut a;
}
