//! Only registered nodes use node protocols and gossip; everyone is served as a client.

use std::time::Duration;

use rill_p2p::{NetworkEvent, NodeRequest, NodeResponse, RequestError, Role};
use rill_protocol::pb;

use crate::support::{announcement, client_of, peer, registered_nodes};

#[tokio::test]
async fn unregistered_peer_is_refused_on_node_protocols_with_a_typed_error() {
    let nodes = registered_nodes(2).await;
    let outsider = peer(Role::Node).await;
    outsider
        .p2p
        .dial(nodes[0].peer_id(), Some(nodes[0].addr.clone()))
        .await
        .unwrap();
    let ask = |request| outsider.p2p.request(nodes[0].peer_id(), request);
    let events = ask(NodeRequest::Events(pb::GetEventsRequest {
        stream_id: vec![1; 32],
        hashes: vec![],
    }))
    .await
    .expect("an answer");
    let NodeResponse::Events(events) = events else {
        panic!("an events answer")
    };
    assert_eq!(
        events.error.expect("a refusal").code,
        pb::ErrorCode::NotANode as i32
    );
    let miniblock = ask(NodeRequest::Miniblock(pb::MiniblockRequest { kind: None }))
        .await
        .expect("an answer");
    let NodeResponse::Miniblock(miniblock) = miniblock else {
        panic!("a miniblock answer")
    };
    assert_eq!(
        miniblock.error.expect("a refusal").code,
        pb::ErrorCode::NotANode as i32
    );
    assert_eq!(nodes[0].config.metrics.requests_not_a_node.get(), 2);
}

#[tokio::test]
async fn an_outsider_neither_sends_gossip_to_a_node_nor_receives_any() {
    let mut nodes = registered_nodes(2).await;
    let mut outsider = peer(Role::Node).await;
    for node in &nodes {
        outsider
            .p2p
            .dial(node.peer_id(), Some(node.addr.clone()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The outsider's gossip to node 0's inbox never reaches node 0.
    for i in 0..5u8 {
        outsider
            .p2p
            .gossip(nodes[0].address(), announcement([i; 32]))
            .await;
    }
    // Node 1's gossip to node 0 reaches node 0, and never the outsider.
    nodes[1]
        .p2p
        .gossip(nodes[0].address(), announcement([42; 32]))
        .await;
    let from = nodes[0]
        .next(Duration::from_secs(5), |e| match e {
            NetworkEvent::Gossip { from, .. } => Some(from),
            _ => None,
        })
        .await;
    assert_eq!(
        from,
        Some(nodes[1].address()),
        "only node 1's gossip arrives"
    );
    let leaked = nodes[0]
        .next(Duration::from_secs(2), |e| {
            matches!(e, NetworkEvent::Gossip { .. }).then_some(())
        })
        .await;
    assert!(
        leaked.is_none(),
        "the outsider's gossip never reaches the node"
    );
    let overheard = outsider
        .next(Duration::from_secs(2), |e| {
            matches!(e, NetworkEvent::Gossip { .. }).then_some(())
        })
        .await;
    assert!(overheard.is_none(), "the outsider receives no gossip");
}

#[tokio::test]
async fn the_client_protocol_is_open_to_everyone() {
    let mut nodes = registered_nodes(1).await;
    let client = client_of(&nodes[0]).await;
    let node = nodes[0].p2p.peer_id();
    let server = tokio::spawn(async move {
        let mut node0 = nodes.remove(0);
        let responder = node0
            .next_client_request(Duration::from_secs(10))
            .await
            .expect("the client request arrives");
        responder
            .send(pb::ClientResponse {
                kind: Some(pb::client_response::Kind::Info(pb::InfoResponse {
                    version: "test".into(),
                    ..Default::default()
                })),
                error: None,
            })
            .await;
        // Kept running until the client has its answer.
        node0
    });
    let request = pb::ClientRequest {
        kind: Some(pb::client_request::Kind::Info(pb::InfoRequest::default())),
    };
    let answer = client
        .p2p
        .client_request(node, request)
        .await
        .expect("served");
    assert!(
        matches!(answer.kind, Some(pb::client_response::Kind::Info(info)) if info.version == "test")
    );
    drop(server.await.unwrap());
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

#[tokio::test]
async fn a_node_whose_queue_is_full_answers_busy_and_keeps_running() {
    let mut config = rill_p2p::P2pConfig::node(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]);
    config.event_capacity = 1;
    let mut node = crate::support::peer_with(config).await;
    let client = client_of(&node).await;
    node.next(Duration::from_secs(5), |e| {
        matches!(e, NetworkEvent::PeerConnected(_)).then_some(())
    })
    .await
    .expect("the client connects");
    // From here nobody reads the node's events: the first request fills its queue.
    let ask = || {
        client.p2p.client_request(
            node.peer_id(),
            pb::ClientRequest {
                kind: Some(pb::client_request::Kind::Info(pb::InfoRequest::default())),
            },
        )
    };
    let first = tokio::spawn({
        let p2p = client.p2p.clone();
        let peer = node.peer_id();
        async move {
            p2p.client_request(
                peer,
                pb::ClientRequest {
                    kind: Some(pb::client_request::Kind::Info(pb::InfoRequest::default())),
                },
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = ask().await.expect("an answer");
    assert_eq!(
        second.error.expect("busy").code,
        pb::ErrorCode::Unavailable as i32
    );
    assert!(node.config.metrics.requests_shed.get() >= 1);
    // Once the node reads its queue, it serves again.
    let responder = node
        .next_client_request(Duration::from_secs(5))
        .await
        .expect("the first request was queued");
    responder.send(pb::ClientResponse::default()).await;
    assert!(first.await.unwrap().is_ok());
}

/// A request sent in the same flight as its protocol's name (multistream-select's `V1Lazy`)
/// to a peer that does not take it still fails as an unsupported protocol, not as a broken
/// stream: here a node asks a client, which serves no node protocol.
#[tokio::test]
async fn a_request_on_a_protocol_the_peer_does_not_serve_fails_as_unsupported() {
    let nodes = registered_nodes(1).await;
    let client = client_of(&nodes[0]).await;
    let result = nodes[0]
        .p2p
        .request(
            client.peer_id(),
            NodeRequest::Events(pb::GetEventsRequest {
                stream_id: vec![1; 32],
                hashes: vec![],
            }),
        )
        .await;
    assert!(
        matches!(result, Err(RequestError::UnsupportedProtocol)),
        "{result:?}"
    );
}
