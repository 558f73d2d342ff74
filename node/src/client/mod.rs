//! The client service: serves `/rill/client/1` on its own task. Streams this node holds are
//! served here (events are opened on the worker pool and admitted through the node's loop;
//! reads go to the read server); the others are forwarded to one of their nodes, the next one
//! if that one does not answer. It owns the acknowledgement waiters and the watch logs, which
//! the loop wakes.

mod acks;
mod add;
mod backlog;
mod forward;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use prost::Message as _;
use rill_chain::{AllocationFailure, AllocationOutcome, NewStream, Registrar, Registry};
use rill_engine::Reject;
use rill_p2p::limits::Buckets;
use rill_p2p::{P2p, PeerId, Responder};
use rill_protocol::{Limits, MAX_EVENTS_PER_REQUEST, NodeKey, ParsedMiniblock, StreamId, pb};
use tokio::sync::{Semaphore, mpsc};

pub(crate) use acks::{Acks, Wait};
pub(crate) use backlog::Backlog;
pub(crate) use watch::{Poll, Watch};

use crate::convert::error;
use crate::directory::{SharedDirectory, read};
use crate::event_loop::{LoopMsg, Status};
use crate::metrics::Metrics;
use crate::reads::{Found, Query, Reads};
use crate::workers::{Lane, Workers};
use crate::writer::Writer;

/// Client requests handled at once; more wait in the queue.
const CONCURRENT_REQUESTS: usize = 512;
/// How long a request about an unknown stream waits for this node's view of the chain.
const CATCH_UP: Duration = Duration::from_secs(5);

/// A client request, as the router hands it over.
pub(crate) struct ClientJob {
    pub(crate) peer: PeerId,
    pub(crate) request: pb::ClientRequest,
    pub(crate) responder: Responder<pb::ClientResponse>,
}

/// What the client service needs.
pub(crate) struct ClientService {
    pub(crate) me: Address,
    pub(crate) key: NodeKey,
    pub(crate) directory: SharedDirectory,
    pub(crate) mailbox: mpsc::Sender<LoopMsg>,
    pub(crate) workers: Workers,
    pub(crate) reads: Reads,
    pub(crate) acks: Acks,
    /// Each stream's budget of client events that its replicas do not all hold yet.
    pub(crate) backlog: Backlog,
    /// How long after its arrival an add waits for its acknowledgement
    /// (`NodeConfig::ack_timeout`).
    pub(crate) ack_timeout: Duration,
    pub(crate) watch: Watch,
    pub(crate) registrar: Registrar,
    /// Read-only: the chain's head, when a request names a stream not yet seen.
    pub(crate) registry: Registry,
    pub(crate) writer: Writer,
    pub(crate) p2p: P2p,
    pub(crate) status: tokio::sync::watch::Receiver<Status>,
    /// Each client's stream-creation budget (`None`: unlimited).
    pub(crate) creations: Option<std::sync::Mutex<Buckets<PeerId>>>,
    pub(crate) metrics: Metrics,
}

