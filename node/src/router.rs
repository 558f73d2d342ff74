//! The router: turns network events into work for the engine, the read server or the client
//! service, and reports gossip verdicts back to the network. Opening envelopes (hash and
//! signature checks) happens on the worker pool; what the pool cannot take is shed (gossip
//! ignored, requests answered "busy"), never queued without bound.

use std::collections::{HashMap, HashSet};

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_engine::{CandidateVerdict, PeerGossip, StreamView, Verdict};
use rill_p2p::{GossipBatch, MessageId, NetworkEvent, P2p, PeerId, Responder, Validation};
use rill_protocol::{
    Limits, MiniblockError, OpenError, ParsedEvent, ParsedMiniblock, StreamId, pb,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::batch::{self, Reply};
use crate::client::ClientJob;
use crate::convert::{self, error};
use crate::event_loop::LoopMsg;
use crate::executor::Executor;
use crate::metrics::{Metrics, VerdictLabel, VerdictLabels};
use crate::reads::{Found, Query, Reads};
use crate::streams::Streams;
use crate::workers::Workers;
use crate::writer::Writer;

/// A gossip batch whose events were opened on the workers.
pub(crate) struct OpenedGossip {
    pub(crate) from: Address,
    pub(crate) via: PeerId,
    pub(crate) id: MessageId,
    /// The verdict on the announcements, judged before the events were opened.
    pub(crate) verdict: Verdict,
    pub(crate) streams: Vec<(StreamId, Result<Vec<ParsedEvent>, OpenError>)>,
    /// The hashes the envelopes claimed, no longer being opened once this is judged.
    pub(crate) claimed: Vec<B256>,
}

/// A leader's candidate, opened on the workers.
pub(crate) struct OpenedCandidate {
    pub(crate) from: Address,
    pub(crate) stream: StreamId,
    pub(crate) miniblock: Result<ParsedMiniblock, MiniblockError>,
    /// How many of its events came without their envelope (taken from this node's pool).
    pub(crate) left_out: u64,
    pub(crate) reply: Reply,
}

/// Worst of two verdicts: one reject rejects the message, one accept makes it useful.
pub(crate) fn combine(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Reject, _) | (_, Verdict::Reject) => Verdict::Reject,
        (Verdict::Accept, _) | (_, Verdict::Accept) => Verdict::Accept,
        _ => Verdict::Ignore,
    }
}

/// Routes network events.
pub(crate) struct Router {
    pub(crate) p2p: P2p,
    pub(crate) workers: Workers,
    pub(crate) reads: Reads,
    pub(crate) client: mpsc::Sender<ClientJob>,
    pub(crate) mailbox: mpsc::Sender<LoopMsg>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    pub(crate) writer: Writer,
    pub(crate) connected: HashSet<PeerId>,
    /// Events gossip brought that are on the workers now: a copy that arrives meanwhile (a
    /// push again, another node's) is not opened a second time.
    pub(crate) opening: HashSet<B256>,
    /// The largest request-response message (bounds a round batch's answer).
    pub(crate) max_message_bytes: usize,
}

