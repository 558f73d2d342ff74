//! Ephemeral swarms on 127.0.0.1 and helpers to wait for what they report.

use std::time::Duration;

use alloy_primitives::{Address, B256};
use rill_p2p::{
    GossipBatch, Multiaddr, NetworkEvent, NodeEntry, P2p, P2pConfig, PeerId, Responder, Role, spawn,
};
use rill_protocol::{NodeKey, StreamId, pb};
use tokio::sync::mpsc::Receiver;

pub(crate) struct TestPeer {
    pub(crate) key: NodeKey,
    pub(crate) p2p: P2p,
    pub(crate) events: Receiver<NetworkEvent>,
    pub(crate) addr: Multiaddr,
    pub(crate) config: P2pConfig,
}

impl TestPeer {
    pub(crate) fn address(&self) -> Address {
        self.key.address()
    }

    pub(crate) fn peer_id(&self) -> PeerId {
        self.p2p.peer_id()
    }

    pub(crate) fn entry(&self) -> NodeEntry {
        NodeEntry {
            address: self.address(),
            peer: self.peer_id(),
            addr: Some(self.addr.clone()),
        }
    }

    /// The responder of the next client request, within `within`; other events are dropped.
    pub(crate) async fn next_client_request(
        &mut self,
        within: Duration,
    ) -> Option<Responder<pb::ClientResponse>> {
        self.next(within, |e| match e {
            NetworkEvent::ClientRequest { responder, .. } => Some(responder),
            _ => None,
        })
        .await
    }

    /// The next event that `pick` accepts, within `within`; other events are dropped.
    pub(crate) async fn next<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(NetworkEvent) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            if let Some(found) = pick(event) {
                return Some(found);
            }
        }
    }
}

pub(crate) async fn peer(role: Role) -> TestPeer {
    peer_with(match role {
        Role::Node => P2pConfig::node(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]),
        Role::Client => P2pConfig::client(),
    })
    .await
}

pub(crate) async fn peer_with(config: P2pConfig) -> TestPeer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let key = NodeKey::generate();
    let role = config.role;
    let (p2p, mut events) = spawn(&key, config.clone()).await.expect("swarm starts");
    let addr = match role {
        Role::Node => match events.recv().await {
            Some(NetworkEvent::Listening(addr)) => addr,
            other => panic!("expected the listen address first, got {other:?}"),
        },
        Role::Client => "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
    };
    TestPeer {
        key,
        p2p,
        events,
        addr,
        config,
    }
}

/// A client connected to `node`, with the connection known at both ends: the dial returns
/// when the client's side is up, and the node learns of it a moment later.
pub(crate) async fn client_of(node: &TestPeer) -> TestPeer {
    let client = peer(Role::Client).await;
    client
        .p2p
        .dial(node.peer_id(), Some(node.addr.clone()))
        .await
        .unwrap();
    let (node_side, client_id) = (node.p2p.clone(), client.peer_id());
    eventually("the node sees the client's connection", || {
        let node_side = node_side.clone();
        async move { node_side.connected_peers().await.contains(&client_id) }
    })
    .await;
    client
}

/// Waits until `check` holds, up to 10 s (a loaded machine is slow, not wrong), and fails the
/// test with `what` if it never does.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `count` nodes that all know one another as registered nodes, fully connected.
pub(crate) async fn registered_nodes(count: usize) -> Vec<TestPeer> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(peer(Role::Node).await);
    }
    register(&nodes).await;
    for i in 0..count {
        for j in (i + 1)..count {
            nodes[i]
                .p2p
                .dial(nodes[j].peer_id(), Some(nodes[j].addr.clone()))
                .await
                .unwrap();
        }
    }
    nodes
}

/// Makes every one of `nodes` know all of them as registered nodes.
pub(crate) async fn register(nodes: &[TestPeer]) {
    let registry: Vec<NodeEntry> = nodes.iter().map(TestPeer::entry).collect();
    for node in nodes {
        node.p2p.set_nodes(registry.clone()).await;
    }
}

/// An announcement of `hash` on a random stream.
pub(crate) fn announcement(hash: [u8; 32]) -> GossipBatch {
    GossipBatch {
        received: vec![],
        in_pool: vec![(StreamId::random(), vec![B256::from(hash)])],
    }
}
