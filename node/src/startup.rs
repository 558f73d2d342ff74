//! Startup: loads the key and the store, reads the registry, starts the network, the
//! registrar, the chain monitor, the worker pool, the read server and the client service,
//! opens the held streams (cold, but those with work pending; repairing what an older version
//! left half-written), and runs the node's loop. [`Node`] is the running node: stop it gracefully, or (tests)
//! crash it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use alloy_primitives::Address;
use rill_chain::{
    ChainError, ChainMonitor, MonitorConfig, NetworkConfig, Registrar, RegistrarConfig, Registry,
    RegistryEvent, connect_with_key,
};
use rill_engine::{Engine, EngineConfig, Input};
use rill_p2p::{Multiaddr, P2pConfig, PeerId, SpawnError};
use rill_protocol::{KeyError, Limits, NodeKey, StreamId};
use rill_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::info;

use crate::NodeConfig;
use crate::after_writes::AfterWrites;
use crate::blocks::Blocks;
use crate::chain_follower;
use crate::client::{Acks, ClientService, Watch};
use crate::directory::Directory;
use crate::event_loop::{NodeLoop, PeerPlan, Status, apply_peer_plans, now_ms};
use crate::executor::Executor;
use crate::faults::Hook;
use crate::metrics::{self, Metrics};
use crate::reads::Reads;
use crate::requests::Requests;
use crate::router::Router;
use crate::streams::Streams;
use crate::workers::Workers;
use crate::writer::{WriteQueue, WriterMetrics};

