//! Client sessions over real sockets: many requests over one substream, a node that does not
//! serve sessions, a session the node closed while the client kept it, and bytes that are not
//! a request.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use rill_p2p::{NetworkEvent, P2pConfig, PeerId, Role};
use rill_protocol::pb;

use crate::support::{TestPeer, client_of, eventually, peer, peer_with};

fn info() -> pb::ClientRequest {
    pb::ClientRequest {
        kind: Some(pb::client_request::Kind::Info(pb::InfoRequest::default())),
    }
}

/// Answers every client request of `node` with an `Info` naming how many came before it.
fn answer_all(mut node: TestPeer) -> tokio::task::JoinHandle<TestPeer> {
    tokio::spawn(async move {
        let mut answered = 0u64;
        while let Some(event) = node.events.recv().await {
            if let NetworkEvent::ClientRequest { responder, .. } = event {
                responder
                    .send(pb::ClientResponse {
                        kind: Some(pb::client_response::Kind::Info(pb::InfoResponse {
                            version: answered.to_string(),
                            ..Default::default()
                        })),
                        error: None,
                    })
                    .await;
                answered += 1;
            }
        }
        node
    })
}

async fn connected_client(node: &TestPeer) -> (TestPeer, PeerId) {
    (client_of(node).await, node.peer_id())
}

fn version(answer: &pb::ClientResponse) -> &str {
    match &answer.kind {
        Some(pb::client_response::Kind::Info(info)) => &info.version,
        other => panic!("an Info answer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_sends_its_requests_over_one_session() {
    let node = peer(Role::Node).await;
    let metrics = node.config.metrics.clone();
    let (client, to) = connected_client(&node).await;
    let _server = answer_all(node);
    for i in 0..50 {
        let answer = client.p2p.client_request(to, info()).await.expect("served");
        assert_eq!(version(&answer), i.to_string(), "answers come in order");
    }
    assert_eq!(
        metrics.client_sessions.get(),
        1,
        "one session carried them all"
    );
}

#[tokio::test]
async fn a_node_that_does_not_serve_sessions_is_asked_over_the_client_protocol() {
    let node = peer_with(P2pConfig {
        client_sessions: false,
        ..P2pConfig::node(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
    })
    .await;
    let metrics = node.config.metrics.clone();
    let (client, to) = connected_client(&node).await;
    let _server = answer_all(node);
    for i in 0..3 {
        let answer = client.p2p.client_request(to, info()).await.expect("served");
        assert_eq!(version(&answer), i.to_string());
    }
    assert_eq!(metrics.client_sessions.get(), 0);
}

#[tokio::test]
async fn a_session_the_node_closed_while_the_client_kept_it_is_replaced() {
    let node = peer_with(P2pConfig {
        session_idle: Duration::from_millis(200),
        ..P2pConfig::node(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
    })
    .await;
    let metrics = node.config.metrics.clone();
    let (client, to) = connected_client(&node).await;
    let _server = answer_all(node);
    client.p2p.client_request(to, info()).await.expect("served");
    assert_eq!(metrics.client_sessions.get(), 1);
    let sessions = metrics.client_sessions.clone();
    eventually("the node closes the idle session", || {
        let sessions = sessions.clone();
        async move { sessions.get() == 0 }
    })
    .await;
    let answer = client.p2p.client_request(to, info()).await.expect("served");
    assert_eq!(version(&answer), "1");
    assert_eq!(metrics.client_sessions.get(), 1, "on a new session");
}

#[tokio::test]
async fn a_session_over_the_peers_limit_is_refused_and_its_request_still_served() {
    let mut node = peer_with(P2pConfig {
        max_concurrent_requests: 1,
        ..P2pConfig::node(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
    })
    .await;
    let metrics = node.config.metrics.clone();
    let (client, to) = connected_client(&node).await;
    let ask = || {
        let p2p = client.p2p.clone();
        tokio::spawn(async move { p2p.client_request(to, info()).await })
    };
    // Two requests at once: the second needs a second session, which the node refuses.
    let first = ask();
    let held = node
        .next_client_request(Duration::from_secs(10))
        .await
        .expect("the first request arrives");
    let second = ask();
    let other = node
        .next_client_request(Duration::from_secs(10))
        .await
        .expect("the second request arrives, over /rill/client/1");
    assert_eq!(metrics.client_sessions_refused.get(), 1);
    for responder in [other, held] {
        responder
            .send(pb::ClientResponse {
                kind: Some(pb::client_response::Kind::Info(Default::default())),
                error: None,
            })
            .await;
    }
    second.await.unwrap().expect("the second is served");
    first.await.unwrap().expect("the first is served");
    assert_eq!(metrics.client_sessions.get(), 1);
}

#[tokio::test]
async fn bytes_that_are_not_a_request_end_the_session_and_the_node_keeps_serving() {
    let node = peer(Role::Node).await;
    let (node_id, addr) = (node.peer_id(), node.addr.clone());
    let dial_addr = addr.clone();
    let metrics = node.config.metrics.clone();
    let _server = answer_all(node);
    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .build();
    let control = raw.behaviour().new_control();
    raw.dial(dial_addr).unwrap();
    tokio::spawn(async move {
        loop {
            raw.select_next_some().await;
        }
    });
    let session = "/rill/client-session/1";
    // Over the 16 MiB limit.
    let oversized = (20_000_000u32).to_be_bytes().to_vec();
    let garbage = [8u32.to_be_bytes().to_vec(), vec![0xff; 8]].concat();
    for bytes in [oversized, garbage] {
        let mut stream = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match control
                    .clone()
                    .open_stream(node_id, libp2p::StreamProtocol::new(session))
                    .await
                {
                    Ok(stream) => break stream,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .expect("a session opens");
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the node ends the session");
        assert!(read.is_err() || answer.is_empty(), "no answer: {answer:?}");
    }
    assert_eq!(metrics.client_sessions.get(), 0, "both sessions ended");
    // The node still answers a client, over a session.
    let client = peer(Role::Client).await;
    client.p2p.dial(node_id, Some(addr)).await.unwrap();
    let answer = client
        .p2p
        .client_request(node_id, info())
        .await
        .expect("served");
    assert_eq!(version(&answer), "0");
    assert_eq!(metrics.client_sessions.get(), 1);
}
