//! Serving `/rill/client/1`: streams this node holds are served here, the others are forwarded
//! to one of their nodes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, keccak256};
use prost::Message as _;
use rill_chain::{ChainError, RegistrarError};
use rill_engine::{Reject, StreamView};
use rill_p2p::{PeerId, Responder};
use rill_protocol::{OpenError, ParsedEvent, ParsedMiniblock, StreamId, pb};
use tokio::sync::oneshot;

use crate::node::{AckWait, Internal, Node};

type Reply = Responder<pb::ClientResponse>;

fn refuse(responder: Reply, code: pb::ErrorCode, message: impl Into<String>) {
    responder.send(pb::ClientResponse {
        kind: None,
        error: Some(pb::Error {
            code: code as i32,
            message: message.into(),
        }),
    });
}

fn answer(responder: Reply, kind: pb::client_response::Kind) {
    responder.send(pb::ClientResponse {
        kind: Some(kind),
        error: None,
    });
}

/// The wire code for an engine refusal.
fn code(reject: &Reject) -> pb::ErrorCode {
    use pb::ErrorCode as C;
    match reject {
        Reject::UnknownStream(_) => C::UnknownStream,
        Reject::NotAMember(_) => C::NotAMember,
        Reject::StaleMiniblock { .. } | Reject::UnknownMiniblock { .. } => C::StaleMiniblock,
        Reject::Duplicate(_) => C::Duplicate,
        Reject::TooLarge { .. } => C::TooLarge,
        Reject::AlreadyMember(_) => C::AlreadyExists,
        Reject::BadPayload(_) | Reject::Malformed(_) => C::Malformed,
        Reject::NotAStreamNode(_) => C::NotANode,
        _ => C::BadCandidate,
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    pub(crate) fn on_client(
        &mut self,
        _peer: PeerId,
        request: pb::ClientRequest,
        responder: Reply,
    ) {
        use pb::client_request::Kind;
        let Some(kind) = request.kind.clone() else {
            return refuse(responder, pb::ErrorCode::Malformed, "empty request");
        };
        let stream_of = |bytes: &[u8]| StreamId::from_slice(bytes);
        match kind {
            Kind::CreateStream(create) => self.create_stream(create, responder),
            Kind::Info(_) => self.info(responder),
            Kind::AddEvent(add) => match stream_of(&add.stream_id) {
                Some(stream) if self.engine.stream(&stream).is_some() => {
                    self.add_event(stream, add, responder)
                }
                Some(stream) => self.forward(stream, request, responder),
                None => refuse(
                    responder,
                    pb::ErrorCode::Malformed,
                    "a stream id is 32 bytes",
                ),
            },
            Kind::GetStream(get) => match stream_of(&get.stream_id) {
                Some(stream) if self.engine.stream(&stream).is_some() => {
                    self.get_stream(stream, get.head_only, responder)
                }
                Some(stream) => self.forward(stream, request, responder),
                None => refuse(
                    responder,
                    pb::ErrorCode::Malformed,
                    "a stream id is 32 bytes",
                ),
            },
            Kind::GetMiniblocks(get) => match stream_of(&get.stream_id) {
                Some(stream) if self.engine.stream(&stream).is_some() => {
                    let response = self.get_miniblocks(&get);
                    match response.kind {
                        Some(pb::miniblock_response::Kind::GetMiniblocks(m)) => {
                            answer(responder, pb::client_response::Kind::GetMiniblocks(m))
                        }
                        _ => refuse(
                            responder,
                            pb::ErrorCode::Internal,
                            "reading miniblocks failed",
                        ),
                    }
                }
                Some(stream) => self.forward(stream, request, responder),
                None => refuse(
                    responder,
                    pb::ErrorCode::Malformed,
                    "a stream id is 32 bytes",
                ),
            },
            Kind::Subscribe(sub) => match stream_of(&sub.stream_id) {
                Some(stream) if self.engine.stream(&stream).is_some() => {
                    let wait = Duration::from_millis(u64::from(sub.wait_ms).min(30_000));
                    self.updates
                        .poll(stream, sub.after_seq, Instant::now() + wait, responder);
                }
                Some(stream) => self.forward(stream, request, responder),
                None => refuse(
                    responder,
                    pb::ErrorCode::Malformed,
                    "a stream id is 32 bytes",
                ),
            },
        }
    }

    /// Sends the request to a node of the stream and relays its answer.
    fn forward(&mut self, stream: StreamId, request: pb::ClientRequest, responder: Reply) {
        let Some(nodes) = self.streams.get(&stream) else {
            return refuse(
                responder,
                pb::ErrorCode::UnknownStream,
                format!("no stream {stream} in the registry; create one with `rill stream create`"),
            );
        };
        let target = nodes
            .iter()
            .filter(|a| **a != self.me)
            .find_map(|a| self.nodes.get(a).cloned());
        let Some((peer, addr)) = target else {
            return refuse(
                responder,
                pb::ErrorCode::Unavailable,
                "no node of the stream is known",
            );
        };
        let p2p = self.p2p.clone();
        tokio::spawn(async move {
            let _ = p2p.dial(peer, Some(addr)).await;
            match p2p.client_request(peer, request).await {
                Ok(response) => responder.send(response),
                Err(e) => refuse(
                    responder,
                    pb::ErrorCode::Unavailable,
                    format!("the stream's node {peer} did not answer: {e}"),
                ),
            }
        });
    }

    /// The replication_factor registered nodes closest to the stream id (a deterministic,
    /// well-spread placement).
    fn place(&self, stream: &StreamId) -> Vec<Address> {
        let mut nodes: Vec<Address> = self.nodes.keys().copied().collect();
        nodes.sort_by_key(|a| keccak256([stream.0.as_slice(), a.as_slice()].concat()));
        nodes.truncate(self.network.replication_factor.max(1) as usize);
        nodes
    }

    fn create_stream(&mut self, create: pb::CreateStreamRequest, responder: Reply) {
        let inception = match ParsedEvent::open(create.inception.unwrap_or_default(), &self.limits)
        {
            Ok(event) => event,
            Err(e) => return refuse(responder, e.code(), e.to_string()),
        };
        let Some(stream) = inception.inception_stream() else {
            return refuse(
                responder,
                pb::ErrorCode::Malformed,
                "the first event of a stream is an inception",
            );
        };
        if self.streams.contains_key(&stream) {
            return refuse(
                responder,
                pb::ErrorCode::AlreadyExists,
                format!("stream {stream} exists"),
            );
        }
        let mut events = vec![inception];
        for envelope in create.events {
            match ParsedEvent::open(envelope, &self.limits) {
                Ok(e) if matches!(e.membership(), Some((true, _))) => events.push(e),
                Ok(_) => {
                    return refuse(
                        responder,
                        pb::ErrorCode::Malformed,
                        "a genesis holds only joins after the inception",
                    );
                }
                Err(e) => return refuse(responder, e.code(), e.to_string()),
            }
        }
        let nodes = self.place(&stream);
        if nodes.is_empty() {
            return refuse(
                responder,
                pb::ErrorCode::Unavailable,
                "no operational node is registered",
            );
        }
        let chain_block = *self.chain_head.borrow();
        let genesis = match ParsedMiniblock::genesis(events, wall_ms(), chain_block, &self.key) {
            Ok(genesis) => genesis,
            Err(e) => return refuse(responder, pb::ErrorCode::Internal, e.to_string()),
        };
        let registrar = self.registrar.clone();
        let mut head = self.chain_head.subscribe();
        tokio::spawn(async move {
            let bytes = genesis.to_pb().encode_to_vec();
            match registrar
                .allocate_stream(stream, nodes.clone(), genesis.hash(), bytes)
                .await
            {
                Ok(block) => {
                    // Answer once this node has seen the allocation, so the next request finds it.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        head.wait_for(|h| *h >= block),
                    )
                    .await;
                    answer(
                        responder,
                        pb::client_response::Kind::CreateStream(pb::CreateStreamResponse {
                            stream_id: stream.0.to_vec(),
                            genesis_hash: genesis.hash().to_vec(),
                            nodes: nodes.iter().map(|a| a.to_vec()).collect(),
                        }),
                    );
                }
                Err(RegistrarError::Chain(ChainError::Reverted(e))) => refuse(
                    responder,
                    pb::ErrorCode::AlreadyExists,
                    format!("the registry refused: {e:?}"),
                ),
                Err(e) => refuse(
                    responder,
                    pb::ErrorCode::Unavailable,
                    format!("allocation failed: {e}"),
                ),
            }
        });
    }

    /// Opens the client's envelope on a worker thread; the result comes back to the loop as
    /// [`Internal::ClientEvent`] and goes on in [`Node::admit_client_event`].
    fn add_event(&mut self, stream: StreamId, add: pb::AddEventRequest, responder: Reply) {
        let ack = pb::Ack::try_from(add.ack).unwrap_or(pb::Ack::Local);
        let (back, limits) = (self.internal.clone(), self.limits);
        tokio::task::spawn_blocking(move || {
            let event = ParsedEvent::open(add.envelope.unwrap_or_default(), &limits);
            let _ = back.send(Internal::ClientEvent {
                stream,
                event,
                ack,
                responder,
            });
        });
    }

    pub(crate) fn admit_client_event(
        &mut self,
        stream: StreamId,
        event: Result<ParsedEvent, OpenError>,
        ack: pb::Ack,
        responder: Reply,
    ) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                self.metrics.reject(match e.code() {
                    pb::ErrorCode::TooLarge => "too_large",
                    pb::ErrorCode::BadSignature => "bad_signature",
                    pb::ErrorCode::BadHash => "bad_hash",
                    pb::ErrorCode::CreatorMismatch => "creator_mismatch",
                    _ => "malformed",
                });
                return refuse(responder, e.code(), e.to_string());
            }
        };
        let hash = event.hash();
        let effects = match self.engine.add_event(self.now_ms(), stream, event) {
            Ok(effects) => effects,
            Err(reject) => {
                self.metrics.reject(reject.code());
                return refuse(responder, code(&reject), reject.to_string());
            }
        };
        let (tx, rx) = oneshot::channel();
        match ack {
            pb::Ack::Local => drop(tx),
            pb::Ack::Quorum => self.acks.entry(hash).or_default().push(AckWait::Quorum(tx)),
            pb::Ack::Miniblock => self
                .acks
                .entry(hash)
                .or_default()
                .push(AckWait::Miniblock(tx)),
        }
        self.execute(effects);
        // Acknowledge only what is on disk (one flush serves every event since the last).
        let durable = self.durability.mark();
        let reply = move |miniblock_num| {
            pb::client_response::Kind::AddEvent(pb::AddEventResponse {
                hash: hash.to_vec(),
                miniblock_num,
            })
        };
        tokio::spawn(async move {
            if !durable.await {
                return refuse(responder, pb::ErrorCode::Internal, "the store cannot flush");
            }
            if ack == pb::Ack::Local {
                return answer(responder, reply(None));
            }
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(num)) => answer(
                    responder,
                    reply(if ack == pb::Ack::Miniblock { num } else { None }),
                ),
                _ => refuse(
                    responder,
                    pb::ErrorCode::Timeout,
                    format!(
                        "event {hash} is in the minipool but was not {ack:?}-acknowledged within 30 s; check `rill stream get`"
                    ),
                ),
            }
        });
    }

    fn get_stream(&self, stream: StreamId, head_only: bool, responder: Reply) {
        let view = self.engine.stream(&stream).expect("caller checked");
        let head = view.head().num;
        let from = if head_only { head } else { 0 };
        let result = self
            .store
            .miniblocks(&stream, from, head)
            .and_then(|miniblocks| Ok((miniblocks, self.store.minipool(&stream)?)));
        match result {
            Ok((miniblocks, minipool)) => answer(
                responder,
                pb::client_response::Kind::GetStream(pb::GetStreamResponse {
                    stream_id: stream.0.to_vec(),
                    served_by: self.me.to_vec(),
                    nodes: view.nodes().iter().map(|a| a.to_vec()).collect(),
                    miniblocks,
                    minipool: if head_only { vec![] } else { minipool },
                }),
            ),
            Err(e) => refuse(responder, pb::ErrorCode::Internal, format!("store: {e}")),
        }
    }

    fn info(&self, responder: Reply) {
        let p2p = self.p2p.clone();
        let mut streams: Vec<Vec<u8>> = self.engine.stream_ids().map(|s| s.0.to_vec()).collect();
        streams.sort();
        let base = pb::InfoResponse {
            address: self.me.to_vec(),
            peer_id: p2p.peer_id().to_string(),
            peers: vec![],
            streams,
            chain_head: *self.chain_head.borrow(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        tokio::spawn(async move {
            let peers = p2p
                .connected_peers()
                .await
                .iter()
                .map(ToString::to_string)
                .collect();
            answer(
                responder,
                pb::client_response::Kind::Info(pb::InfoResponse { peers, ..base }),
            );
        });
    }
}
