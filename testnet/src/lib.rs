//! An in-process testnet for the node's own tests: the real node code started N times in one
//! process, over real libp2p on 127.0.0.1, against one real anvil with a freshly deployed
//! registry, each node with its own sled directory.
//!
//! ```no_run
//! # async fn demo() {
//! let mut net = rill_testnet::Testnet::builder().nodes(4).replication(3).start().await;
//! net.crash(2).await;                       // abort node 2 without flushing
//! net.faults().drop(None, Some(net.address(0)), None); // node 0's messages are lost
//! net.restart(2).await;                     // same key, same data directory
//! # }
//! ```
//!
//! Fault hooks: crash and restart a node with its data directory, wipe a node's data, drop or
//! delay one kind of message between two nodes, partition, pause the chain. Expectations:
//! [`Testnet::expect_finalized`] checks the promise (every acknowledged event in exactly one
//! miniblock on every replica, identical chains, the registry's head equal to theirs).
//!
//! It owns nothing but test scaffolding; what it tests is the node, unchanged.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use alloy_primitives::Address;
use alloy_primitives::B256;
use rill_chain::{NetworkConfig, Registry, connect};
use rill_client::Client;
use rill_devnet::{DevnetChain, DevnetConfig, bootstrap};
use rill_node::{Node, NodeConfig};
use rill_protocol::{NodeKey, StreamId, pb};

mod outsider;

pub use outsider::Outsider;
pub use rill_devnet::load::{Acked, Load};
pub use rill_devnet::promise::Finalized;
pub use rill_node::faults::{Faults, MessageKind};
pub use rill_node::{ClientLimits, Rate, Residency};

/// One testnet at a time per test binary: each is anvil plus N nodes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a testnet is set up.
#[derive(Clone, Debug)]
pub struct Builder {
    nodes: usize,
    block_time: Duration,
    network: NetworkConfig,
    residency: Residency,
    client_limits: ClientLimits,
    /// Nodes that poll the chain at their own pace.
    chain_polls: Vec<(usize, Duration)>,
    /// Nodes that chain candidates as leaders (`NodeConfig::chain_candidates`).
    chaining: Vec<usize>,
    /// How long a client's add waits for its acknowledgement (`NodeConfig::ack_timeout`).
    ack_timeout: Duration,
}

impl Builder {
    /// How many nodes (default 4).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Nodes per stream (default 3).
    pub fn replication(mut self, factor: u64) -> Self {
        self.network.replication_factor = factor;
        self
    }

    /// The chain's block time (default 1 s).
    pub fn block_time(mut self, block_time: Duration) -> Self {
        self.block_time = block_time;
        self
    }

    /// How many streams each node keeps in memory, and for how long when idle.
    pub fn residency(mut self, residency: Residency) -> Self {
        self.residency = residency;
        self
    }

    /// How much one client may ask of a node (default: the node's defaults).
    pub fn client_limits(mut self, limits: ClientLimits) -> Self {
        self.client_limits = limits;
        self
    }

    /// Node `i` polls the chain every `interval` (default 100 ms): a node whose view of the
    /// chain lags the others'.
    pub fn chain_poll(mut self, i: usize, interval: Duration) -> Self {
        self.chain_polls.push((i, interval));
        self
    }

    /// Node `i` chains candidates as leader (default: no node does).
    pub fn chain_candidates(mut self, i: usize) -> Self {
        self.chaining.push(i);
        self
    }

    /// How long after its arrival a client's add waits for the acknowledgement it asked for
    /// (default: the node's, 30 s).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Changes the registry's network config.
    pub fn network(mut self, change: impl FnOnce(&mut NetworkConfig)) -> Self {
        change(&mut self.network);
        self
    }

    /// Starts anvil, deploys the registry, registers the nodes and starts them all.
    pub async fn start(self) -> Testnet {
        let turn = ONE_AT_A_TIME.lock().await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = DevnetConfig::local(
            dir.path().to_owned(),
            self.nodes,
            self.block_time,
            self.network,
        );
        let chain = bootstrap(&config).await.expect("the chain bootstraps");
        let faults = Faults::default();
        let configs: Vec<NodeConfig> = chain
            .file
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut config = NodeConfig::new(
                    node.key_file.clone(),
                    node.data_dir.clone(),
                    node.listen.parse().expect("a listen multiaddr"),
                    chain.file.rpc_url.clone(),
                    chain.file.registry,
                );
                config.block_time = self.block_time;
                config.residency = self.residency;
                config.client_limits = self.client_limits;
                config.metrics = Some("127.0.0.1:0".parse().expect("an address"));
                config.faults = Some(faults.clone());
                if let Some((_, interval)) = self.chain_polls.iter().find(|(n, _)| *n == i) {
                    config.poll_interval = *interval;
                }
                config.chain_candidates = self.chaining.contains(&i);
                config.ack_timeout = self.ack_timeout;
                config
            })
            .collect();
        let mut net = Testnet {
            nodes: configs.iter().map(|_| None).collect(),
            configs,
            faults,
            block_time: self.block_time,
            chain,
            _dir: dir,
            _turn: turn,
        };
        for i in 0..net.len() {
            net.restart(i).await;
        }
        net
    }
}

