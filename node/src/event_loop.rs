//! The node's loop: the one owner of the engine. It only routes: chain blocks to the chain
//! follower (`chain_follower.rs`), network events to the router, finished work (opened events, answers to the
//! node's requests, client events) to the engine, timers to the engine and the outbox; the
//! executor carries out what the engine decides. The chain always goes first and every other
//! source is served at most `BUDGET` items at a time, so a gossip or client flood cannot
//! starve block processing.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256};
use rill_chain::{ChainBlock, Registry};
use rill_engine::{Input, Reject, StreamView};
use rill_p2p::{NetworkEvent, P2p};
use rill_protocol::{Limits, ParsedEvent, StreamId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::blocks::Blocks;
use crate::client::Watch;
use crate::directory::{SharedDirectory, read};
use crate::executor::Executor;
use crate::metrics::Metrics;
use crate::router::{OpenedCandidate, OpenedGossip, Router};
use crate::streams::Streams;

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
    /// A client's events for one stream, opened, to admit in order; the reply has a verdict
    /// per event, and is dropped if a store write failed.
    AddEvents {
        stream: StreamId,
        events: Vec<ParsedEvent>,
        reply: oneshot::Sender<Vec<Result<(), Reject>>>,
    },
    /// Client events that did not open, by reason (for the metrics).
    ClientRefused(Vec<&'static str>),
    /// Which of `hashes` the stream's minipool holds: a catch-up reuses those events rather
    /// than checking their signatures again.
    PoolEvents {
        stream: StreamId,
        hashes: Vec<B256>,
        reply: oneshot::Sender<HashMap<B256, ParsedEvent>>,
    },
    /// A stream to take again from its registry record and genesis.
    Retake {
        record: rill_chain::StreamRecord,
        genesis: Vec<u8>,
    },
}

/// What the node reports about itself (`Info`, the devnet table), from its own counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Status {
    pub(crate) chain_head: u64,
    pub(crate) streams_held: u64,
    pub(crate) streams_loaded: u64,
    pub(crate) streams_busy: u64,
    pub(crate) minipool_events: u64,
    pub(crate) miniblocks_promoted: u64,
    pub(crate) events_promoted: u64,
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
    pub(crate) streams: Streams,
    pub(crate) registry: Registry,
    pub(crate) executor: Executor,
    pub(crate) router: Router,
    pub(crate) directory: SharedDirectory,
    pub(crate) watch: Watch,
    pub(crate) metrics: Metrics,
    pub(crate) limits: Limits,
    pub(crate) blocks_seen: Blocks,
    pub(crate) mailbox: mpsc::Receiver<LoopMsg>,
    /// The loop's own mailbox, for tasks it starts.
    pub(crate) mailbox_tx: mpsc::Sender<LoopMsg>,
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
            if let Some(failure) = self.executor.take_failure() {
                error!(%failure, "a store write failed: stopping without flushing gossip");
                return Err(failure);
            }
            self.executor.rounds(self.streams.leads_rounds());
        }
        info!("shutting down");
        self.executor.flush_gossip();
        if self.executor.writer.durable().await {
            return Ok(());
        }
        Err(self
            .executor
            .take_failure()
            .unwrap_or_else(|| rill_store::StoreError::io("the store writer is gone")))
    }

    fn on_network(&mut self, event: NetworkEvent) {
        self.router
            .on_network(event, now_ms(), &mut self.streams, &mut self.executor);
    }

    fn on_message(&mut self, message: LoopMsg) {
        let now = now_ms();
        match message {
            LoopMsg::Input(input) => {
                let effects = self.streams.handle(now, input);
                self.executor.run(effects);
            }
            LoopMsg::Gossip(opened) => {
                self.router
                    .on_opened_gossip(opened, now, &mut self.streams, &mut self.executor);
            }
            LoopMsg::Candidate(opened) => {
                self.router
                    .on_opened_candidate(opened, now, &mut self.streams, &mut self.executor);
            }
            LoopMsg::AddEvents {
                stream,
                events,
                reply,
            } => {
                let mut verdicts = Vec::with_capacity(events.len());
                let mut effects = Vec::new();
                for event in events {
                    let hash = event.hash();
                    match self
                        .streams
                        .for_stream(&stream)
                        .add_event(now, stream, event)
                    {
                        Ok(admitted) => {
                            self.executor.client_event(hash);
                            effects.extend(admitted);
                            verdicts.push(Ok(()));
                        }
                        Err(reject) => {
                            self.metrics.reject(reject.code());
                            verdicts.push(Err(reject));
                        }
                    }
                }
                // One run for the whole batch: its minipool writes go in one store write.
                self.executor.run(effects);
                // The client's task waits until they are durable before it answers.
                let _ = reply.send(verdicts);
            }
            LoopMsg::ClientRefused(reasons) => {
                for reason in reasons {
                    self.metrics.reject(reason);
                }
            }
            LoopMsg::PoolEvents {
                stream,
                hashes,
                reply,
            } => {
                let held = match self.streams.for_stream(&stream).stream(&stream) {
                    Some(view) => hashes
                        .into_iter()
                        .filter_map(|h| view.pool_event(&h).map(|e| (h, e.clone())))
                        .collect(),
                    None => HashMap::new(),
                };
                let _ = reply.send(held);
            }
            LoopMsg::Retake { record, genesis } => {
                self.allocated(record.id, record.nodes, record.genesis_hash, &genesis);
                let effects = self.streams.handle(
                    now,
                    Input::MiniblockRegistered {
                        stream: record.id,
                        num: record.last_miniblock_num,
                        hash: record.last_miniblock_hash,
                    },
                );
                self.executor.run(effects);
            }
        }
    }

    fn on_tick(&mut self, ticks: u64) {
        let effects = self.streams.handle(now_ms(), Input::Tick);
        self.executor.run(effects);
        self.watch.expire(Instant::now());
        // Twice a second: the status (it walks every loaded stream).
        if ticks.is_multiple_of(10) {
            self.refresh_status();
        }
        // Once a second: idle streams leave memory; broken ones are taken again.
        if ticks.is_multiple_of(20) {
            self.streams.evict_idle();
            for stream in self.streams.take_broken() {
                tokio::spawn(retake(
                    self.registry.clone(),
                    stream,
                    self.mailbox_tx.clone(),
                ));
            }
        }
    }

    /// Publishes what `Info` and the metrics report (the same figures).
    pub(crate) fn refresh_status(&mut self) {
        let engine = &self.streams.engine;
        let (mut pooled, mut busy) = (0u64, 0u64);
        for stream in engine.stream_ids().filter_map(|id| engine.stream(id)) {
            pooled += stream.minipool_len() as u64;
            busy += u64::from(stream.busy());
        }
        let loaded = self.streams.loaded() as u64;
        let held = self.streams.held() as u64;
        self.metrics.streams_loaded.set(loaded as i64);
        self.metrics.streams_held.set(held as i64);
        self.metrics.minipool_events.set(pooled as i64);
        self.metrics.streams_busy.set(busy as i64);
        let writer = &self.executor.writer;
        let backlog = writer.submitted().saturating_sub(writer.applied_now());
        self.metrics.store_write_backlog.set(backlog as i64);
        let recovered = self.router.workers.recovered();
        let counted = self.metrics.signature_recoveries.get();
        self.metrics
            .signature_recoveries
            .inc_by(recovered.saturating_sub(counted));
        let promoted = self.metrics.miniblocks_promoted.get();
        let events_promoted = self.metrics.events_promoted.get();
        let produced = self.metrics.miniblocks_produced.get();
        self.status.send_modify(|s| {
            s.streams_loaded = loaded;
            s.streams_busy = busy;
            s.streams_held = held;
            s.minipool_events = pooled;
            s.miniblocks_promoted = promoted;
            s.events_promoted = events_promoted;
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

/// Takes a stream again whose stored state did not load: its genesis from the registry's
/// logs, then its registered head (it is caught up from peers).
async fn retake(registry: Registry, stream: StreamId, mailbox: mpsc::Sender<LoopMsg>) {
    let taken = async {
        let Some(record) = registry.stream(stream).await? else {
            return Ok(None);
        };
        let head = registry.block_number().await?;
        let genesis = registry.genesis_of(&[stream], head).await?.remove(&stream);
        Ok::<_, rill_chain::ChainError>(genesis.map(|g| (record, g)))
    };
    match taken.await {
        Ok(Some((record, genesis))) => {
            let _ = mailbox.send(LoopMsg::Retake { record, genesis }).await;
        }
        Ok(None) => warn!(%stream, "not in the registry; not taken again"),
        Err(e) => warn!(%stream, %e, "cannot read the registry to take the stream again"),
    }
}
