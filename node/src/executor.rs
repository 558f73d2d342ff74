//! The executor: carries out the engine's effects, in order. Store operations become writes
//! handed to the store writer, gossip goes to the outbox (sent once durable), registrations to
//! the registration queue (in order, each once its candidate is durable), requests and
//! notifications to peers, waiting clients and watchers (once the writes before them are
//! applied), refusals to the metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};
use prometheus_client::metrics::histogram::Histogram;
use rill_chain::{MiniblockRegistration, Registrar};
use rill_engine::{Effect, Notification, Registration, RegistrationKind, StoreOp};
use rill_p2p::P2p;
use rill_protocol::{ParsedEvent, StreamId, pb};
use rill_store::{StoreError, Write};

use crate::after_writes::{After, AfterWrites};
use crate::directory::{SharedDirectory, read};
use crate::faults::{Action, Hook, MessageKind};
use crate::metrics::{Metrics, Origin, OriginLabels};
use crate::outbox::Outbox;
use crate::promotions::StoredCandidates;
use crate::registration_queue::RegistrationQueue;
use crate::writer::{WriteQueue, Writer};

/// When things this node started happened, for the latency histograms.
#[derive(Default)]
struct Timings {
    /// Client events admitted here and not yet promoted.
    client_events: HashMap<B256, Instant>,
    /// Candidates built here and not yet promoted.
    candidates: HashMap<B256, Instant>,
    /// Candidates built here that have not reached their write quorum yet.
    built: HashMap<B256, Instant>,
    /// When the last chain block was handed to the engine (leaders start their rounds then).
    block_seen: Option<Instant>,
    /// The chain block whose registry logs were read last.
    logs_of: u64,
}

