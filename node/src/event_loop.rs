//! The node's loop: the one owner of the engine. It only routes: chain blocks to the chain
//! follower (`chain_follower.rs`), network events to the router, finished work (opened events, answers to the
//! node's requests, client events) to the engine, timers to the engine and the outbox; the
//! executor carries out what the engine decides. The chain always goes first and every other
//! source is served at most `BUDGET` items at a time, so a gossip or client flood cannot
//! starve block processing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use rill_chain::ChainBlock;
use rill_engine::{Engine, Input, Reject, StreamView};
use rill_p2p::{NetworkEvent, P2p};
use rill_protocol::{Limits, ParsedEvent, StreamId};
use rill_store::Store;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::blocks::Blocks;
use crate::client::Watch;
use crate::directory::{SharedDirectory, read};
use crate::executor::Executor;
use crate::metrics::Metrics;
use crate::router::{OpenedCandidate, OpenedGossip, Router};

/// Items taken from one source before the others get a turn.
const BUDGET: usize = 64;
/// How often the engine's timers run.
const TICK: Duration = Duration::from_millis(50);
/// How long gossip gathers before it is sent.
const GOSSIP_BATCH: Duration = Duration::from_millis(5);

/// Work finished elsewhere and handed to the loop.
pub(crate) enum LoopMsg {
    /// The answer to one of this node's requests.
    Input(Input),
    /// A gossip batch, its events opened.
    Gossip(OpenedGossip),
    /// A leader's candidate, opened.
    Candidate(OpenedCandidate),
    /// A client's event, opened, to admit.
    AddEvent {
        stream: StreamId,
        event: ParsedEvent,
        reply: oneshot::Sender<Result<(), Reject>>,
    },
    /// A client's event did not open (for the metrics).
    ClientRefused(&'static str),
}

/// What the node reports about itself (`Info`, the devnet table), from its own counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Status {
    pub(crate) chain_head: u64,
    pub(crate) streams_held: u64,
    pub(crate) streams_loaded: u64,
    pub(crate) minipool_events: u64,
    pub(crate) miniblocks_promoted: u64,
    pub(crate) miniblocks_produced: u64,
}

/// Wall-clock milliseconds: the engine's clock (header timestamps, timers).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct NodeLoop {
    pub(crate) me: Address,
    pub(crate) engine: Engine,
    pub(crate) executor: Executor,
    pub(crate) router: Router,
    pub(crate) directory: SharedDirectory,
    pub(crate) store: Store,
    pub(crate) watch: Watch,
    pub(crate) metrics: Metrics,
    pub(crate) limits: Limits,
    pub(crate) blocks_seen: Blocks,
    pub(crate) mailbox: mpsc::Receiver<LoopMsg>,
    pub(crate) network: mpsc::Receiver<NetworkEvent>,
    pub(crate) blocks: mpsc::Receiver<ChainBlock>,
    pub(crate) status: watch::Sender<Status>,
    /// The registered nodes and the peers to stay connected to, as the network should know
    /// them (a task hands the latest to the network, in order).
    pub(crate) peers: watch::Sender<PeerPlan>,
}

/// The registered nodes and the peers this node shares streams with.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerPlan {
    pub(crate) nodes: Vec<rill_p2p::NodeEntry>,
    pub(crate) keep: Vec<rill_p2p::PeerId>,
}

/// Hands the latest [`PeerPlan`] to the network until the loop is gone.
pub(crate) async fn apply_peer_plans(p2p: P2p, mut plans: watch::Receiver<PeerPlan>) {
    while plans.changed().await.is_ok() {
        let plan = plans.borrow_and_update().clone();
        p2p.set_nodes(plan.nodes).await;
        p2p.keep_connected(plan.keep).await;
    }
}