/// A running testnet. Dropping it stops everything.
pub struct Testnet {
    chain: DevnetChain,
    nodes: Vec<Option<Node>>,
    configs: Vec<NodeConfig>,
    faults: Faults,
    block_time: Duration,
    _dir: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Testnet {
    /// A builder with 4 nodes, replication 3 and 1 s blocks.
    pub fn builder() -> Builder {
        Builder {
            nodes: 4,
            block_time: Duration::from_secs(1),
            network: NetworkConfig::default(),
            residency: Residency::default(),
            client_limits: ClientLimits::default(),
            chain_polls: Vec::new(),
            chaining: Vec::new(),
            ack_timeout: rill_node::DEFAULT_ACK_TIMEOUT,
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.configs.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// Node `i`'s address.
    pub fn address(&self, i: usize) -> Address {
        self.chain.file.nodes[i].address
    }

    /// The addresses of nodes `indexes`.
    pub fn addresses(&self, indexes: &[usize]) -> Vec<Address> {
        indexes.iter().map(|i| self.address(*i)).collect()
    }

    /// The index of the node with `address`.
    pub fn index_of(&self, address: &Address) -> Option<usize> {
        (0..self.len()).find(|i| self.address(*i) == *address)
    }

    /// The fault rules every node checks its outgoing messages against.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The registry as its owner (anvil's dev account): nodes, config, statuses.
    pub fn admin(&self) -> Registry {
        Registry::new(
            self.chain.file.registry,
            rill_chain::connect_with_key(
                &self.chain.file.rpc_url,
                &rill_chain::anvil::Anvil::dev_key(),
            )
            .expect("the RPC URL"),
        )
    }

    /// The registry, signing as `key` (which must be funded to send).
    pub fn registry_as(&self, key: &NodeKey) -> Registry {
        Registry::new(
            self.chain.file.registry,
            rill_chain::connect_with_key(&self.chain.file.rpc_url, key).expect("the RPC URL"),
        )
    }

    /// The registry, read-only.
    pub fn registry(&self) -> Registry {
        Registry::new(
            self.chain.file.registry,
            connect(&self.chain.file.rpc_url).expect("the RPC URL"),
        )
    }

    /// The chain's block time.
    pub fn block_time(&self) -> Duration {
        self.block_time
    }

    /// Node `i`, if running.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].as_ref()
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.configs[i].data_dir
    }

    /// A client of node `i` with a new key.
    pub async fn client(&self, i: usize) -> Client {
        self.client_with(i, NodeKey::generate()).await
    }

    /// A client of node `i` signing with `key`.
    pub async fn client_with(&self, i: usize, key: NodeKey) -> Client {
        let addr = self.chain.file.nodes[i]
            .multiaddr
            .parse()
            .expect("a node multiaddr");
        Client::connect(addr, key)
            .await
            .expect("the client connects")
    }

    /// Indexes of a new stream's nodes and of one node that does not hold it.
    pub fn placement(&self, created: &pb::CreateStreamResponse) -> (Vec<usize>, Option<usize>) {
        let nodes: Vec<Address> = created
            .nodes
            .iter()
            .map(|n| Address::from_slice(n))
            .collect();
        let (inside, outside): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|i| nodes.contains(&self.address(*i)));
        (inside, outside.first().copied())
    }

    /// Aborts node `i` at once: no flush, no goodbye (its sled data stays as written).
    pub async fn crash(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.crash().await;
        }
    }

    /// Waits up to `within` for node `i` to stop on its own (a fail-stop) and returns why;
    /// the node is down afterwards. Panics if it keeps running.
    pub async fn wait_stopped(
        &mut self,
        i: usize,
        within: Duration,
    ) -> Result<(), rill_store::StoreError> {
        let node = self.nodes[i].as_mut().expect("node i runs");
        let result = tokio::time::timeout(within, node.finished())
            .await
            .unwrap_or_else(|_| panic!("node {i} still runs after {within:?}"));
        self.crash(i).await;
        result
    }