/// Room in the loop's mailbox.
const MAILBOX: usize = 8_192;
/// Room in the client service's and the read server's queues.
const QUEUE: usize = 4_096;
/// Streams read from the registry per call.
const STREAM_PAGE: u64 = 500;
/// The largest envelope accepted from another node before the engine judges it (the
/// transport's frame limit).
const NODE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key file is missing or bad.
    #[error("loading the node key {path} (create one with `rill-node keygen --out {path}`): {source}", path = path.display())]
    Key {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        source: KeyError,
    },
    /// The store could not be opened or read.
    #[error("the store in {path}: {source}", path = path.display())]
    Store {
        /// The data directory.
        path: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The chain could not be read.
    #[error("reading the registry: {0}")]
    Chain(#[from] ChainError),
    /// The network could not start.
    #[error("starting the network: {0}")]
    Network(#[from] SpawnError),
    /// The metrics endpoint could not be bound.
    #[error("binding the metrics endpoint {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    address: Address,
    peer_id: PeerId,
    listen: Vec<Multiaddr>,
    metrics: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    main: JoinHandle<Result<(), StoreError>>,
    /// Whether `main`'s result was taken (a JoinHandle must not be polled again after).
    main_done: bool,
    tasks: JoinSet<()>,
}

impl Node {
    /// Starts a node; it serves once this returns.
    pub async fn start(config: NodeConfig) -> Result<Self, StartError> {
        let key = NodeKey::load(&config.key_file).map_err(|source| StartError::Key {
            path: config.key_file.clone(),
            source,
        })?;
        let me = key.address();
        info!(address = %me, peer_id = %key.peer_id(), "starting");
        let store_error = |source| StartError::Store {
            path: config.data_dir.clone(),
            source,
        };
        let store = Store::open(&config.data_dir).map_err(store_error)?;
        if store.settled_at_open() > 0 {
            info!(
                promotions = store.settled_at_open(),
                "settled the promotions the last run left pending"
            );
        }
        let provider = connect_with_key(&config.rpc_url, &key)?;
        let registry = Registry::new(config.registry, provider.clone());
        let start_block = registry.block_number().await?;
        let network = registry.config().await?;
        let nodes = registry.nodes().await?;
        // Envelopes from other nodes are opened with the transport's bound; the engine judges
        // their size by the rules of their miniblock.
        let limits = Limits {
            max_event_bytes: NODE_MESSAGE_BYTES,
        };
        // The rules as deployed; the registry's history (replayed below) changes them.
        let engine_config = EngineConfig {
            params: chain_follower::params(&NetworkConfig::default()),
            chain_candidates: config.chain_candidates,
            ..EngineConfig::default()
        };

        let mut tasks = JoinSet::new();
        let (metrics, prometheus) = Metrics::new();
        let metrics_addr = match config.metrics {
            Some(addr) => {
                let listener = metrics::bind(addr)
                    .await
                    .map_err(|source| StartError::Metrics { addr, source })?;
                let bound = listener.local_addr().ok();
                tasks.spawn(metrics::serve(listener, Arc::new(prometheus)));
                bound
            }
            None => None,
        };
        let p2p_config = P2pConfig {
            max_event_bytes: network.max_event_bytes as usize,
            metrics: metrics.p2p.clone(),
            client_rate: config.client_limits.requests,
            ..P2pConfig::node(vec![config.listen.clone()])
        };
        let request_timeout = p2p_config.request_timeout;
        let max_message_bytes = p2p_config.max_message_bytes;
        let (p2p, network_events) = rill_p2p::spawn(&key, p2p_config).await?;
        let listen = p2p.listen_addrs().await;
        let (leading, leading_rounds) = tokio::sync::watch::channel(rill_chain::Leading::default());
        let registrar = Registrar::spawn(
            registry.clone(),
            me,
            RegistrarConfig {
                // A fallback: the flushes after the node's rounds settle send sooner.
                flush_after: config.block_time / 2,
                leading: Some(leading_rounds),
                // Twenty blocks without its transaction mined: replace it.
                receipt_timeout: (config.block_time * 20).max(std::time::Duration::from_secs(10)),
                metrics: metrics.registrar.clone(),
                ..RegistrarConfig::default()
            },
        );
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = Workers::spawn(threads, QUEUE);
        let writes = WriteQueue::spawn(
            store.clone(),
            config.settle_after,
            WriterMetrics {
                writes: metrics.store_write.clone(),
                flushes: metrics.store_flush.clone(),
                settle_steps: metrics.store_settle_step.clone(),
                pending: metrics.store_promotions_pending.clone(),
            },
        );
        let writer = writes.writer();
        let blocks_seen = Blocks::new(provider.clone());
        let directory = Arc::new(RwLock::new(Directory::new(me, nodes, network)));
        let (mailbox_tx, mailbox) = mpsc::channel(MAILBOX);
        let (acks, watch) = (Acks::default(), Watch::default());
        let (status_tx, status) = watch::channel(Status {
            chain_head: start_block,
            ..Status::default()
        });
        let (peers, plans) = watch::channel(PeerPlan::default());
        tasks.spawn(apply_peer_plans(p2p.clone(), plans));
        #[cfg(feature = "faults")]
        let faults = Hook::new(config.faults.clone());
        #[cfg(not(feature = "faults"))]
        let faults = Hook::default();

        let requests = Requests {
            me,
            p2p: p2p.clone(),
            mailbox: mailbox_tx.clone(),
            workers: workers.clone(),
            directory: directory.clone(),
            limits,
            metrics: metrics.clone(),
            faults: faults.clone(),
            timeout: request_timeout,
            blocks: blocks_seen.clone(),
            max_message_bytes,
            pending: Default::default(),
        };
        let after_writes =
            AfterWrites::spawn(writer.clone(), requests, acks.clone(), watch.clone());
        let executor = Executor::new(
            me,
            writes,
            after_writes,
            registrar.clone(),
            p2p.clone(),
            metrics.clone(),
            directory.clone(),
            faults,
            leading,
        );
        let (reads, read_server) = Reads::spawn(store.clone(), QUEUE);
        tasks.spawn(read_server);
        let (client_tx, client_jobs) = mpsc::channel(QUEUE);
        let client = ClientService {
            me,
            key: key.clone(),
            directory: directory.clone(),
            mailbox: mailbox_tx.clone(),
            workers: workers.clone(),
            reads: reads.clone(),
            acks,
            backlog: crate::client::Backlog::new(config.client_limits.unreplicated),
            ack_timeout: config.ack_timeout,
            watch: watch.clone(),
            registrar,
            registry: registry.clone(),
            writer: writer.clone(),
            p2p: p2p.clone(),
            status,
            creations: config
                .client_limits
                .stream_creations
                .map(|rate| std::sync::Mutex::new(rill_p2p::limits::Buckets::new(rate))),
            metrics: metrics.clone(),
        };
        tasks.spawn(client.run(client_jobs));
        let router = Router {
            p2p: p2p.clone(),
            workers,
            reads,
            client: client_tx,
            mailbox: mailbox_tx.clone(),
            limits,
            metrics: metrics.clone(),
            writer: writer.clone(),
            connected: Default::default(),
            opening: Default::default(),
            max_message_bytes,
        };
        let router_mailbox = mailbox_tx;
        let last_block = store.last_block().map_err(store_error)?;
        let from_block = last_block.map_or(start_block + 1, |b| b + 1);
        let blocks = ChainMonitor::spawn(
            provider,
            config.registry,
            MonitorConfig {
                from_block: Some(from_block),
                poll_interval: config.poll_interval,
                confirmations: config.confirmations,
                ..MonitorConfig::default()
            },
        );
        let mut engine = Engine::new(key.clone(), engine_config);
        replay_rules(&mut engine, &registry, start_block).await?;
        let streams = Streams::open(
            engine,
            store.clone(),
            writer,
            metrics.clone(),
            config.residency,
        )
        .map_err(store_error)?;
        let mut node_loop = NodeLoop {
            me,
            streams,
            registry: registry.clone(),
            executor,
            router,
            directory,
            watch,
            metrics: metrics.clone(),
            limits,
            blocks_seen,
            mailbox,
            mailbox_tx: router_mailbox,
            network: network_events,
            blocks,
            status: status_tx,
            peers,
        };
        follow_registry(&mut node_loop, &registry).await?;
        let effects = node_loop
            .streams
            .handle(now_ms(), Input::ChainHead(start_block));
        node_loop.executor.run(effects);
        node_loop.update_peers();
        node_loop.refresh_status();
        info!(
            held = node_loop.streams.held(),
            loaded = node_loop.streams.loaded(),
            from_block,
            "serving"
        );
        let (shutdown, stop) = oneshot::channel::<()>();
        let main = tokio::spawn(node_loop.run(async move {
            let _ = stop.await;
        }));
        Ok(Self {
            address: me,
            peer_id: key.peer_id(),
            listen,
            metrics: metrics_addr,
            shutdown: Some(shutdown),
            main,
            main_done: false,
            tasks,
        })
    }

    /// The node's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where the node listens.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// Where the node serves its metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Resolves when the node's loop ends on its own (a store failure).
    pub async fn finished(&mut self) -> Result<(), StoreError> {
        if self.main_done {
            return Ok(());
        }
        let result = (&mut self.main).await.unwrap_or(Ok(()));
        self.main_done = true;
        result
    }

    /// Stops the node: the loop ends, what was written is flushed, every task stops.
    pub async fn stop(mut self) -> Result<(), StoreError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let result = self.finished().await;
        self.tasks.shutdown().await;
        result
    }

    /// Stops every task of the node at once, without flushing (for tests of what survives).
    pub async fn crash(mut self) {
        self.main.abort();
        let _ = self.finished().await;
        self.tasks.shutdown().await;
    }
}

/// Replays the registry's changes of rules and node statuses up to `to_block`, so the engine
/// judges old miniblocks (caught up from peers) by the rules and electorate of their time.
async fn replay_rules(
    engine: &mut Engine,
    registry: &Registry,
    to_block: u64,
) -> Result<(), ChainError> {
    let mut config = NetworkConfig::default();
    for (block, event) in registry.rule_history(0, to_block).await? {
        let input = match event {
            RegistryEvent::ConfigUpdated { key, value } => {
                config.apply(&key, value);
                Input::Params {
                    from_block: block,
                    params: chain_follower::params(&config),
                }
            }
            RegistryEvent::NodeAdded(record) => Input::NodeStatus {
                node: record.address,
                from_block: block,
                status: chain_follower::status(record.status),
            },
            RegistryEvent::NodeStatusUpdated { address, status } => Input::NodeStatus {
                node: address,
                from_block: block,
                status: chain_follower::status(status),
            },
            _ => continue,
        };
        let _ = engine.handle(now_ms(), input);
    }
    Ok(())
}

/// Reads every stream from the registry: the directory learns where they are, streams placed
/// on this node that it does not have yet are taken from their genesis, and every held stream
/// learns its registered head (and catches up to it).
async fn follow_registry(node: &mut NodeLoop, registry: &Registry) -> Result<(), ChainError> {
    let me = node.me;
    let records = registry.streams(STREAM_PAGE).await?;
    // Read after the records, so every stream among them was allocated by `head`.
    let head = registry.block_number().await?;
    let missing: Vec<StreamId> = records
        .iter()
        .filter(|r| r.nodes.contains(&me) && !node.streams.holds(&r.id))
        .map(|r| r.id)
        .collect();
    let mut genesis = if missing.is_empty() {
        HashMap::new()
    } else {
        registry.genesis_of(&missing, head).await?
    };
    for record in records {
        node.directory
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add_stream(record.id, record.nodes.clone());
        if !record.nodes.contains(&me) {
            continue;
        }
        if let Some(genesis) = genesis.remove(&record.id) {
            node.allocated(
                record.id,
                record.nodes.clone(),
                record.genesis_hash,
                &genesis,
            );
        }
        let effects = node.streams.handle(
            now_ms(),
            Input::MiniblockRegistered {
                stream: record.id,
                num: record.last_miniblock_num,
                hash: record.last_miniblock_hash,
            },
        );
        node.executor.run(effects);
    }
    Ok(())
}

/// Runs a node until `shutdown` resolves (or its loop fails).
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let mut node = Node::start(config).await?;
    tokio::select! {
        () = shutdown => Ok(node.stop().await?),
        result = node.finished() => Ok(result?),
    }
}

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Its store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}
