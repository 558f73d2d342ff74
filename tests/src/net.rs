//! A devnet of `rill-node` processes per scenario, in a temporary directory.

use std::collections::HashSet;
use std::time::Duration;

use alloy_primitives::B256;
use rill_chain::anvil::Anvil;
use rill_chain::{NetworkConfig, Registry, connect, connect_with_key};
use rill_client::Client;
use rill_client::p2p::Multiaddr;
use rill_devnet::hosts::{Hosts, HostsLayout};
use rill_devnet::load::Load;
use rill_devnet::promise::Finalized;
use rill_devnet::{ChainSource, DevnetChain, DevnetConfig, NodeProcess, bootstrap, wait_serving};
use rill_protocol::{NodeKey, StreamId, pb};

use crate::watchdog::{Watchdog, log_tail};

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
    /// The hosts the nodes run on, when each has its own (dropped after the nodes and anvil).
    pub hosts: Option<Hosts>,
    /// The devnet directory.
    pub dir: tempfile::TempDir,
    _watchdog: Watchdog,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Where and on what a test devnet runs.
pub struct Launch {
    /// How many nodes.
    pub nodes: usize,
    /// The chain.
    pub chain: ChainSource,
    /// Each node on its own host.
    pub hosts: bool,
    /// Environment every node starts with (e.g. `RILL_SETTLE_AFTER_MS`).
    pub env: Vec<(&'static str, String)>,
}

impl Launch {
    /// `nodes` nodes on 127.0.0.1 and a new anvil.
    pub fn local(nodes: usize) -> Self {
        Self {
            nodes,
            chain: ChainSource::Anvil,
            hosts: false,
            env: Vec::new(),
        }
    }
}

impl Net {
    /// Starts `count` nodes with `replication` nodes per stream and waits until each serves.
    pub async fn start(count: usize, replication: u64) -> Self {
        Self::start_with(count, |network| network.replication_factor = replication).await
    }

    /// Starts `count` nodes on a registry whose config `change` sets.
    pub async fn start_with(count: usize, change: impl FnOnce(&mut NetworkConfig)) -> Self {
        Self::launch(Launch::local(count), change).await
    }

    /// Starts `count` nodes, each on its own host, `replication` per stream (check
    /// `rill_devnet::hosts::available_or_skip` first).
    pub async fn on_hosts(count: usize, replication: u64) -> Self {
        let launch = Launch {
            hosts: true,
            ..Launch::local(count)
        };
        Self::launch(launch, |network| network.replication_factor = replication).await
    }

    /// Starts a devnet as `launch` says, on a registry whose config `change` sets.
    pub async fn launch(launch: Launch, change: impl FnOnce(&mut NetworkConfig)) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let mut dir = tempfile::tempdir().unwrap();
        let watchdog = Watchdog::arm(
            (0..launch.nodes)
                .map(|i| dir.path().join(format!("nodes/{i}/node.log")))
                .collect(),
        );
        if std::env::var_os("RILL_KEEP_TEST_DIR").is_some() {
            // Kept for reading the nodes' logs after a failure.
            dir.disable_cleanup(true);
            eprintln!("devnet directory: {}", dir.path().display());
        }
        let layout = launch.hosts.then(|| HostsLayout {
            // Its own subnet per test process: leftovers of another run are not ours.
            subnet: 100 + (std::process::id() % 100) as u8,
            nodes: launch.nodes,
        });
        let hosts = layout.map(|layout| Hosts::create(layout, 7).expect("the hosts are created"));
        let config = DevnetConfig {
            dir: dir.path().to_owned(),
            nodes: launch.nodes,
            block_time: BLOCK_TIME,
            network: {
                let mut network = NetworkConfig::default();
                change(&mut network);
                network
            },
            chain: launch.chain,
            hosts: layout,
            save_chain_every: None,
        };
        let chain = tokio::time::timeout(Duration::from_secs(300), bootstrap(&config))
            .await
            .expect("the chain is bootstrapped within 5 minutes")
            .expect("chain");
        let binary = &crate::binaries().node;
        let nodes: Vec<NodeProcess> = (0..launch.nodes)
            .map(|i| {
                let mut node = NodeProcess::prepare(binary, &chain.file, i, BLOCK_TIME);
                for (key, value) in &launch.env {
                    node.set_env(key, Some(value));
                }
                node.start_again().expect("node starts");
                node
            })
            .collect();
        for node in &nodes {
            if let Err(e) = wait_serving(&node.node, Duration::from_secs(60)).await {
                print_log_tails(&nodes, 40);
                panic!("node serves: {e}");
            }
        }
        Self {
            chain,
            nodes,
            hosts,
            dir,
            _watchdog: watchdog,
            _turn: turn,
        }
    }

