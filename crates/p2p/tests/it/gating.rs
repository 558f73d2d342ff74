use std::time::Duration;

use rill_p2p::{NetworkEvent, RequestError, Role};
use rill_protocol::pb;

use crate::support::{announcement, peer, registered_nodes, stream};

#[tokio::test]
async fn unregistered_peer_is_refused_on_node_protocols_penalised_for_gossip_and_served_as_a_client()
 {
    let mut nodes = registered_nodes(2).await;
    let outsider = peer(Role::Node).await;
    let s = stream();
    for node in &nodes {
        node.p2p.subscribe(s);
    }
    outsider.p2p.subscribe(s);
    outsider
        .p2p
        .dial(nodes[0].peer_id(), Some(nodes[0].addr.clone()))
        .await
        .unwrap();

    // Node protocols: a typed refusal.
    let response = outsider
        .p2p
        .get_events(
            nodes[0].peer_id(),
            pb::GetEventsRequest {
                stream_id: s.0.to_vec(),
                hashes: vec![],
            },
        )
        .await
        .expect("an answer");
    let error = response.error.expect("a refusal");
    assert_eq!(error.code, pb::ErrorCode::NotANode as i32);
    let response = outsider
        .p2p
        .miniblock_request(nodes[0].peer_id(), pb::MiniblockRequest { kind: None })
        .await
        .expect("an answer");
    assert_eq!(
        response.error.expect("a refusal").code,
        pb::ErrorCode::NotANode as i32
    );

    // Gossip: rejected before it reaches the node, and the sender's score drops.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..5u8 {
        outsider
            .p2p
            .publish(s, announcement(s, [i; 32], outsider.address()));
    }
    let leaked = nodes[0]
        .next(Duration::from_secs(3), |e| {
            matches!(e, NetworkEvent::Gossip { .. }).then_some(())
        })
        .await;
    assert!(
        leaked.is_none(),
        "the outsider's gossip never reaches the node"
    );
    let score = nodes[0]
        .p2p
        .peer_score(outsider.peer_id())
        .await
        .expect("a score");
    assert!(score < 0.0, "the outsider is penalised (score {score})");

    // The client protocol is open to everyone.
    let node = nodes[0].p2p.clone();
    let server = tokio::spawn(async move {
        let mut node0 = nodes.remove(0);
        let responder = node0
            .next(Duration::from_secs(10), |e| match e {
                NetworkEvent::ClientRequest { responder, .. } => Some(responder),
                _ => None,
            })
            .await
            .expect("the client request arrives");
        responder.send(pb::ClientResponse {
            kind: Some(pb::client_response::Kind::Info(pb::InfoResponse {
                version: "test".into(),
                ..Default::default()
            })),
            error: None,
        });
    });
    let request = pb::ClientRequest {
        kind: Some(pb::client_request::Kind::Info(pb::InfoRequest {})),
    };
    let answer = outsider
        .p2p
        .client_request(node.peer_id(), request)
        .await
        .expect("served");
    assert!(
        matches!(answer.kind, Some(pb::client_response::Kind::Info(info)) if info.version == "test")
    );
    server.await.unwrap();
}

#[tokio::test]
async fn request_to_an_unreachable_peer_fails_with_a_typed_error() {
    let client = peer(Role::Client).await;
    let stranger = rill_protocol::NodeKey::generate().peer_id();
    let result = client
        .p2p
        .client_request(stranger, pb::ClientRequest { kind: None })
        .await;
    assert!(
        matches!(result, Err(RequestError::Unreachable(_))),
        "{result:?}"
    );
}