    /// Stops node `i` gracefully.
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.stop().await.expect("the node stops cleanly");
        }
    }

    /// Deletes node `i`'s data (the node must be down): it lost its disk.
    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "wipe a node that is down");
        let dir = &self.configs[i].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).expect("removing the data directory");
        }
    }

    /// Starts node `i` (again), with its key and data directory. Waits until the previous
    /// run has released the store and the listen port.
    pub async fn restart(&mut self, i: usize) {
        self.crash(i).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Node::start(self.configs[i].clone()).await {
                Ok(node) => {
                    self.nodes[i] = Some(node);
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(node = i, %e, "node not startable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("node {i} does not start: {e}"),
            }
        }
    }

    /// Stops the chain from producing blocks.
    pub async fn pause_chain(&self) {
        self.mining(0).await;
    }

    /// Lets the chain produce blocks again (at whole-second intervals: anvil's interval
    /// mining takes seconds).
    pub async fn resume_chain(&self) {
        let seconds = self.block_time.as_secs_f64().ceil().max(1.0) as u64;
        self.mining(seconds).await;
    }

    async fn mining(&self, interval_seconds: u64) {
        use alloy::providers::Provider;
        let provider = connect(&self.chain.file.rpc_url).expect("the RPC URL");
        provider
            .raw_request::<_, ()>("evm_setIntervalMining".into(), (interval_seconds,))
            .await
            .expect("anvil takes evm_setIntervalMining");
    }

    /// Node `i`'s key (a test may speak for a node that is down).
    pub fn key(&self, i: usize) -> NodeKey {
        NodeKey::load(&self.configs[i].key_file).expect("the node's key file")
    }

    /// Node `i`'s multiaddr (what clients and peers dial).
    pub fn multiaddr(&self, i: usize) -> rill_client::p2p::Multiaddr {
        self.chain.file.nodes[i]
            .multiaddr
            .parse()
            .expect("a node multiaddr")
    }

    /// Starts `writers` writers adding `bytes`-byte messages to `stream` with `ack`, signed by
    /// `key` (a member), through `nodes` in turn.
    pub fn load(
        &self,
        stream: StreamId,
        key: &NodeKey,
        nodes: &[usize],
        writers: usize,
        ack: pb::Ack,
        bytes: usize,
    ) -> Load {
        let addrs: Vec<_> = nodes.iter().map(|i| self.multiaddr(*i)).collect();
        Load::start(stream, key, &addrs, writers, ack, bytes)
    }

    /// Waits until every running node reports no stream with work in progress (nothing in a
    /// minipool, no candidate waiting for its registration, no round or fetch), on two polls a
    /// block time apart, so nothing in flight between them is missed.
    pub async fn expect_quiet(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut quiet_polls = 0;
        while quiet_polls < 2 {
            let mut busy = Vec::new();
            for i in (0..self.len()).filter(|i| self.is_up(*i)) {
                let info = self.client(i).await.info(false).await.expect("info");
                if info.streams_busy > 0 {
                    busy.push((i, info.streams_busy, info.minipool_events));
                }
            }
            if busy.is_empty() {
                quiet_polls += 1;
            } else {
                quiet_polls = 0;
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nodes still busy after {within:?} (node, busy streams, minipool events): {busy:?}"
                );
            }
            if quiet_polls < 2 {
                tokio::time::sleep(self.block_time()).await;
            }
        }
    }

    /// Waits (up to `within`) until the promise holds for `stream` on every running replica:
    /// the same chain, the registry's head, and each of `acked` in exactly one miniblock.
    /// Panics with what still fails.
    pub async fn expect_finalized(
        &self,
        stream: StreamId,
        acked: &HashSet<B256>,
        within: Duration,
    ) -> Finalized {
        let record = self
            .registry()
            .stream(stream)
            .await
            .expect("the registry answers")
            .expect("the stream is allocated");
        let mut clients = Vec::new();
        for address in &record.nodes {
            match self.index_of(address) {
                Some(i) if self.is_up(i) => clients.push(Some(self.client(i).await)),
                _ => clients.push(None),
            }
        }
        rill_devnet::promise::expect_finalized(&self.registry(), &clients, stream, acked, within)
            .await
            .unwrap_or_else(|problem| panic!("{problem}"))
    }

    /// Node `i`'s Prometheus metrics, as served on its `/metrics` endpoint.
    pub async fn metrics(&self, i: usize) -> String {
        let addr = self.nodes[i]
            .as_ref()
            .and_then(Node::metrics_addr)
            .expect("a running node with a metrics endpoint");
        scrape(addr).await
    }

    /// The value of a metric line starting with `name` (labels included), 0 if absent.
    pub async fn metric(&self, i: usize, name: &str) -> f64 {
        sum_of(&self.metrics(i).await, name)
    }

    /// [`Self::metric`] summed over every node (all must be running).
    pub async fn metric_total(&self, name: &str) -> f64 {
        self.metric_totals(&[name]).await[0]
    }

    /// [`Self::metric_total`] of each of `names`, all read from one scrape of each node, so
    /// that metrics a node updates together are compared as of one moment.
    pub async fn metric_totals(&self, names: &[&str]) -> Vec<f64> {
        let mut totals = vec![0.0; names.len()];
        for i in 0..self.len() {
            let metrics = self.metrics(i).await;
            for (total, name) in totals.iter_mut().zip(names) {
                *total += sum_of(&metrics, name);
            }
        }
        totals
    }
}

/// The sum of the lines of a scrape, `metrics`, that start with `name` (labels included), 0
/// if none does: a scrape read once gives metrics a node updates together as of one moment.
pub fn sum_of(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics endpoint accepts");
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nhost: localhost\r\n\r\n")
        .await
        .expect("request written");
    let mut response = String::new();
    socket
        .read_to_string(&mut response)
        .await
        .expect("response read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