impl Router {
    pub(crate) fn on_network(
        &mut self,
        event: NetworkEvent,
        now_ms: u64,
        streams: &mut Streams,
        executor: &mut Executor,
    ) {
        match event {
            NetworkEvent::Gossip {
                from,
                via,
                id,
                batch,
            } => self.on_gossip(from, via, id, batch, now_ms, streams, executor),
            NetworkEvent::EventsRequest {
                request, responder, ..
            } => self.read(Query::Events(request), responder, |found| match found {
                Ok(Found::Events(envelopes)) => pb::GetEventsResponse {
                    envelopes,
                    error: None,
                },
                Ok(_) => unreachable!("an events query finds events"),
                Err(e) => pb::GetEventsResponse {
                    envelopes: vec![],
                    error: Some(e),
                },
            }),
            NetworkEvent::MiniblockRequest {
                from,
                request,
                responder,
            } => self.on_miniblock_request(from, request, responder, now_ms, streams, executor),
            NetworkEvent::ClientRequest {
                peer,
                request,
                responder,
            } => {
                let job = ClientJob {
                    peer,
                    request,
                    responder,
                };
                if let Err(mpsc::error::TrySendError::Full(job)) = self.client.try_send(job) {
                    self.metrics.client_requests_shed.inc();
                    tokio::spawn(job.responder.send(pb::ClientResponse {
                        kind: None,
                        error: Some(busy()),
                    }));
                }
            }
            NetworkEvent::PeerConnected(peer) => {
                self.connected.insert(peer);
                self.metrics.peers.set(self.connected.len() as i64);
            }
            NetworkEvent::PeerDisconnected(peer) => {
                self.connected.remove(&peer);
                self.metrics.peers.set(self.connected.len() as i64);
            }
            NetworkEvent::Listening(addr) => debug!(%addr, "listening"),
        }
    }

    /// Announcements are judged right away; events are opened on the workers first and come
    /// back as [`OpenedGossip`].
    #[allow(clippy::too_many_arguments)]
    fn on_gossip(
        &mut self,
        from: Address,
        via: PeerId,
        id: MessageId,
        batch: GossipBatch,
        now_ms: u64,
        streams: &mut Streams,
        executor: &mut Executor,
    ) {
        let GossipBatch { received, in_pool } = batch;
        let mut verdict = Verdict::Ignore;
        for (stream, hashes) in in_pool {
            // Announcements of events whose copy is being checked here wait for it longer
            // before they are fetched.
            let (arriving, hashes): (Vec<_>, Vec<_>) =
                hashes.into_iter().partition(|h| self.opening.contains(h));
            let announced = [
                (hashes, PeerGossip::InPool as fn(_) -> _),
                (arriving, PeerGossip::InPoolArriving),
            ];
            for (hashes, gossip) in announced {
                if hashes.is_empty() {
                    continue;
                }
                let answer =
                    streams
                        .for_stream(&stream)
                        .gossip(now_ms, from, stream, gossip(hashes));
                executor.run(answer.effects);
                verdict = combine(verdict, answer.answer);
            }
        }
        // One signature check per event per node: events the stream holds are answered
        // without opening them, and copies of those being opened are dropped.
        let mut fresh = Vec::new();
        let mut claimed = Vec::new();
        for (stream, envelopes) in received {
            let mut held = Vec::new();
            let mut open = Vec::new();
            let view = streams.for_stream(&stream).stream(&stream);
            for envelope in envelopes {
                match B256::try_from(envelope.hash.as_slice()) {
                    Ok(hash) if view.is_some_and(|v| v.holds_event(&hash)) => held.push(hash),
                    Ok(hash) if !self.opening.insert(hash) => {}
                    Ok(hash) => {
                        claimed.push(hash);
                        open.push(envelope);
                    }
                    // Opening refuses it, saying what is wrong.
                    Err(_) => open.push(envelope),
                }
            }
            if !held.is_empty() {
                self.metrics
                    .gossip_events_held_already
                    .inc_by(held.len() as u64);
                let answer = streams.for_stream(&stream).gossip(
                    now_ms,
                    from,
                    stream,
                    PeerGossip::HeldAlready(held),
                );
                executor.run(answer.effects);
                verdict = combine(verdict, answer.answer);
            }
            if !open.is_empty() {
                fresh.push((stream, open));
            }
        }
        if fresh.is_empty() {
            return self.report(id, via, verdict);
        }
        let received = fresh;
        let (mailbox, opener) = (self.mailbox.clone(), self.workers.opener(self.limits));
        let (shed_id, shed_via) = (id.clone(), via);
        let shed_claims = claimed.clone();
        let open = move || {
            let streams = received
                .into_iter()
                .map(|(stream, envelopes)| {
                    let events = envelopes.into_iter().map(|e| opener.open(e)).collect();
                    (stream, events)
                })
                .collect();
            let opened = OpenedGossip {
                from,
                via,
                id,
                verdict,
                streams,
                claimed,
            };
            let _ = mailbox.blocking_send(LoopMsg::Gossip(opened));
        };
        if self.workers.try_spawn(open).is_err() {
            // Overloaded: the stream's nodes carry these events again.
            for hash in &shed_claims {
                self.opening.remove(hash);
            }
            self.report(shed_id, shed_via, Verdict::Ignore);
        }
    }

