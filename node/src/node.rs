//! Startup and the node's one loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};
use anyhow::Context as _;
use prost::Message as _;
use rill_chain::{
    ChainBlock, ChainMonitor, MiniblockRegistration, MonitorConfig, NetworkConfig, NodeRecord,
    NodeStatus, Registrar, RegistrarConfig, RegistrationOutcome, Registry, RegistryEvent,
    connect_with_key,
};
use rill_engine::{
    Effect, Engine, EngineConfig, Gossip, Input, Notification, ProposalReply, ProposalRequest,
    StreamView,
};
use rill_p2p::{
    MessageId, Multiaddr, NetworkEvent, P2p, P2pConfig, PeerId, Protocol, Responder, Validation,
};
use rill_protocol::keys::address_of_peer;
use rill_protocol::{Limits, NodeKey, OpenError, ParsedEvent, ParsedMiniblock, StreamId, pb};
use rill_store::Store;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::NodeConfig;
use crate::durability::Durability;
use crate::metrics::{self, Metrics};
use crate::updates::Updates;

/// Work finished off the node's loop and handed back to it.
pub(crate) enum Internal {
    /// The result of one of the node's own requests.
    Input(Input),
    /// A gossip batch whose envelopes were opened (signatures checked) on a worker thread;
    /// `None` if one of them was invalid.
    Gossip {
        from: Address,
        via: PeerId,
        id: MessageId,
        stream: StreamId,
        events: Option<Vec<ParsedEvent>>,
    },
    /// A client's event, opened on a worker thread.
    ClientEvent {
        stream: StreamId,
        event: Result<ParsedEvent, OpenError>,
        ack: pb::Ack,
        responder: Responder<pb::ClientResponse>,
    },
}

/// What a client waits for after AddEvent.
pub(crate) enum AckWait {
    Quorum(oneshot::Sender<Option<u64>>),
    Miniblock(oneshot::Sender<Option<u64>>),
}

pub(crate) struct Node {
    pub(crate) key: NodeKey,
    pub(crate) me: Address,
    pub(crate) engine: Engine,
    pub(crate) store: Store,
    pub(crate) p2p: P2p,
    pub(crate) registrar: Registrar,
    pub(crate) limits: Limits,
    pub(crate) network: NetworkConfig,
    /// Every registered node, as the registry's logs describe it.
    records: HashMap<Address, NodeRecord>,
    /// Registered, Operational nodes with a valid `/p2p/` multiaddr.
    pub(crate) nodes: HashMap<Address, (PeerId, Multiaddr)>,
    /// Every registered stream's nodes (for forwarding client requests).
    pub(crate) streams: HashMap<StreamId, Vec<Address>>,
    /// Work finished off the loop (requests, signature checks), fed back into it.
    pub(crate) internal: mpsc::UnboundedSender<Internal>,
    pub(crate) proposals: HashMap<(Address, StreamId), Responder<pb::MiniblockResponse>>,
    pub(crate) acks: HashMap<B256, Vec<AckWait>>,
    pub(crate) updates: Updates,
    pub(crate) chain_head: watch::Sender<u64>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) durability: Durability,
    /// Gossip waiting for the next batch: per stream, events to send and hashes to announce.
    outbox: BTreeMap<StreamId, (Vec<pb::Envelope>, Vec<Vec<u8>>)>,
    pub(crate) started: Instant,
    dialed: HashSet<PeerId>,
}

fn peer_of(record: &NodeRecord) -> Option<(PeerId, Multiaddr)> {
    let addr: Multiaddr = record.multiaddr.parse().ok()?;
    let peer = addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })?;
    // A multiaddr naming someone else's key is not this node.
    (address_of_peer(&peer) == Some(record.address)).then_some((peer, addr))
}

/// How long gossip accumulates before it is published as one batch per stream.
const GOSSIP_BATCH: Duration = Duration::from_millis(5);
/// At most this many bytes of events in one gossip message.
const GOSSIP_BATCH_BYTES: usize = 256 * 1024;