/// The wire code for an engine refusal.
pub(crate) fn code(reject: &Reject) -> pb::ErrorCode {
    use pb::ErrorCode as C;
    match reject {
        Reject::UnknownStream(_) => C::UnknownStream,
        Reject::NotAMember(_) => C::NotAMember,
        Reject::StaleMiniblock { .. } | Reject::UnknownMiniblock { .. } => C::StaleMiniblock,
        Reject::Duplicate(_) => C::Duplicate,
        Reject::TooLarge { .. } => C::TooLarge,
        Reject::AlreadyMember(_) => C::AlreadyExists,
        Reject::InviteOnly(_) => C::InviteOnly,
        Reject::NotAnAdmin(_) => C::NotAnAdmin,
        Reject::BadPayload(_) | Reject::Malformed(_) | Reject::BadGenesis(_) => C::Malformed,
        Reject::NotAStreamNode(_) => C::NotANode,
        Reject::BeforeSnapshot { .. } => C::Unavailable,
        _ => C::BadCandidate,
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ok(kind: pb::client_response::Kind) -> pb::ClientResponse {
    pb::ClientResponse {
        kind: Some(kind),
        error: None,
    }
}

fn fail(error: pb::Error) -> pb::ClientResponse {
    pb::ClientResponse {
        kind: None,
        error: Some(error),
    }
}

fn stream_id(bytes: &[u8]) -> Result<StreamId, pb::Error> {
    StreamId::from_slice(bytes)
        .ok_or_else(|| error(pb::ErrorCode::Malformed, "a stream id is 32 bytes"))
}

/// Every result refused with `reason`.
fn refuse_all(mut results: Vec<pb::AddEventResult>, reason: pb::Error) -> Vec<pb::AddEventResult> {
    for result in &mut results {
        result.error = Some(reason.clone());
    }
    results
}

/// The stream a request is about, if it names a well-formed one.
fn named_stream(kind: &pb::client_request::Kind) -> Option<StreamId> {
    use pb::client_request::Kind;
    let id = match kind {
        Kind::Subscribe(r) => &r.stream_id,
        Kind::AddEvent(r) => &r.stream_id,
        Kind::AddEvents(r) => &r.stream_id,
        Kind::GetStream(r) => &r.stream_id,
        Kind::GetMiniblocks(r) => &r.stream_id,
        Kind::CreateStream(_) | Kind::Info(_) => return None,
    };
    StreamId::from_slice(id)
}

fn stopping() -> pb::Error {
    error(pb::ErrorCode::Unavailable, "the node is stopping")
}

impl ClientService {
    /// Runs the service until its queue closes; requests are handled concurrently, up to a
    /// limit.
    pub(crate) async fn run(self, mut jobs: mpsc::Receiver<ClientJob>) {
        let service = Arc::new(self);
        let permits = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
        while let Some(job) = jobs.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                service.handle(job).await;
                drop(permit);
            });
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: read(&self.directory).network().max_event_bytes as usize,
        }
    }

    fn holds(&self, stream: &StreamId) -> bool {
        read(&self.directory).holds(stream)
    }

    /// Reads the store once it holds everything this node has taken in so far (the genesis of
    /// a stream it just learnt of, say): a client reads what the node already said it has.
    async fn read(&self, query: Query) -> Result<Found, pb::Error> {
        if !self.writer.applied(self.writer.submitted()).await {
            return Err(error(pb::ErrorCode::Internal, "the node's store failed"));
        }
        self.reads.ask(query).await
    }

    /// A stream this node has not heard of may have been allocated in a block its chain
    /// follower has not reached yet (another node created it a moment ago): before the request
    /// is judged, this node's view catches up with the chain's head as the RPC reports it.
    async fn catch_up_on(&self, stream: &StreamId) {
        if read(&self.directory).stream_nodes(stream).is_some() {
            return;
        }
        let head = match tokio::time::timeout(CATCH_UP, self.registry.block_number()).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => return tracing::debug!(%stream, %e, "chain head unknown"),
            Err(_) => return tracing::debug!(%stream, "chain head unknown: RPC timed out"),
        };
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(CATCH_UP, status.wait_for(|s| s.chain_head >= head)).await;
    }

    async fn handle(&self, job: ClientJob) {
        use pb::client_request::Kind;
        let ClientJob {
            peer,
            request,
            responder,
        } = job;
        let arrived = tokio::time::Instant::now();
        tracing::trace!(%peer, "client request");
        let Some(kind) = request.kind.clone() else {
            return responder
                .send(fail(error(pb::ErrorCode::Malformed, "empty request")))
                .await;
        };
        if let Some(stream) = named_stream(&kind) {
            self.catch_up_on(&stream).await;
        }
        let response = match kind {
            Kind::Subscribe(sub) => match stream_id(&sub.stream_id) {
                Ok(stream) if self.holds(&stream) => {
                    let wait = Duration::from_millis(u64::from(sub.wait_ms).min(30_000));
                    let poll = Poll {
                        after: sub.after_seq,
                        headers_only: sub.headers_only,
                    };
                    self.watch
                        .poll(stream, poll, Instant::now() + wait, responder);
                    return;
                }
                Ok(stream) => self.forward(stream, request).await,
                Err(e) => fail(e),
            },
            Kind::CreateStream(create) => self.create_stream(peer, create).await,
            Kind::Info(info) => self.info(info.list_streams).await,
            Kind::AddEvent(add) => match stream_id(&add.stream_id) {
                Ok(stream) if self.holds(&stream) => {
                    let ack = pb::Ack::try_from(add.ack).unwrap_or(pb::Ack::Local);
                    let envelope = add.envelope.unwrap_or_default();
                    let results = self.add_events(stream, vec![envelope], ack, arrived).await;
                    match results.into_iter().next() {
                        Some(pb::AddEventResult { error: Some(e), .. }) => fail(e),
                        Some(r) => ok(pb::client_response::Kind::AddEvent(pb::AddEventResponse {
                            hash: r.hash,
                            miniblock_num: r.miniblock_num,
                        })),
                        None => fail(stopping()),
                    }
                }
                Ok(stream) => self.forward(stream, request).await,
                Err(e) => fail(e),
            },
            Kind::AddEvents(add) => match stream_id(&add.stream_id) {
                Ok(_) if add.envelopes.len() > MAX_EVENTS_PER_REQUEST => fail(error(
                    pb::ErrorCode::TooLarge,
                    format!(
                        "{} events in one request; at most {MAX_EVENTS_PER_REQUEST}",
                        add.envelopes.len()
                    ),
                )),
                Ok(stream) if self.holds(&stream) => {
                    let ack = pb::Ack::try_from(add.ack).unwrap_or(pb::Ack::Local);
                    let results = self.add_events(stream, add.envelopes, ack, arrived).await;
                    ok(pb::client_response::Kind::AddEvents(
                        pb::AddEventsResponse { results },
                    ))
                }
                Ok(stream) => self.forward(stream, request).await,
                Err(e) => fail(e),
            },
            Kind::GetStream(get) => match stream_id(&get.stream_id) {
                Ok(stream) if self.holds(&stream) => match self.read(Query::Stream(get)).await {
                    Ok(Found::Stream(mut got)) => {
                        got.served_by = self.me.to_vec();
                        ok(pb::client_response::Kind::GetStream(got))
                    }
                    Ok(_) => unreachable!("a stream query finds a stream"),
                    Err(e) => fail(e),
                },
                Ok(stream) => self.forward(stream, request).await,
                Err(e) => fail(e),
            },
            Kind::GetMiniblocks(get) => match stream_id(&get.stream_id) {
                Ok(stream) if self.holds(&stream) => {
                    match self.read(Query::Miniblocks(get)).await {
                        Ok(Found::Miniblocks(m)) => ok(pb::client_response::Kind::GetMiniblocks(m)),
                        Ok(_) => unreachable!("a miniblocks query finds miniblocks"),
                        Err(e) => fail(e),
                    }
                }
                Ok(stream) => self.forward(stream, request).await,
                Err(e) => fail(e),
            },
        };
        responder.send(response).await;
    }

    /// Builds and signs the genesis, places the stream, and allocates it in the registry.
    async fn create_stream(
        &self,
        peer: PeerId,
        create: pb::CreateStreamRequest,
    ) -> pb::ClientResponse {
        let opener = self.workers.opener(self.limits());
        let opened = self
            .workers
            .run(Lane::Admission, move || {
                std::iter::once(create.inception.unwrap_or_default())
                    .chain(create.events)
                    .map(|e| opener.open(e))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let events = match opened {
            None => return fail(stopping()),
            Some(Err(e)) => return fail(e.to_pb()),
            Some(Ok(events)) => events,
        };
        let Some(stream) = events[0].inception_stream() else {
            return fail(error(
                pb::ErrorCode::Malformed,
                "the first event of a stream is an inception",
            ));
        };
        let nodes = {
            let directory = read(&self.directory);
            if directory.stream_nodes(&stream).is_some() {
                return fail(error(
                    pb::ErrorCode::AlreadyExists,
                    format!("stream {stream} exists"),
                ));
            }
            directory.place(&stream)
        };
        if nodes.is_empty() {
            return fail(error(
                pb::ErrorCode::Unavailable,
                "no operational node is registered",
            ));
        }
        let chain_block = self.status.borrow().chain_head;
        let genesis = match ParsedMiniblock::genesis(events, wall_ms(), chain_block, &self.key) {
            Ok(genesis) => genesis,
            Err(e) => return fail(error(pb::ErrorCode::Malformed, e.to_string())),
        };
        if let Err(reject) = rill_engine::check_genesis(stream, &nodes, &genesis) {
            return fail(error(code(&reject), reject.to_string()));
        }
        if let Err(refusal) = self.spend_creation(&peer) {
            return fail(refusal);
        }
        let allocation = NewStream {
            id: stream,
            nodes: nodes.clone(),
            genesis_hash: genesis.hash(),
            genesis: genesis.to_pb().encode_to_vec(),
        };
        let block = match self.registrar.allocate(allocation).await {
            Ok(AllocationOutcome::Allocated { block, .. }) => block,
            Ok(AllocationOutcome::Rejected {
                reason: AllocationFailure::AlreadyExists,
                ..
            }) => {
                return fail(error(
                    pb::ErrorCode::AlreadyExists,
                    format!("stream {stream} exists"),
                ));
            }
            Ok(AllocationOutcome::Rejected { reason, .. }) => {
                // The placement came from this node's own view of the registry: a refusal
                // here means that view is behind (a node just left, say). Worth a retry.
                return fail(error(
                    pb::ErrorCode::Unavailable,
                    format!("the registry refused the placement: {reason}; try again"),
                ));
            }
            Err(e) => {
                return fail(error(
                    pb::ErrorCode::Unavailable,
                    format!("allocation failed: {e}"),
                ));
            }
        };
        // Answer once this node has seen the allocation, so the next request finds it.
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|s| s.chain_head >= block),
        )
        .await;
        ok(pb::client_response::Kind::CreateStream(
            pb::CreateStreamResponse {
                stream_id: stream.0.to_vec(),
                genesis_hash: genesis.hash().to_vec(),
                nodes: nodes.iter().map(|a| a.to_vec()).collect(),
            },
        ))
    }

    /// Takes one stream creation from `peer`'s budget, checked once the request is valid
    /// (what it spends is this node's gas).
    fn spend_creation(&self, peer: &PeerId) -> Result<(), pb::Error> {
        let Some(budget) = &self.creations else {
            return Ok(());
        };
        let spent =
            budget
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(peer, 1.0, Instant::now());
        spent.map_err(|wait| {
            self.metrics.stream_creations_refused.inc();
            error(
                pb::ErrorCode::QuotaExceeded,
                format!(
                    "{peer} used its stream-creation budget on this node; the next one in {} s",
                    wait.as_secs().max(1)
                ),
            )
        })
    }

    async fn info(&self, list_streams: bool) -> pb::ClientResponse {
        let status = self.status.borrow().clone();
        let connected = self.p2p.connected_peers().await;
        let (node_peers, streams) = {
            let directory = read(&self.directory);
            let node_peers = connected
                .iter()
                .filter(|p| directory.is_node_peer(p))
                .count();
            let streams = if list_streams {
                directory.mine().iter().map(|s| s.0.to_vec()).collect()
            } else {
                Vec::new()
            };
            (node_peers, streams)
        };
        ok(pb::client_response::Kind::Info(pb::InfoResponse {
            address: self.me.to_vec(),
            peer_id: self.p2p.peer_id().to_string(),
            peers: connected.iter().map(ToString::to_string).collect(),
            streams,
            chain_head: status.chain_head,
            version: env!("CARGO_PKG_VERSION").into(),
            streams_held: status.streams_held,
            streams_loaded: status.streams_loaded,
            minipool_events: status.minipool_events,
            miniblocks_promoted: status.miniblocks_promoted,
            miniblocks_produced: status.miniblocks_produced,
            node_peers: node_peers as u64,
            events_promoted: status.events_promoted,
            streams_busy: status.streams_busy,
        }))
    }
}