    /// Gossip events, opened: judged by the engine, and the verdict reported.
    pub(crate) fn on_opened_gossip(
        &mut self,
        opened: OpenedGossip,
        now_ms: u64,
        streams: &mut Streams,
        executor: &mut Executor,
    ) {
        for hash in &opened.claimed {
            self.opening.remove(hash);
        }
        let mut verdict = opened.verdict;
        for (stream, events) in opened.streams {
            match events {
                Ok(events) => {
                    let answer = streams.for_stream(&stream).gossip(
                        now_ms,
                        opened.from,
                        stream,
                        PeerGossip::Events(events),
                    );
                    executor.run(answer.effects);
                    verdict = combine(verdict, answer.answer);
                }
                Err(e) => {
                    // A node forwards only events it opened: a bad one is the sender's fault.
                    debug!(from = %opened.from, %stream, %e, "gossip carried an invalid event");
                    self.metrics.reject(e.name());
                    verdict = Verdict::Reject;
                }
            }
        }
        self.report(opened.id, opened.via, verdict);
    }

    /// A leader's candidate, opened: the engine's verdict goes back to the leader, a stored
    /// candidate only once it is durable here (the leader counts it toward its write quorum).
    pub(crate) fn on_opened_candidate(
        &mut self,
        opened: OpenedCandidate,
        now_ms: u64,
        streams: &mut Streams,
        executor: &mut Executor,
    ) {
        let OpenedCandidate {
            from,
            stream,
            miniblock,
            left_out,
            reply,
        } = opened;
        let miniblock = match miniblock {
            Ok(miniblock) => {
                self.metrics.candidate_events_left_out.inc_by(left_out);
                miniblock
            }
            // Not the leader's fault: this node lost an event it proposed. The leader sends
            // the candidate whole when asked again.
            Err(e @ MiniblockError::Omitted { .. }) => {
                debug!(%from, %stream, %e, "candidate left out an event this node lacks");
                return reply.refuse(error(pb::ErrorCode::Unavailable, e.to_string()));
            }
            Err(e) => {
                self.metrics.reject("malformed");
                return reply.refuse(error(pb::ErrorCode::BadCandidate, e.to_string()));
            }
        };
        let answer = streams
            .for_stream(&stream)
            .candidate(now_ms, from, stream, miniblock);
        executor.run(answer.effects);
        let (code, message) = match answer.answer {
            CandidateVerdict::Stored => {
                let durable = self.writer.durable();
                tokio::spawn(async move {
                    if durable.await {
                        reply
                            .send(pb::MiniblockResponse {
                                kind: Some(pb::miniblock_response::Kind::SaveCandidate(
                                    pb::SaveMiniblockCandidateResponse {},
                                )),
                                error: None,
                            })
                            .await;
                    }
                });
                return;
            }
            CandidateVerdict::Deferred => (
                pb::ErrorCode::Unavailable,
                "the candidate names a chain block this node has not seen yet".into(),
            ),
            CandidateVerdict::Stale => (
                pb::ErrorCode::BadCandidate,
                "this node already promoted a miniblock of that number".into(),
            ),
            CandidateVerdict::Refused(reject) => (pb::ErrorCode::BadCandidate, reject.to_string()),
        };
        reply.refuse(error(code, message));
    }