/// Runs a node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let key = NodeKey::load(&config.key_file).with_context(|| {
        format!(
            "loading the node key (create one with `rill-node keygen --out {}`)",
            config.key_file.display()
        )
    })?;
    let me = key.address();
    info!(address = %me, peer_id = %key.peer_id(), "starting");
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let provider = connect_with_key(&config.rpc_url, &key)?;
    let registry = Registry::new(config.registry, provider.clone());
    let start_block = registry
        .block_number()
        .await
        .context("reaching the chain RPC")?;
    let network = registry
        .config()
        .await
        .context("reading the registry config")?;
    let limits = Limits {
        max_event_bytes: network.max_event_bytes as usize,
    };
    let engine_config = EngineConfig {
        max_event_bytes: network.max_event_bytes as usize,
        max_events_per_miniblock: network.max_events_per_miniblock as usize,
        snapshot_interval: network.snapshot_interval,
        ..EngineConfig::default()
    };

    let p2p_config = P2pConfig {
        max_event_bytes: network.max_event_bytes as usize,
        ..P2pConfig::node(vec![config.listen.clone()])
    };
    let (p2p, mut net_events) = rill_p2p::spawn(&key, p2p_config)
        .await
        .map_err(|e| anyhow::anyhow!("starting the network on {}: {e}", config.listen))?;
    let registrar = Registrar::spawn(
        registry.clone(),
        me,
        RegistrarConfig {
            flush_after: config.block_time / 4,
            ..RegistrarConfig::default()
        },
    );
    let (internal, mut internal_rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = config.metrics {
        tokio::spawn(metrics::serve(addr, metrics.clone()));
    }
    let durability = Durability::spawn(store.clone());
    let mut node = Node {
        engine: Engine::new(key.clone(), engine_config),
        key,
        me,
        store,
        p2p,
        registrar,
        limits,
        network,
        records: HashMap::new(),
        nodes: HashMap::new(),
        streams: HashMap::new(),
        internal,
        proposals: HashMap::new(),
        acks: HashMap::new(),
        updates: Updates::default(),
        chain_head: watch::channel(start_block).0,
        metrics,
        started: Instant::now(),
        durability,
        outbox: BTreeMap::new(),
        dialed: HashSet::new(),
    };
    for record in registry
        .nodes()
        .await
        .context("reading the registry's nodes")?
    {
        node.records.insert(record.address, record);
    }
    node.apply_records();
    node.restore_streams()?;
    for record in registry
        .streams(500)
        .await
        .context("reading the registry's streams")?
    {
        node.streams.insert(record.id, record.nodes.clone());
        if !record.nodes.contains(&me) {
            continue;
        }
        if node.engine.stream(&record.id).is_none()
            && let Some((_, genesis)) = registry.stream_with_genesis(record.id).await?
        {
            node.on_allocated(record.id, record.nodes.clone(), &genesis);
        }
        let input = Input::MiniblockRegistered {
            stream: record.id,
            num: record.last_miniblock_num,
            hash: record.last_miniblock_hash,
        };
        node.input(input);
    }
    let from_block = node.store.last_block()?.map_or(start_block + 1, |b| b + 1);
    let mut blocks = ChainMonitor::spawn(
        provider,
        config.registry,
        MonitorConfig {
            from_block: Some(from_block),
            ..MonitorConfig::default()
        },
    );
    info!(
        streams = node.engine.stream_ids().count(),
        from_block, "serving"
    );

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut gossip_tick = tokio::time::interval(GOSSIP_BATCH);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(event) = net_events.recv() => node.on_network(event),
            Some(block) = blocks.recv() => node.on_block(block),
            Some(work) = internal_rx.recv() => node.on_internal(work),
            _ = tick.tick() => {
                node.input(Input::Tick);
                node.updates.expire(Instant::now());
                node.update_gauges();
            }
            _ = gossip_tick.tick() => node.flush_gossip(),
            () = &mut shutdown => break,
        }
    }
    info!("shutting down");
    node.store.flush()?;
    Ok(())
}