impl NodeLoop {
    /// Runs until `shutdown` resolves, then makes everything written durable.
    pub(crate) async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), rill_store::StoreError> {
        let mut tick = tokio::time::interval(TICK);
        let mut flush = tokio::time::interval(GOSSIP_BATCH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ticks = 0u64;
        tokio::pin!(shutdown);
        loop {
            // The chain first, always.
            while let Ok(block) = self.blocks.try_recv() {
                self.on_block(block);
            }
            tokio::select! {
                Some(block) = self.blocks.recv() => self.on_block(block),
                Some(message) = self.mailbox.recv() => {
                    self.on_message(message);
                    for _ in 1..BUDGET {
                        let Ok(message) = self.mailbox.try_recv() else { break };
                        self.on_message(message);
                    }
                }
                Some(event) = self.network.recv() => {
                    self.on_network(event);
                    for _ in 1..BUDGET {
                        let Ok(event) = self.network.try_recv() else { break };
                        self.on_network(event);
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    self.on_tick(ticks);
                }
                _ = flush.tick() => self.executor.flush_gossip(),
                () = &mut shutdown => break,
            }
        }
        info!("shutting down");
        self.executor.flush_gossip();
        self.store.flush()
    }

    fn on_network(&mut self, event: NetworkEvent) {
        self.router
            .on_network(event, now_ms(), &mut self.engine, &mut self.executor);
    }

    fn on_message(&mut self, message: LoopMsg) {
        let now = now_ms();
        match message {
            LoopMsg::Input(input) => {
                let effects = self.engine.handle(now, input);
                self.executor.run(effects);
            }
            LoopMsg::Gossip(opened) => {
                self.router
                    .on_opened_gossip(opened, now, &mut self.engine, &mut self.executor);
            }
            LoopMsg::Candidate(opened) => {
                self.router
                    .on_opened_candidate(opened, now, &mut self.engine, &mut self.executor);
            }
            LoopMsg::AddEvent {
                stream,
                event,
                reply,
            } => {
                let hash = event.hash();
                match self.engine.add_event(now, stream, event) {
                    Ok(effects) => {
                        self.executor.client_event(hash);
                        self.executor.run(effects);
                        let _ = reply.send(Ok(()));
                    }
                    Err(reject) => {
                        self.metrics.reject(reject.code());
                        let _ = reply.send(Err(reject));
                    }
                }
            }
            LoopMsg::ClientRefused(reason) => self.metrics.reject(reason),
        }
    }

    fn on_tick(&mut self, ticks: u64) {
        let effects = self.engine.handle(now_ms(), Input::Tick);
        self.executor.run(effects);
        self.watch.expire(Instant::now());
        // Twice a second: the status (it walks every loaded stream).
        if ticks.is_multiple_of(10) {
            self.refresh_status();
        }
    }

    fn refresh_status(&mut self) {
        let loaded = self.engine.stream_ids().count() as u64;
        let pooled: u64 = self
            .engine
            .stream_ids()
            .filter_map(|id| self.engine.stream(id))
            .map(|s| s.minipool_len() as u64)
            .sum();
        let held = read(&self.directory).mine().len() as u64;
        self.metrics.streams_loaded.set(loaded as i64);
        self.metrics.streams_held.set(held as i64);
        self.metrics.minipool_events.set(pooled as i64);
        let promoted = self.metrics.miniblocks_promoted.get();
        let produced = self.metrics.miniblocks_produced.get();
        self.status.send_modify(|s| {
            s.streams_loaded = loaded;
            s.streams_held = held;
            s.minipool_events = pooled;
            s.miniblocks_promoted = promoted;
            s.miniblocks_produced = produced;
        });
    }

    /// Hands the network the registered nodes and the peers to stay connected to.
    pub(crate) fn update_peers(&self) {
        let plan = {
            let directory = read(&self.directory);
            PeerPlan {
                nodes: directory.node_entries(),
                keep: directory.stream_peers(),
            }
        };
        let _ = self.peers.send(plan);
    }
}