    fn report(&self, id: MessageId, via: PeerId, verdict: Verdict) {
        let (validation, label) = match verdict {
            Verdict::Accept => (Validation::Accept, VerdictLabel::Accept),
            Verdict::Ignore => (Validation::Ignore, VerdictLabel::Ignore),
            Verdict::Reject => (Validation::Reject, VerdictLabel::Reject),
        };
        self.metrics
            .gossip_verdicts
            .get_or_create(&VerdictLabels { verdict: label })
            .inc();
        let p2p = self.p2p.clone();
        tokio::spawn(async move { p2p.report_validation(id, via, validation).await });
    }

    /// Queues a read and answers with what it finds, or "busy" if the read server is full.
    fn read<T: Respond>(
        &self,
        query: Query,
        responder: Responder<T>,
        answer: impl FnOnce(Result<Found, pb::Error>) -> T + Send + 'static,
    ) where
        Responder<T>: Send,
    {
        match self.reads.try_ask(query) {
            Ok(found) => {
                tokio::spawn(async move {
                    let found = found
                        .await
                        .unwrap_or_else(|_| Err(error(pb::ErrorCode::Unavailable, "stopping")));
                    T::respond(responder, answer(found)).await;
                });
            }
            Err(_) => {
                tokio::spawn(T::respond(responder, answer(Err(busy()))));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_miniblock_request(
        &mut self,
        from: Address,
        request: pb::MiniblockRequest,
        responder: Responder<pb::MiniblockResponse>,
        now_ms: u64,
        streams: &mut Streams,
        executor: &mut Executor,
    ) {
        use pb::miniblock_request::Kind;
        match request.kind {
            Some(Kind::GetMiniblocks(g)) => {
                self.read(Query::Miniblocks(g), responder, |found| match found {
                    Ok(Found::Miniblocks(m)) => pb::MiniblockResponse {
                        kind: Some(pb::miniblock_response::Kind::GetMiniblocks(m)),
                        error: None,
                    },
                    Ok(_) => unreachable!("a miniblocks query finds miniblocks"),
                    Err(e) => pb::MiniblockResponse {
                        kind: None,
                        error: Some(e),
                    },
                });
            }
            Some(Kind::Batch(batch)) if batch.items.len() > batch::MAX_ITEMS => {
                let message = format!(
                    "a batch of {} items; at most {} are taken",
                    batch.items.len(),
                    batch::MAX_ITEMS
                );
                Reply::Peer(responder).refuse(error(pb::ErrorCode::Malformed, message));
            }
            Some(Kind::Batch(batch)) => {
                let replies = batch::gather(responder, batch.items.len(), self.max_message_bytes);
                for (item, reply) in batch.items.into_iter().zip(replies) {
                    match item.kind {
                        Some(kind @ (Kind::Propose(_) | Kind::SaveCandidate(_))) => {
                            self.on_round_request(from, kind, reply, now_ms, streams, executor)
                        }
                        _ => reply.refuse(error(
                            pb::ErrorCode::Malformed,
                            "a batch carries only proposal and candidate requests",
                        )),
                    }
                }
            }
            Some(kind) => {
                let reply = Reply::Peer(responder);
                self.on_round_request(from, kind, reply, now_ms, streams, executor)
            }
            None => Reply::Peer(responder).refuse(error(pb::ErrorCode::Malformed, "empty request")),
        }
    }

    /// A proposal request, answered now, or a candidate, opened on the workers first and
    /// judged as an [`OpenedCandidate`]. Any other kind is answered "malformed".
    #[allow(clippy::too_many_arguments)]
    fn on_round_request(
        &mut self,
        from: Address,
        kind: pb::miniblock_request::Kind,
        reply: Reply,
        now_ms: u64,
        streams: &mut Streams,
        executor: &mut Executor,
    ) {
        use pb::miniblock_request::Kind;
        match kind {
            Kind::Propose(p) => {
                let (Some(stream), Some(request)) = (
                    StreamId::from_slice(&p.stream_id),
                    convert::proposal_request(&p),
                ) else {
                    return reply.refuse(error(pb::ErrorCode::Malformed, "stream id or hashes"));
                };
                let answer = streams
                    .for_stream(&stream)
                    .propose(now_ms, from, stream, &request);
                executor.run(answer.effects);
                match answer.answer {
                    Ok(proposal) => {
                        tokio::spawn(reply.send(pb::MiniblockResponse {
                            kind: Some(pb::miniblock_response::Kind::Propose(
                                convert::reply_to_pb(proposal),
                            )),
                            error: None,
                        }));
                    }
                    Err(reject) => {
                        reply.refuse(error(crate::client::code(&reject), reject.to_string()))
                    }
                }
            }
            Kind::SaveCandidate(c) => {
                let Some(stream) = StreamId::from_slice(&c.stream_id) else {
                    return reply.refuse(error(pb::ErrorCode::Malformed, "stream id"));
                };
                let candidate = c.candidate.unwrap_or_default();
                let omitting = c.omits_proposed;
                // Events this node already opened are not verified again; those the leader
                // left out come from here.
                let named = candidate_hashes(&candidate, omitting);
                let left_out = if omitting {
                    named.len().saturating_sub(candidate.events.len()) as u64
                } else {
                    0
                };
                let known: HashMap<B256, ParsedEvent> = streams
                    .for_stream(&stream)
                    .stream(&stream)
                    .map(|view| {
                        named
                            .into_iter()
                            .filter_map(|h| view.pool_event(&h).map(|e| (h, e.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                let (mailbox, opener) = (self.mailbox.clone(), self.workers.opener(self.limits));
                let job = move || {
                    let miniblock = opener.open_candidate(candidate, &known, omitting);
                    let _ = mailbox.blocking_send(LoopMsg::Candidate(OpenedCandidate {
                        from,
                        stream,
                        miniblock,
                        left_out,
                        reply,
                    }));
                };
                if let Err(_busy) = self.workers.try_spawn(job) {
                    // The reply went with the job and is dropped: the leader sees the request
                    // fail (or, in a batch, its item answered "unavailable") and asks again.
                    debug!(%from, %stream, "candidate shed: workers busy");
                }
            }
            _ => reply.refuse(error(
                pb::ErrorCode::Malformed,
                "not a proposal or candidate request",
            )),
        }
    }
}

/// A response type the router can send on its responder.
pub(crate) trait Respond: Sized + Send + 'static {
    fn respond(responder: Responder<Self>, response: Self) -> impl Future<Output = ()> + Send;
}

impl Respond for pb::GetEventsResponse {
    fn respond(responder: Responder<Self>, response: Self) -> impl Future<Output = ()> + Send {
        responder.send(response)
    }
}

impl Respond for pb::MiniblockResponse {
    fn respond(responder: Responder<Self>, response: Self) -> impl Future<Output = ()> + Send {
        responder.send(response)
    }
}

pub(crate) fn busy() -> pb::Error {
    error(
        pb::ErrorCode::Unavailable,
        "the node is busy; try again shortly",
    )
}

/// The hashes of the events a received candidate holds: the envelopes sent, or with
/// `omitting` every event its header names (none if the header does not decode: opening it
/// then fails).
fn candidate_hashes(candidate: &pb::Miniblock, omitting: bool) -> Vec<B256> {
    if !omitting {
        return candidate
            .events
            .iter()
            .filter_map(|e| B256::try_from(e.hash.as_slice()).ok())
            .collect();
    }
    let header = candidate
        .header
        .as_ref()
        .and_then(|h| pb::StreamEvent::decode(h.event.as_slice()).ok());
    match header.and_then(|h| h.payload) {
        Some(rill_protocol::Payload::MiniblockHeader(h)) => h
            .event_hashes
            .iter()
            .filter_map(|h| B256::try_from(h.as_slice()).ok())
            .collect(),
        _ => Vec::new(),
    }
}