impl Node {
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Recomputes who counts as a node (registered, Operational, with a multiaddr naming its
    /// own key) and hands the set to the network's gating.
    fn apply_records(&mut self) {
        self.nodes = self
            .records
            .values()
            .filter(|r| r.status == NodeStatus::Operational)
            .filter_map(|r| peer_of(r).map(|p| (r.address, p)))
            .collect();
        let entries = self
            .nodes
            .iter()
            .map(|(address, (peer, addr))| (*address, *peer, Some(addr.clone())))
            .collect();
        self.p2p.set_nodes(entries);
    }

    /// Connects to the other nodes of the streams this node holds.
    fn dial_stream_peers(&mut self, stream: &StreamId) {
        let Some(nodes) = self.streams.get(stream) else {
            return;
        };
        for address in nodes.clone() {
            if address == self.me {
                continue;
            }
            if let Some((peer, addr)) = self.nodes.get(&address).cloned()
                && self.dialed.insert(peer)
            {
                let p2p = self.p2p.clone();
                tokio::spawn(async move {
                    if let Err(e) = p2p.dial(peer, Some(addr)).await {
                        debug!(%peer, %e, "dial failed (it will dial us, or we retry on demand)");
                    }
                });
            }
        }
    }

    fn restore_streams(&mut self) -> anyhow::Result<()> {
        for id in self.store.stream_ids()? {
            let restored = self.store.load(&id, &self.limits)?;
            self.streams.insert(id, restored.nodes.clone());
            for event in &restored.minipool {
                self.updates
                    .push(id, pb::stream_update::Kind::Event(event.envelope().clone()));
            }
            self.engine
                .restore(restored)
                .map_err(|e| anyhow::anyhow!("restoring {id}: {e}"))?;
            self.p2p.subscribe(id);
            self.dial_stream_peers(&id);
        }
        Ok(())
    }

    pub(crate) fn on_allocated(&mut self, id: StreamId, nodes: Vec<Address>, genesis: &[u8]) {
        self.streams.insert(id, nodes.clone());
        if !nodes.contains(&self.me) || self.engine.stream(&id).is_some() {
            return;
        }
        let parsed = pb::Miniblock::decode(genesis)
            .ok()
            .and_then(|mb| ParsedMiniblock::open(mb, &self.limits).ok());
        let Some(genesis) = parsed else {
            warn!(stream = %id, "allocated with an unreadable genesis; ignoring");
            return;
        };
        if let Err(e) = self.store.create_stream(&id, &nodes) {
            warn!(stream = %id, %e, "cannot record the stream");
            return;
        }
        self.input(Input::StreamAllocated {
            stream: id,
            nodes,
            genesis,
        });
        self.p2p.subscribe(id);
        self.dial_stream_peers(&id);
        info!(stream = %id, "holding a new stream");
    }

    fn on_block(&mut self, block: ChainBlock) {
        for event in block.events {
            match event {
                RegistryEvent::StreamAllocated {
                    stream_id,
                    nodes,
                    genesis,
                    ..
                } => self.on_allocated(stream_id, nodes, &genesis),
                RegistryEvent::MiniblockRegistered {
                    stream_id,
                    hash,
                    num,
                    ..
                } => {
                    if self.engine.stream(&stream_id).is_some() {
                        self.input(Input::MiniblockRegistered {
                            stream: stream_id,
                            num,
                            hash,
                        });
                    }
                }
                RegistryEvent::MiniblockRegistrationFailed {
                    stream_id,
                    hash,
                    num,
                    reason,
                } => {
                    if self.engine.stream(&stream_id).is_some() {
                        self.input(Input::RegistrationRejected {
                            stream: stream_id,
                            num,
                            hash,
                            reason,
                        });
                    }
                }
                RegistryEvent::NodeAdded(record) => {
                    self.records.insert(record.address, record);
                    self.apply_records();
                }
                RegistryEvent::NodeStatusUpdated { address, status } => {
                    if let Some(record) = self.records.get_mut(&address) {
                        record.status = status;
                    }
                    self.apply_records();
                }
                RegistryEvent::NodeMultiaddrUpdated { address, multiaddr } => {
                    if let Some(record) = self.records.get_mut(&address) {
                        record.multiaddr = multiaddr;
                    }
                    self.apply_records();
                }
                RegistryEvent::ConfigUpdated { key, value } => {
                    info!(%key, value, "registry config changed (applies at restart)");
                }
            }
        }
        let number = block.block.number;
        self.input(Input::ChainBlock {
            number,
            prevrandao: block.block.prevrandao,
        });
        if let Err(e) = self.store.set_last_block(number) {
            warn!(%e, "cannot record the chain position");
        }
        self.metrics
            .chain_head
            .store(number, std::sync::atomic::Ordering::Relaxed);
        let _ = self.chain_head.send(number);
    }

    /// Feeds the engine and carries out its effects.
    pub(crate) fn input(&mut self, input: Input) {
        let effects = self.engine.handle(self.now_ms(), input);
        self.execute(effects);
    }

    fn peer(&self, address: &Address) -> Option<PeerId> {
        self.nodes.get(address).map(|(peer, _)| *peer)
    }

    pub(crate) fn execute(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if let Err(e) = self.store.apply(&effect) {
                warn!(%e, "store write failed");
            }
            match effect {
                Effect::StoreEvent { .. } => Metrics::inc(&self.metrics.events_admitted),
                Effect::DropFromMinipool { .. } | Effect::StoreCandidate { .. } => {}
                Effect::Promote { .. } => Metrics::inc(&self.metrics.miniblocks_promoted),
                Effect::Gossip { stream, message } => {
                    let outbox = self.outbox.entry(stream).or_default();
                    match message {
                        Gossip::EventReceived(event) => outbox.0.push(event.into_envelope()),
                        Gossip::EventInPool(hash) => outbox.1.push(hash.to_vec()),
                    }
                }
                Effect::RequestProposal {
                    to,
                    stream,
                    request,
                } => self.request_proposal(to, stream, request),
                Effect::ReplyProposal { to, stream, reply } => {
                    if let Some(responder) = self.proposals.remove(&(to, stream)) {
                        responder.send(pb::MiniblockResponse {
                            kind: Some(pb::miniblock_response::Kind::Propose(reply_to_pb(reply))),
                            error: None,
                        });
                    }
                }
                Effect::SendCandidate {
                    to,
                    stream,
                    miniblock,
                } => {
                    let Some(peer) = self.peer(&to) else { continue };
                    let p2p = self.p2p.clone();
                    let request = pb::MiniblockRequest {
                        kind: Some(pb::miniblock_request::Kind::SaveCandidate(
                            pb::SaveMiniblockCandidateRequest {
                                stream_id: stream.0.to_vec(),
                                candidate: Some(miniblock.to_pb()),
                            },
                        )),
                    };
                    tokio::spawn(async move {
                        match p2p.miniblock_request(peer, request).await {
                            Ok(pb::MiniblockResponse { error: Some(e), .. }) => {
                                debug!(%peer, message = %e.message, "candidate refused")
                            }
                            Err(e) => debug!(%peer, %e, "candidate not delivered"),
                            Ok(_) => {}
                        }
                    });
                }
                Effect::Register(r) => {
                    Metrics::inc(&self.metrics.miniblocks_produced);
                    Metrics::inc(&self.metrics.registration_entries);
                    let registrar = self.registrar.clone();
                    let metrics = self.metrics.clone();
                    let entry = MiniblockRegistration {
                        stream_id: r.stream,
                        prev_hash: r.prev_hash,
                        hash: r.hash,
                        num: r.num,
                        sealed: false,
                    };
                    tokio::spawn(async move {
                        match registrar.register(entry).await {
                            Ok(RegistrationOutcome::Registered { .. }) => {}
                            Ok(RegistrationOutcome::Rejected { reason, .. }) => {
                                Metrics::inc(&metrics.registration_rejected);
                                debug!(stream = %entry.stream_id, num = entry.num, %reason, "registration refused");
                            }
                            Err(e) => {
                                warn!(stream = %entry.stream_id, num = entry.num, %e, "registration failed")
                            }
                        }
                    });
                }
                Effect::FetchEvents {
                    from,
                    stream,
                    hashes,
                } => {
                    let Some(peer) = self.peer(&from) else {
                        continue;
                    };
                    Metrics::inc(&self.metrics.fetches);
                    let (p2p, back, limits) =
                        (self.p2p.clone(), self.internal.clone(), self.limits);
                    let request = pb::GetEventsRequest {
                        stream_id: stream.0.to_vec(),
                        hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                    };
                    tokio::spawn(async move {
                        if let Ok(response) = p2p.get_events(peer, request).await {
                            let events = response
                                .envelopes
                                .into_iter()
                                .filter_map(|e| ParsedEvent::open(e, &limits).ok())
                                .collect();
                            let _ = back.send(Internal::Input(Input::FetchedEvents {
                                from,
                                stream,
                                events,
                            }));
                        }
                    });
                }
                Effect::FetchMiniblocks {
                    from,
                    stream,
                    from_num,
                    to_num,
                } => {
                    let Some(peer) = self.peer(&from) else {
                        continue;
                    };
                    Metrics::inc(&self.metrics.fetches);
                    let (p2p, back, limits) =
                        (self.p2p.clone(), self.internal.clone(), self.limits);
                    let request = pb::MiniblockRequest {
                        kind: Some(pb::miniblock_request::Kind::GetMiniblocks(
                            pb::GetMiniblocksRequest {
                                stream_id: stream.0.to_vec(),
                                from: from_num,
                                to: to_num,
                                include_candidate: true,
                            },
                        )),
                    };
                    tokio::spawn(async move {
                        let Ok(response) = p2p.miniblock_request(peer, request).await else {
                            return;
                        };
                        let Some(pb::miniblock_response::Kind::GetMiniblocks(got)) = response.kind
                        else {
                            return;
                        };
                        let miniblocks = got
                            .miniblocks
                            .into_iter()
                            .chain(got.candidates)
                            .filter_map(|m| ParsedMiniblock::open(m, &limits).ok())
                            .collect();
                        let _ = back.send(Internal::Input(Input::FetchedMiniblocks {
                            from,
                            stream,
                            miniblocks,
                        }));
                    });
                }
                Effect::Notify(notification) => self.notify(notification),
                Effect::Rejected {
                    reason,
                    from,
                    stream,
                } => {
                    self.metrics.reject(reason.code());
                    debug!(%stream, ?from, %reason, "refused");
                }
            }
        }
    }