    /// The hosts (panics if the nodes are not on hosts of their own).
    pub fn hosts(&self) -> &Hosts {
        self.hosts.as_ref().expect("a devnet on hosts")
    }

    /// A client of node `node` signing with `key`.
    pub async fn client(&self, node: usize, key: &NodeKey) -> Client {
        let addr = self.nodes[node].node.multiaddr.parse().unwrap();
        Client::connect(addr, key.clone())
            .await
            .expect("client connects")
    }

    /// A stream created through node 0 by `creator` (its first member), and the indexes of
    /// its nodes.
    pub async fn create_stream(&self, creator: &NodeKey) -> (StreamId, Vec<usize>) {
        let created = self
            .client(0, creator)
            .await
            .create_stream(None)
            .await
            .expect("the stream is created");
        let (replicas, _) = self.placement(&created);
        (StreamId::from_slice(&created.stream_id).unwrap(), replicas)
    }

    /// Indexes of the stream's nodes and of one node that does not hold it.
    pub fn placement(&self, created: &pb::CreateStreamResponse) -> (Vec<usize>, Option<usize>) {
        let holders: HashSet<Vec<u8>> = created.nodes.iter().cloned().collect();
        let (inside, outside): (Vec<usize>, Vec<usize>) = (0..self.nodes.len())
            .partition(|i| holders.contains(&self.nodes[*i].node.address.to_vec()));
        (inside, outside.first().copied())
    }

    /// The registry as its owner (anvil's dev account): config and node statuses.
    pub fn admin(&self) -> Registry {
        Registry::new(
            self.chain.file.registry,
            connect_with_key(&self.chain.file.rpc_url, &Anvil::dev_key()).unwrap(),
        )
    }

    /// The multiaddrs of nodes `indexes`.
    pub fn addrs(&self, indexes: &[usize]) -> Vec<Multiaddr> {
        indexes
            .iter()
            .map(|i| self.nodes[*i].node.multiaddr.parse().unwrap())
            .collect()
    }

    /// Writers adding `bytes`-byte messages to `stream` with `ack`, signed by `key`, through
    /// `nodes` in turn (moving on when one is down).
    pub fn load(
        &self,
        stream: StreamId,
        key: &NodeKey,
        nodes: &[usize],
        writers: usize,
        ack: pb::Ack,
        bytes: usize,
    ) -> Load {
        Load::start(stream, key, &self.addrs(nodes), writers, ack, bytes)
    }

    /// Waits (up to `within`) until the promise holds for `stream` on every running replica:
    /// the same chain, the registry's head, each of `acked` in exactly one miniblock.
    pub async fn expect_finalized(
        &self,
        stream: StreamId,
        acked: &HashSet<B256>,
        within: Duration,
    ) -> Finalized {
        let record = self.registry().stream(stream).await.unwrap().unwrap();
        let mut clients = Vec::new();
        for address in &record.nodes {
            let node = self.nodes.iter().position(|n| n.node.address == *address);
            match node {
                Some(i) if self.nodes[i].is_running() => {
                    clients.push(Some(self.client(i, &NodeKey::generate()).await))
                }
                _ => clients.push(None),
            }
        }
        match rill_devnet::promise::expect_finalized(
            &self.registry(),
            &clients,
            stream,
            acked,
            within,
        )
        .await
        {
            Ok(finalized) => finalized,
            Err(problem) => {
                self.print_logs(40);
                panic!("{problem}")
            }
        }
    }

    /// Prints the last `lines` warnings, errors and info lines of every node's log (after a
    /// failure: what the nodes were doing).
    pub fn print_logs(&self, lines: usize) {
        print_log_tails(&self.nodes, lines);
    }

    /// Waits until node `i` serves again after a (re)start.
    pub async fn wait_serving(&self, i: usize) {
        wait_serving(&self.nodes[i].node, Duration::from_secs(60))
            .await
            .expect("the node serves again");
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

/// Prints the last `lines` lines of each node's log.
fn print_log_tails(nodes: &[NodeProcess], lines: usize) {
    for (i, node) in nodes.iter().enumerate() {
        let log = node.node.data_dir.with_file_name("node.log");
        eprint!(
            "---- node {i} ({}) log tail ----\n{}",
            log.display(),
            log_tail(&log, lines)
        );
    }
}
