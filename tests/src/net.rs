//! A devnet of `rill-node` processes per scenario, in a temporary directory.

use std::collections::HashSet;
use std::time::Duration;

use alloy_primitives::B256;
use rill_chain::{NetworkConfig, Registry, connect};
use rill_client::Client;
use rill_devnet::{DevnetChain, DevnetConfig, NodeProcess, bootstrap, wait_serving};
use rill_protocol::{NodeKey, StreamId, pb};

/// The devnets' block time.
pub const BLOCK_TIME: Duration = Duration::from_millis(500);

/// One devnet at a time: each is anvil plus four node processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A devnet: anvil with the registry, and `rill-node` processes.
pub struct Net {
    /// anvil and the devnet file.
    pub chain: DevnetChain,
    /// The node processes, in registration order.
    pub nodes: Vec<NodeProcess>,
    /// The devnet directory.
    pub dir: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Net {
    /// Starts `count` nodes with `replication` nodes per stream and waits until each serves.
    pub async fn start(count: usize, replication: u64) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let config = DevnetConfig {
            dir: dir.path().to_owned(),
            nodes: count,
            block_time: BLOCK_TIME,
            network: NetworkConfig {
                replication_factor: replication,
                ..NetworkConfig::default()
            },
        };
        let chain = bootstrap(&config).await.expect("chain");
        let binary = &crate::binaries().node;
        let nodes: Vec<NodeProcess> = (0..count)
            .map(|i| NodeProcess::start(binary, &chain.file, i, BLOCK_TIME).expect("node starts"))
            .collect();
        for node in &nodes {
            wait_serving(&node.node, Duration::from_secs(60))
                .await
                .expect("node serves");
        }
        Self {
            chain,
            nodes,
            dir,
            _turn: turn,
        }
    }

    /// A client of node `node` signing with `key`.
    pub async fn client(&self, node: usize, key: &NodeKey) -> Client {
        let addr = self.nodes[node].node.multiaddr.parse().unwrap();
        Client::connect(addr, key.clone())
            .await
            .expect("client connects")
    }

    /// Indexes of the stream's nodes and of one node that does not hold it.
    pub fn placement(&self, created: &pb::CreateStreamResponse) -> (Vec<usize>, Option<usize>) {
        let holders: HashSet<Vec<u8>> = created.nodes.iter().cloned().collect();
        let (inside, outside): (Vec<usize>, Vec<usize>) = (0..self.nodes.len())
            .partition(|i| holders.contains(&self.nodes[*i].node.address.to_vec()));
        (inside, outside.first().copied())
    }

    /// The registry, read-only.
    pub fn registry(&self) -> Registry {
        Registry::new(
            self.chain.file.registry,
            connect(&self.chain.file.rpc_url).unwrap(),
        )
    }
}

/// The (num, hash) of every miniblock and the message texts, in order, as `client`'s node holds them.
pub struct Chain {
    /// Miniblock hashes, from the genesis on.
    pub hashes: Vec<B256>,
    /// The texts of the messages, in order.
    pub messages: Vec<String>,
    /// Every event hash, in order.
    pub event_hashes: Vec<B256>,
    /// Events waiting in the minipool.
    pub minipool: usize,
}

/// The stream as `client`'s node holds it.
pub async fn chain(client: &Client, stream: StreamId) -> Option<Chain> {
    let got = client.get_stream(stream).await.ok()?;
    let mut out = Chain {
        hashes: vec![],
        messages: vec![],
        event_hashes: vec![],
        minipool: got.minipool.len(),
    };
    for miniblock in &got.miniblocks {
        out.hashes
            .push(B256::from_slice(&miniblock.header.as_ref()?.hash));
        for event in &miniblock.events {
            out.event_hashes.push(B256::from_slice(&event.hash));
            let parsed =
                rill_protocol::ParsedEvent::open(event.clone(), &rill_protocol::Limits::default())
                    .ok()?;
            if let rill_protocol::Payload::Message(m) = parsed.payload() {
                out.messages
                    .push(String::from_utf8_lossy(&m.data).into_owned());
            }
        }
    }
    Some(out)
}

/// Polls until `check` holds, or panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