    fn update_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let ids: Vec<StreamId> = self.engine.stream_ids().copied().collect();
        let pooled: usize = ids
            .iter()
            .filter_map(|id| self.engine.stream(id))
            .map(|s| s.minipool_len())
            .sum();
        self.metrics.minipool_events.store(pooled as u64, Relaxed);
        self.metrics.streams.store(ids.len() as u64, Relaxed);
    }

    /// Publishes what gossip accumulated since the last batch, in messages of at most
    /// `GOSSIP_BATCH_BYTES` of events (a larger event goes alone).
    fn flush_gossip(&mut self) {
        for (stream, (envelopes, hashes)) in std::mem::take(&mut self.outbox) {
            let mut batch = Vec::new();
            let mut size = 0;
            for envelope in envelopes {
                let len = envelope.encoded_len();
                if !batch.is_empty() && size + len > GOSSIP_BATCH_BYTES {
                    self.publish_events(stream, std::mem::take(&mut batch));
                    size = 0;
                }
                size += len;
                batch.push(envelope);
            }
            if !batch.is_empty() {
                self.publish_events(stream, batch);
            }
            for chunk in hashes.chunks(GOSSIP_BATCH_BYTES / 40) {
                let kind = pb::gossip_message::Kind::NewEventInPool(pb::NewEventInPool {
                    stream_id: stream.0.to_vec(),
                    hashes: chunk.to_vec(),
                    node: self.me.to_vec(),
                });
                self.p2p
                    .publish(stream, pb::GossipMessage { kind: Some(kind) });
            }
        }
    }

    fn publish_events(&self, stream: StreamId, envelopes: Vec<pb::Envelope>) {
        let kind = pb::gossip_message::Kind::NewEventReceived(pb::NewEventReceived {
            stream_id: stream.0.to_vec(),
            envelopes,
        });
        self.p2p
            .publish(stream, pb::GossipMessage { kind: Some(kind) });
    }

    fn request_proposal(&mut self, to: Address, stream: StreamId, request: ProposalRequest) {
        let Some(peer) = self.peer(&to) else { return };
        let (p2p, back, limits) = (self.p2p.clone(), self.internal.clone(), self.limits);
        let wire = pb::MiniblockRequest {
            kind: Some(pb::miniblock_request::Kind::Propose(
                pb::ProposeMiniblockRequest {
                    stream_id: stream.0.to_vec(),
                    num: request.num,
                    prev_hash: request.prev_hash.to_vec(),
                    hashes: request.hashes.iter().map(|h| h.to_vec()).collect(),
                    chain_block: request.chain_block,
                },
            )),
        };
        tokio::spawn(async move {
            let Ok(response) = p2p.miniblock_request(peer, wire).await else {
                return;
            };
            let Some(pb::miniblock_response::Kind::Propose(reply)) = response.kind else {
                return;
            };
            let Some(reply) = reply_from_pb(reply, &limits) else {
                return;
            };
            let _ = back.send(Internal::Input(Input::ProposalReply {
                from: to,
                stream,
                reply,
            }));
        });
    }

    fn notify(&mut self, notification: Notification) {
        match notification {
            Notification::EventAdmitted { stream, event } => {
                self.updates.push(
                    stream,
                    pb::stream_update::Kind::Event(event.envelope().clone()),
                );
            }
            Notification::EventQuorum { hash, .. } => {
                if let Some(waiters) = self.acks.get_mut(&hash) {
                    let (ready, rest): (Vec<_>, Vec<_>) = waiters
                        .drain(..)
                        .partition(|w| matches!(w, AckWait::Quorum(_)));
                    *waiters = rest;
                    for waiter in ready {
                        if let AckWait::Quorum(tx) = waiter {
                            let _ = tx.send(None);
                        }
                    }
                }
            }
            Notification::MiniblockPromoted { stream, miniblock } => {
                for event in miniblock.events() {
                    for waiter in self.acks.remove(&event.hash()).unwrap_or_default() {
                        // A promoted event has certainly reached a quorum too.
                        match waiter {
                            AckWait::Quorum(tx) | AckWait::Miniblock(tx) => {
                                let _ = tx.send(Some(miniblock.num()));
                            }
                        }
                    }
                }
                self.updates.push(
                    stream,
                    pb::stream_update::Kind::Miniblock(miniblock.to_pb()),
                );
            }
        }
    }

    fn on_network(&mut self, event: NetworkEvent) {
        match event {
            NetworkEvent::Gossip {
                from,
                via,
                id,
                message,
                ..
            } => self.on_gossip(from, via, id, message),
            NetworkEvent::EventsRequest {
                request, responder, ..
            } => {
                let hashes: Vec<B256> = request
                    .hashes
                    .iter()
                    .filter(|h| h.len() == 32)
                    .map(|h| B256::from_slice(h))
                    .collect();
                let envelopes = self.store.events(&hashes).unwrap_or_default();
                responder.send(pb::GetEventsResponse {
                    envelopes,
                    error: None,
                });
            }
            NetworkEvent::MiniblockRequest {
                from,
                request,
                responder,
            } => self.on_miniblock_request(from, request, responder),
            NetworkEvent::ClientRequest {
                peer,
                request,
                responder,
            } => self.on_client(peer, request, responder),
            NetworkEvent::PeerConnected(_) => {
                self.metrics
                    .peers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            NetworkEvent::PeerDisconnected(peer) => {
                self.metrics
                    .peers
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.dialed.remove(&peer);
            }
            NetworkEvent::Listening(addr) => info!(%addr, "listening"),
        }
    }

    /// Gossip from a registered node. Announcements are cheap and handled here; event batches
    /// are opened (signatures recovered) on a worker thread and come back as
    /// [`Internal::Gossip`], so one node's loop never waits on secp256k1.
    fn on_gossip(&mut self, from: Address, via: PeerId, id: MessageId, message: pb::GossipMessage) {
        let reject = |p2p: &P2p| p2p.report_validation(id.clone(), via, Validation::Reject);
        match message.kind {
            Some(pb::gossip_message::Kind::NewEventReceived(m)) => {
                let Some(stream) = StreamId::from_slice(&m.stream_id) else {
                    return reject(&self.p2p);
                };
                if self.engine.stream(&stream).is_none() {
                    return self.p2p.report_validation(id, via, Validation::Ignore);
                }
                let (back, limits) = (self.internal.clone(), self.limits);
                tokio::task::spawn_blocking(move || {
                    // A node forwards only what it checked: a bad event is the sender's fault.
                    let events = m
                        .envelopes
                        .into_iter()
                        .map(|e| ParsedEvent::open(e, &limits).ok())
                        .collect::<Option<Vec<_>>>();
                    let _ = back.send(Internal::Gossip {
                        from,
                        via,
                        id,
                        stream,
                        events,
                    });
                });
            }
            Some(pb::gossip_message::Kind::NewEventInPool(m)) => {
                let Some(stream) = StreamId::from_slice(&m.stream_id) else {
                    return reject(&self.p2p);
                };
                if m.node != from.to_vec() || m.hashes.iter().any(|h| h.len() != 32) {
                    return reject(&self.p2p);
                }
                let inputs = m
                    .hashes
                    .iter()
                    .map(|h| Input::EventInPool {
                        from,
                        stream,
                        hash: B256::from_slice(h),
                    })
                    .collect();
                self.gossip_inputs(from, via, id, stream, inputs);
            }
            None => reject(&self.p2p),
        }
    }

    /// Runs a gossip message's inputs and reports the verdict: rejected if the engine refused
    /// anything the sender vouched for.
    fn gossip_inputs(
        &mut self,
        from: Address,
        via: PeerId,
        id: MessageId,
        stream: StreamId,
        inputs: Vec<Input>,
    ) {
        if self.engine.stream(&stream).is_none() {
            return self.p2p.report_validation(id, via, Validation::Ignore);
        }
        let mut refused = false;
        for input in inputs {
            let effects = self.engine.handle(self.now_ms(), input);
            refused |= effects
                .iter()
                .any(|e| matches!(e, Effect::Rejected { from: Some(f), .. } if *f == from));
            self.execute(effects);
        }
        let verdict = if refused {
            Validation::Reject
        } else {
            Validation::Accept
        };
        self.p2p.report_validation(id, via, verdict);
    }

    fn on_internal(&mut self, work: Internal) {
        match work {
            Internal::Input(input) => self.input(input),
            Internal::Gossip {
                from,
                via,
                id,
                stream,
                events: Some(events),
            } => {
                let inputs = events
                    .into_iter()
                    .map(|event| Input::GossipEvent {
                        from,
                        stream,
                        event,
                    })
                    .collect();
                self.gossip_inputs(from, via, id, stream, inputs);
            }
            Internal::Gossip { via, id, .. } => {
                self.p2p.report_validation(id, via, Validation::Reject);
            }
            Internal::ClientEvent {
                stream,
                event,
                ack,
                responder,
            } => self.admit_client_event(stream, event, ack, responder),
        }
    }

    fn on_miniblock_request(
        &mut self,
        from: Address,
        request: pb::MiniblockRequest,
        responder: Responder<pb::MiniblockResponse>,
    ) {
        use pb::miniblock_request::Kind;
        let error = |code: pb::ErrorCode, message: String| pb::MiniblockResponse {
            kind: None,
            error: Some(pb::Error {
                code: code as i32,
                message,
            }),
        };
        match request.kind {
            Some(Kind::Propose(p)) => {
                let Some(stream) = StreamId::from_slice(&p.stream_id) else {
                    return responder.send(error(pb::ErrorCode::Malformed, "stream id".into()));
                };
                if p.prev_hash.len() != 32 || p.hashes.iter().any(|h| h.len() != 32) {
                    return responder.send(error(pb::ErrorCode::Malformed, "hash fields".into()));
                }
                if self.engine.stream(&stream).is_none() {
                    return responder.send(error(
                        pb::ErrorCode::UnknownStream,
                        format!("{stream} is not held here"),
                    ));
                }
                self.proposals.insert((from, stream), responder);
                let request = ProposalRequest {
                    num: p.num,
                    prev_hash: B256::from_slice(&p.prev_hash),
                    hashes: p.hashes.iter().map(|h| B256::from_slice(h)).collect(),
                    chain_block: p.chain_block,
                };
                self.input(Input::ProposalRequest {
                    from,
                    stream,
                    request,
                });
                // A refused request leaves the responder: answer it with the refusal.
                if let Some(responder) = self.proposals.remove(&(from, stream)) {
                    responder.send(error(
                        pb::ErrorCode::NotANode,
                        "not a node of this stream".into(),
                    ));
                }
            }
            Some(Kind::SaveCandidate(c)) => {
                let Some(stream) = StreamId::from_slice(&c.stream_id) else {
                    return responder.send(error(pb::ErrorCode::Malformed, "stream id".into()));
                };
                let known = |hash: &B256| {
                    self.engine
                        .stream(&stream)
                        .and_then(|view| view.pool_event(hash).cloned())
                };
                let opened = ParsedMiniblock::open_reusing(
                    c.candidate.unwrap_or_default(),
                    &self.limits,
                    known,
                );
                match opened {
                    Ok(miniblock) => {
                        self.input(Input::Candidate {
                            from,
                            stream,
                            miniblock,
                        });
                        responder.send(pb::MiniblockResponse {
                            kind: Some(pb::miniblock_response::Kind::SaveCandidate(
                                pb::SaveMiniblockCandidateResponse {},
                            )),
                            error: None,
                        });
                    }
                    Err(e) => {
                        self.metrics.reject("malformed");
                        responder.send(error(pb::ErrorCode::BadCandidate, e.to_string()));
                    }
                }
            }
            Some(Kind::GetMiniblocks(g)) => responder.send(self.get_miniblocks(&g)),
            Some(Kind::AllocateStream(_)) => responder.send(error(
                pb::ErrorCode::Internal,
                "streams are allocated through the registry; their genesis arrives with its log"
                    .into(),
            )),
            None => responder.send(error(pb::ErrorCode::Malformed, "empty request".into())),
        }
    }

    pub(crate) fn get_miniblocks(&self, g: &pb::GetMiniblocksRequest) -> pb::MiniblockResponse {
        let Some(stream) = StreamId::from_slice(&g.stream_id) else {
            return pb::MiniblockResponse {
                kind: None,
                error: Some(pb::Error {
                    code: pb::ErrorCode::Malformed as i32,
                    message: "stream id".into(),
                }),
            };
        };
        // At most 1,000 miniblocks per answer: the asker comes back for more.
        let to = g.to.min(g.from.saturating_add(999));
        let miniblocks = self
            .store
            .miniblocks(&stream, g.from, to)
            .unwrap_or_default();
        let candidates = if g.include_candidate {
            self.store.candidates(&stream).unwrap_or_default()
        } else {
            Vec::new()
        };
        pb::MiniblockResponse {
            kind: Some(pb::miniblock_response::Kind::GetMiniblocks(
                pb::GetMiniblocksResponse {
                    miniblocks,
                    candidates,
                },
            )),
            error: None,
        }
    }
}

fn reply_to_pb(reply: ProposalReply) -> pb::ProposeMiniblockResponse {
    pb::ProposeMiniblockResponse {
        num: reply.num,
        prev_hash: reply.prev_hash.to_vec(),
        hashes: reply.hashes.iter().map(|h| h.to_vec()).collect(),
        snapshot_vote: reply.snapshot_vote,
        missing: reply
            .missing
            .into_iter()
            .map(|e| e.into_envelope())
            .collect(),
    }
}

fn reply_from_pb(reply: pb::ProposeMiniblockResponse, limits: &Limits) -> Option<ProposalReply> {
    if reply.prev_hash.len() != 32 || reply.hashes.iter().any(|h| h.len() != 32) {
        return None;
    }
    Some(ProposalReply {
        num: reply.num,
        prev_hash: B256::from_slice(&reply.prev_hash),
        hashes: reply.hashes.iter().map(|h| B256::from_slice(h)).collect(),
        snapshot_vote: reply.snapshot_vote,
        missing: reply
            .missing
            .into_iter()
            .filter_map(|e| ParsedEvent::open(e, limits).ok())
            .collect(),
    })
}
