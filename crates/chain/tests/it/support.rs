//! A chain in a line: anvil, a deployed and configured registry, and registered nodes.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use rill_chain::anvil::{Anvil, AnvilConfig};
use rill_chain::{ChainProvider, NetworkConfig, NodeStatus, Registry, connect_with_key, transfer};
use rill_protocol::{NodeKey, StreamId};

pub(crate) struct Chain {
    pub(crate) anvil: Anvil,
    /// The registry as its owner (anvil's dev account) sees it.
    pub(crate) admin: Registry,
}

pub(crate) struct TestNode {
    pub(crate) key: NodeKey,
    /// The registry as this node (signing with its key) sees it.
    pub(crate) registry: Registry,
}

impl Chain {
    pub(crate) async fn start(block_time: Option<Duration>) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let anvil = Anvil::start(AnvilConfig {
            block_time,
            ..AnvilConfig::default()
        })
        .expect("anvil starts");
        let provider = connect_with_key(&anvil.url(), &Anvil::dev_key()).unwrap();
        let admin = Registry::deploy(provider).await.expect("registry deploys");
        admin.apply_config(&NetworkConfig::default()).await.unwrap();
        Self { anvil, admin }
    }

    pub(crate) fn provider(&self) -> &ChainProvider {
        self.admin.provider()
    }

    /// A new key, funded and registered as an Operational node.
    pub(crate) async fn add_node(&self) -> TestNode {
        let key = NodeKey::generate();
        transfer(self.provider(), key.address(), U256::from(10u128.pow(20)))
            .await
            .unwrap();
        self.admin
            .register_node(
                key.address(),
                "/ip4/127.0.0.1/tcp/1",
                NodeStatus::Operational,
            )
            .await
            .unwrap();
        let registry = Registry::new(
            self.admin.address(),
            connect_with_key(&self.anvil.url(), &key).unwrap(),
        );
        TestNode { key, registry }
    }

    /// `count` new addresses registered as Operational nodes, with no funds and no key kept:
    /// members of a stream that never send anything themselves.
    pub(crate) async fn register_addresses(&self, count: usize) -> Vec<Address> {
        let mut addresses = Vec::new();
        for _ in 0..count {
            let address = NodeKey::generate().address();
            self.admin
                .register_node(address, "/ip4/127.0.0.1/tcp/1", NodeStatus::Operational)
                .await
                .unwrap();
            addresses.push(address);
        }
        addresses
    }
}

/// Allocates a stream on `nodes` from `by`, with genesis hash `genesis`.
pub(crate) async fn allocate(by: &TestNode, nodes: &[&TestNode], genesis: B256) -> StreamId {
    let id = StreamId::random();
    let addresses: Vec<Address> = nodes.iter().map(|n| n.key.address()).collect();
    by.registry
        .allocate_stream(id, addresses, genesis, vec![0xaa; 8])
        .await
        .expect("allocates");
    id
}

/// A TCP proxy on 127.0.0.1 that can cut every connection and refuse new ones for a while:
/// an RPC outage, as a node's client sees it.
pub(crate) struct Proxy {
    port: u16,
    target: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub(crate) async fn start(target: u16) -> Self {
        let mut proxy = Self {
            port: 0,
            target,
            tasks: Default::default(),
        };
        proxy.port = proxy.listen(0).await;
        proxy
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn listen(&self, port: u16) -> u16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(([127, 0, 0, 1], port).into()).unwrap();
        let listener = socket.listen(64).unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = self.target;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
        port
    }

    /// Cuts every connection and stops listening.
    pub(crate) fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restore(&self) {
        self.listen(self.port).await;
    }
}