/// Carries out effects.
pub(crate) struct Executor {
    pub(crate) me: Address,
    /// The store's one writer takes the writes here, in order.
    writes: WriteQueue,
    pub(crate) writer: Writer,
    after_writes: AfterWrites,
    pub(crate) outbox: Outbox,
    pub(crate) p2p: P2p,
    pub(crate) metrics: Metrics,
    pub(crate) directory: SharedDirectory,
    pub(crate) faults: Hook,
    timings: Timings,
    /// Which promotions may settle after the block (see `promotions.rs`).
    stored_candidates: StoredCandidates,
    /// Minipool additions to one stream in a row, written as one store write before any
    /// effect that must follow them (see [`Self::run`]).
    adds: Option<(StreamId, Vec<ParsedEvent>)>,
    /// Notifications that came between those additions: carried out right after their write
    /// is submitted, so that they do not split it.
    notifications: Vec<Notification>,
    /// The registrations of one [`Self::run`], queued together at its end so that the
    /// registry takes them in order (a chained candidate after its base).
    registrations: Vec<MiniblockRegistration>,
    registration_queue: RegistrationQueue,
}

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: Address,
        writes: WriteQueue,
        after_writes: AfterWrites,
        registrar: Registrar,
        p2p: P2p,
        metrics: Metrics,
        directory: SharedDirectory,
        faults: Hook,
        leading: tokio::sync::watch::Sender<rill_chain::Leading>,
    ) -> Self {
        Self {
            me,
            writer: writes.writer(),
            writes,
            after_writes,
            outbox: Outbox::default(),
            p2p,
            metrics,
            directory,
            faults,
            timings: Timings::default(),
            stored_candidates: StoredCandidates::default(),
            adds: None,
            registrations: Vec::new(),
            registration_queue: RegistrationQueue::spawn(registrar, leading),
            notifications: Vec::new(),
        }
    }

    /// The store failure that stops the node, if any (once).
    pub(crate) fn take_failure(&mut self) -> Option<StoreError> {
        self.writer.take_failure()
    }

    /// Records the last chain block handled, after the writes its effects made.
    pub(crate) fn last_block(&mut self, number: u64) {
        self.timings.block_seen = Some(Instant::now());
        self.registration_queue.block(number);
        self.write_adds();
        self.writes.last_block(number);
    }

    /// The registry logs of chain block `number` come next.
    pub(crate) fn logs_of(&mut self, number: u64) {
        self.timings.logs_of = number;
    }

    /// The next event admitted with this hash came from a client of this node.
    pub(crate) fn client_event(&mut self, hash: B256) {
        self.timings.client_events.insert(hash, Instant::now());
    }

    /// Carries out `effects`, in order. Minipool additions in a row (a client's batch, a
    /// gossip batch) become one store write, submitted before the next effect that others
    /// could observe (another write, a request, a registration) and at the end; the
    /// notifications among them (an event admitted, a quorum) wait until that write is
    /// submitted. What others observe waits for the writes before it (see `after_writes.rs`),
    /// so nothing leaves the node before the write it follows. Gossip only enters the outbox
    /// here and leaves once durable.
    pub(crate) fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Store(op) => self.store(op),
                Effect::Gossip { stream, message } => {
                    let to: Vec<Address> = read(&self.directory)
                        .stream_nodes(&stream)
                        .unwrap_or_default()
                        .iter()
                        .copied()
                        .filter(|n| *n != self.me)
                        .collect();
                    self.outbox.add(&to, stream, &message);
                }
                Effect::GossipTo {
                    to,
                    stream,
                    message,
                } => self.outbox.add(&[to], stream, &message),
                Effect::Send {
                    to,
                    stream,
                    request,
                } => {
                    self.write_adds();
                    self.after_writes.push(After::Send {
                        to,
                        stream,
                        request,
                    });
                }
                Effect::Register(registration) => {
                    self.write_adds();
                    self.register(registration);
                }
                Effect::Notify(notification) if self.adds.is_some() => {
                    self.notifications.push(notification);
                }
                Effect::Notify(notification) => self.notify(notification),
                Effect::Rejected { reason, .. } => self.metrics.reject(reason.code()),
            }
        }
        self.write_adds();
        self.queue_registrations();
    }

    /// Queues a minipool addition for the next [`Self::write_adds`].
    fn add_to_minipool(&mut self, stream: StreamId, event: ParsedEvent) {
        let origin = if self.timings.client_events.contains_key(&event.hash()) {
            Origin::Client
        } else {
            Origin::Peer
        };
        self.metrics
            .events_admitted
            .get_or_create(&OriginLabels { origin })
            .inc();
        if self.adds.as_ref().is_some_and(|(s, _)| *s != stream) {
            self.write_adds();
        }
        self.adds
            .get_or_insert_with(|| (stream, Vec::new()))
            .1
            .push(event);
    }

    /// Submits the queued minipool additions, if any, then the notifications that came
    /// among them.
    fn write_adds(&mut self) {
        if let Some((stream, events)) = self.adds.take() {
            self.write(Write::AddToMinipool { stream, events });
        }
        for notification in std::mem::take(&mut self.notifications) {
            self.notify(notification);
        }
    }

    fn store(&mut self, op: StoreOp) {
        let write = match op {
            StoreOp::CreateStream {
                stream,
                nodes,
                genesis,
            } => Write::CreateStream {
                stream,
                nodes,
                genesis,
            },
            StoreOp::AddToMinipool { stream, event } => {
                return self.add_to_minipool(stream, event);
            }
            StoreOp::DropFromMinipool { stream, hashes } => {
                for hash in &hashes {
                    self.timings.client_events.remove(hash);
                }
                self.stored_candidates.dropped(&stream);
                Write::DropFromMinipool { stream, hashes }
            }
            StoreOp::StoreCandidate {
                stream,
                miniblock,
                pooled,
            } => {
                if miniblock.producer() == self.me {
                    self.timings.built.insert(miniblock.hash(), Instant::now());
                    if let Some(seen) = self.timings.block_seen {
                        self.metrics
                            .block_to_candidate
                            .observe(seen.elapsed().as_secs_f64());
                    }
                }
                self.stored_candidates
                    .stored(stream, miniblock.num(), miniblock.hash());
                Write::StoreCandidate {
                    stream,
                    miniblock,
                    pooled,
                }
            }
            StoreOp::Promote { stream, miniblock } => {
                let (num, hash) = (miniblock.num(), miniblock.hash());
                if self.stored_candidates.promoting(&stream, num, &hash) {
                    Write::PromoteCandidate { stream, miniblock }
                } else {
                    Write::Promote { stream, miniblock }
                }
            }
            StoreOp::Rebase {
                stream,
                miniblocks,
                gap,
            } => {
                self.metrics.snapshot_jumps.inc();
                self.stored_candidates.moved(&stream);
                Write::Rebase {
                    stream,
                    miniblocks,
                    gap: stored_gap(gap),
                }
            }
            StoreOp::Backfill {
                stream,
                miniblocks,
                gap,
            } => {
                self.metrics
                    .backfilled_miniblocks
                    .inc_by(miniblocks.len() as u64);
                Write::Backfill {
                    stream,
                    miniblocks,
                    gap: gap.map(stored_gap),
                }
            }
        };
        // Queued minipool additions come first: this write may depend on them.
        self.write_adds();
        self.write(write);
    }

    /// Hands one write to the store writer. If it fails, the engine will have moved on
    /// without the store: nothing after it leaves the node (see `writer.rs`) and the node
    /// stops; a restart reloads what the store holds and catches up from peers.
    fn write(&mut self, write: Write) {
        if self.faults.store_fails(self.me) {
            self.writes.fail(StoreError::io("injected write failure"));
        } else {
            self.writes.submit(write);
        }
    }

    /// Notes a registration, queued at the end of the run (see [`Self::queue_registrations`]).
    fn register(&mut self, registration: Registration) {
        let own = registration.kind != RegistrationKind::Base;
        if own {
            self.metrics.miniblocks_produced.inc();
        }
        if registration.kind == RegistrationKind::Chained {
            self.metrics.miniblocks_chained.inc();
        }
        // Candidates that never reached a quorum are given up by the engine; forget them.
        if self.timings.built.len() > 4096 {
            self.timings
                .built
                .retain(|_, at| at.elapsed() < Duration::from_secs(60));
        }
        if let Some(at) = self.timings.built.remove(&registration.hash) {
            self.metrics
                .candidate_to_write_quorum
                .observe(at.elapsed().as_secs_f64());
        }
        if own {
            self.timings
                .candidates
                .insert(registration.hash, Instant::now());
        }
        self.registrations.push(MiniblockRegistration {
            stream_id: registration.stream,
            prev_hash: registration.prev_hash,
            hash: registration.hash,
            num: registration.num,
            sealed: false,
        });
    }

    /// Hands the run's registrations to the registration queue, in order.
    fn queue_registrations(&mut self) {
        if self.registrations.is_empty() {
            return;
        }
        let fault = self
            .faults
            .action(MessageKind::Registration, self.me, self.me);
        self.registration_queue.push(
            std::mem::take(&mut self.registrations),
            self.writer.durable(),
            fault,
        );
    }

    /// Whether the engine leads rounds now (see [`RegistrationQueue::rounds`]).
    pub(crate) fn rounds(&mut self, leading: bool) {
        self.registration_queue.rounds(leading);
    }

    /// Observes in `histogram` the time since `hash` was admitted here from a client (events
    /// from peers are not timed).
    fn since_client_add(&self, hash: &B256, histogram: &Histogram) {
        if let Some(at) = self.timings.client_events.get(hash) {
            histogram.observe(at.elapsed().as_secs_f64());
        }
    }

    fn notify(&mut self, notification: Notification) {
        match notification {
            Notification::EventAdmitted { stream, event } => {
                if self.after_writes.watched(&stream) {
                    let update = pb::stream_update::Kind::Event(event.envelope().clone());
                    self.after_writes.push(After::Update { stream, update });
                }
            }
            Notification::EventQuorum { hash, .. } => {
                self.since_client_add(&hash, &self.metrics.add_to_quorum);
                self.after_writes.push(After::Quorum(hash));
            }
            Notification::EventReplicated { hash, .. } => {
                self.since_client_add(&hash, &self.metrics.add_to_replicated);
                self.after_writes.push(After::Replicated(hash));
            }
            Notification::MiniblockPromoted { stream, miniblock } => {
                self.metrics.miniblocks_promoted.inc();
                self.metrics
                    .events_promoted
                    .inc_by(miniblock.events().len() as u64);
                for event in miniblock.events() {
                    if let Some(at) = self.timings.client_events.remove(&event.hash()) {
                        self.metrics
                            .add_to_promoted
                            .observe(at.elapsed().as_secs_f64());
                    }
                }
                if let Some(at) = self.timings.candidates.remove(&miniblock.hash()) {
                    self.metrics
                        .candidate_to_registered
                        .observe(at.elapsed().as_secs_f64());
                    let elected = miniblock.header().chain_block;
                    self.metrics
                        .registration_lag
                        .observe(self.timings.logs_of.saturating_sub(elected) as f64);
                }
                self.after_writes
                    .push(After::Promoted { stream, miniblock });
            }
        }
    }

    /// Forgets timings of candidates that will never be promoted (the registry took another).
    pub(crate) fn candidate_rejected(&mut self, hash: &B256) {
        self.timings.candidates.remove(hash);
        self.timings.built.remove(hash);
    }

    /// Applies the fault rules to a batch for `to`: drops what they drop, and takes out what
    /// they delay, to be sent after its delay.
    fn faulty_gossip(
        &self,
        to: Address,
        batch: &mut rill_p2p::GossipBatch,
    ) -> Vec<(Duration, rill_p2p::GossipBatch)> {
        let mut late = Vec::new();
        match self.faults.action(MessageKind::GossipEvents, self.me, to) {
            Action::Drop => batch.received.clear(),
            Action::Delay(by) => late.push((
                by,
                rill_p2p::GossipBatch {
                    received: std::mem::take(&mut batch.received),
                    in_pool: Vec::new(),
                },
            )),
            Action::Deliver => {}
        }
        match self
            .faults
            .action(MessageKind::GossipAnnouncements, self.me, to)
        {
            Action::Drop => batch.in_pool.clear(),
            Action::Delay(by) => late.push((
                by,
                rill_p2p::GossipBatch {
                    received: Vec::new(),
                    in_pool: std::mem::take(&mut batch.in_pool),
                },
            )),
            Action::Deliver => {}
        }
        late.retain(|(_, b)| !b.is_empty());
        late
    }

    /// Sends what the outbox gathered, once everything this node wrote is durable: a node
    /// announces events, and counts toward their quorum, only once its copy is on disk.
    pub(crate) fn flush_gossip(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let mut batches = self.outbox.take();
        let mut late = Vec::new();
        for (to, batch) in &mut batches {
            late.extend(
                self.faulty_gossip(*to, batch)
                    .into_iter()
                    .map(|(by, b)| (*to, by, b)),
            );
        }
        batches.retain(|(_, batch)| !batch.is_empty());
        let durable = self.writer.durable();
        let p2p = self.p2p.clone();
        for (to, by, batch) in late {
            let (durable, p2p) = (self.writer.durable(), p2p.clone());
            tokio::spawn(async move {
                tokio::time::sleep(by).await;
                if durable.await {
                    p2p.gossip(to, batch).await;
                }
            });
        }
        tokio::spawn(async move {
            if !durable.await {
                return;
            }
            for (to, batch) in batches {
                p2p.gossip(to, batch).await;
            }
        });
    }
}

fn stored_gap(gap: rill_engine::Gap) -> rill_store::StoredGap {
    rill_store::StoredGap {
        down_to: gap.down_to,
        below: gap.below,
        hash: gap.hash,
    }
}
