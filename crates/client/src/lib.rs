//! The Rill client library, used by the `rill` CLI and the end-to-end tests.
//!
//! A [`Client`] holds a signing key and a libp2p connection to one node; it builds and signs
//! events (on top of the stream's current head) and sends `/rill/client/1` requests. It owns
//! no state beyond a cache of stream heads and must not talk node protocols.

pub mod devnet;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The network crate, for its address types.
pub use rill_p2p as p2p;

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_p2p::{Multiaddr, P2p, P2pConfig, PeerId, RequestError};

pub use devnet::{DevnetFile, DevnetFileError, DevnetNode};
pub use rill_protocol::MAX_EVENTS_PER_REQUEST;
use rill_protocol::envelope::new_event;
use rill_protocol::{NodeKey, ParsedEvent, Payload, StreamId, pb, seal};

/// How long a cached stream head is used before it is read again.
pub const HEAD_TTL: Duration = Duration::from_secs(3);

/// How many times a request refused `RATE_LIMITED` is sent again (after the wait the node
/// names) before the refusal is returned.
pub const PACED_RETRIES: u32 = 20;

/// How long to wait before sending a request refused `RATE_LIMITED` for the `retries`-th
/// time: what the node named, growing with each refusal and spread at random, so requests of
/// one client that wait together do not all come back at once.
fn pace(retry_after_ms: u32, retries: u32) -> Duration {
    let named = f64::from(retry_after_ms.clamp(1, 10_000));
    let spread = 1.0 + rand::random::<f64>();
    Duration::from_secs_f64(named * f64::from(retries) * spread / 1000.0)
}

/// The payload of a join (or leave) of `address`.
pub fn membership(join: bool, address: Address) -> Payload {
    let op = if join {
        pb::member::Op::Join
    } else {
        pb::member::Op::Leave
    };
    Payload::Member(pb::Member {
        op: op as i32,
        address: address.to_vec(),
    })
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node address has no `/p2p/<peer id>` part.
    #[error(
        "{0} names no peer: use the node's multiaddr ending in /p2p/<peer id> (see devnet.json)"
    )]
    NoPeerId(Multiaddr),
    /// The client's own network could not start.
    #[error("starting the client's network: {0}")]
    Network(#[from] rill_p2p::SpawnError),
    /// The node could not be reached or did not answer.
    #[error("node unreachable: {0}; is it running? (`rill-devnet up` starts a devnet)")]
    Unreachable(RequestError),
    /// The node answered with an error.
    #[error("{message} ({code:?})")]
    Node {
        /// The error code.
        code: pb::ErrorCode,
        /// What the node said.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("unexpected answer from the node")]
    Unexpected,
}

impl ClientError {
    /// The node's error code, if the node refused.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        match self {
            ClientError::Node { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One event of an [`Client::add_batch`]: the event as signed, and whether the node took it
/// (with the miniblock number when the acknowledgement was `ACK_MINIBLOCK`).
#[derive(Debug)]
pub struct Added {
    /// The event.
    pub event: ParsedEvent,
    /// The node's answer for it.
    pub result: Result<Option<u64>, ClientError>,
}

impl From<pb::Error> for ClientError {
    fn from(error: pb::Error) -> Self {
        ClientError::Node {
            code: pb::ErrorCode::try_from(error.code).unwrap_or(pb::ErrorCode::Unspecified),
            message: error.message,
        }
    }
}

/// Each stream's head `(num, hash)` and when it was read.
type HeadCache = HashMap<StreamId, ((u64, B256), Instant)>;

/// A connection to one node.
#[derive(Clone, Debug)]
pub struct Client {
    p2p: P2p,
    node: PeerId,
    key: NodeKey,
    /// Each stream's head as last read, and when.
    heads: std::sync::Arc<std::sync::Mutex<HeadCache>>,
    /// Whether a request refused `RATE_LIMITED` waits as the node says and is sent again.
    paced: bool,
    /// Kept so the swarm runs as long as the client (it stops when nobody listens).
    _events: std::sync::Arc<tokio::sync::mpsc::Receiver<rill_p2p::NetworkEvent>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Client {
    /// Connects to the node at `addr` (which must end in `/p2p/<peer id>`).
    pub async fn connect(addr: Multiaddr, key: NodeKey) -> Result<Self, ClientError> {
        let node = addr
            .iter()
            .find_map(|p| match p {
                rill_p2p::Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
            .ok_or_else(|| ClientError::NoPeerId(addr.clone()))?;
        let (p2p, events) = rill_p2p::spawn(&key, P2pConfig::client()).await?;
        p2p.dial(node, Some(addr))
            .await
            .map_err(ClientError::Unreachable)?;
        Ok(Self {
            p2p,
            node,
            key,
            heads: Default::default(),
            paced: true,
            _events: std::sync::Arc::new(events),
        })
    }

    /// The signing key's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// This client, answering `RATE_LIMITED` refusals to the caller instead of waiting and
    /// sending again (which it does by default, up to [`PACED_RETRIES`] times).
    pub fn unpaced(mut self) -> Self {
        self.paced = false;
        self
    }

    async fn call(
        &self,
        kind: pb::client_request::Kind,
    ) -> Result<pb::client_response::Kind, ClientError> {
        let request = pb::ClientRequest { kind: Some(kind) };
        let mut retries = 0;
        loop {
            let response = self
                .p2p
                .client_request(self.node, request.clone())
                .await
                .map_err(ClientError::Unreachable)?;
            match response.error {
                Some(error)
                    if self.paced
                        && retries < PACED_RETRIES
                        && error.code == pb::ErrorCode::RateLimited as i32 =>
                {
                    retries += 1;
                    tokio::time::sleep(pace(error.retry_after_ms, retries)).await;
                }
                Some(error) => return Err(error.into()),
                None => return response.kind.ok_or(ClientError::Unexpected),
            }
        }
    }

    /// Creates a stream (a random id unless given); the creator is its first member.
    pub async fn create_stream(
        &self,
        id: Option<StreamId>,
    ) -> Result<pb::CreateStreamResponse, ClientError> {
        self.create_stream_with(id, pb::StreamSettings::default())
            .await
    }

    /// Creates a stream with `settings`: its join policy and admins (none named: this client).
    pub async fn create_stream_with(
        &self,
        id: Option<StreamId>,
        settings: pb::StreamSettings,
    ) -> Result<pb::CreateStreamResponse, ClientError> {
        let id = id.unwrap_or_else(StreamId::random);
        let inception = rill_protocol::envelope::inception(id, settings, now_ms(), &self.key);
        let kind = pb::client_request::Kind::CreateStream(pb::CreateStreamRequest {
            inception: Some(inception.into_envelope()),
            events: vec![],
        });
        match self.call(kind).await? {
            pb::client_response::Kind::CreateStream(r) => Ok(r),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The stream's head as the node holds it (cached for [`HEAD_TTL`]: events build on a
    /// recent miniblock, so they stay admissible for as long as possible).
    pub async fn head(&self, stream: StreamId, refresh: bool) -> Result<(u64, B256), ClientError> {
        if !refresh
            && let Some((head, read)) = self.heads.lock().expect("lock").get(&stream)
            && read.elapsed() < HEAD_TTL
        {
            return Ok(*head);
        }
        let response = self.get_stream_inner(stream, true).await?;
        let header = response
            .miniblocks
            .last()
            .and_then(|m| m.header.clone())
            .ok_or(ClientError::Unexpected)?;
        let event = pb::StreamEvent::decode(header.event.as_slice())
            .map_err(|_| ClientError::Unexpected)?;
        let Some(Payload::MiniblockHeader(fields)) = event.payload else {
            return Err(ClientError::Unexpected);
        };
        let head = (fields.num, B256::from_slice(&header.hash));
        self.heads
            .lock()
            .expect("lock")
            .insert(stream, (head, Instant::now()));
        Ok(head)
    }

    /// Signs `payload` on top of the stream's head and adds it, waiting for `ack`. Refreshes
    /// the head and retries once if the node says the head moved too far.
    pub async fn add(
        &self,
        stream: StreamId,
        payload: Payload,
        ack: pb::Ack,
    ) -> Result<(ParsedEvent, pb::AddEventResponse), ClientError> {
        let mut refresh = false;
        loop {
            let head = self.head(stream, refresh).await?;
            let event = seal(new_event(Some(head), now_ms(), payload.clone()), &self.key)
                .map_err(|_| ClientError::Unexpected)?;
            let kind = pb::client_request::Kind::AddEvent(pb::AddEventRequest {
                stream_id: stream.0.to_vec(),
                envelope: Some(event.envelope().clone()),
                ack: ack as i32,
            });
            match self.call(kind).await {
                Ok(pb::client_response::Kind::AddEvent(r)) => return Ok((event, r)),
                Ok(_) => return Err(ClientError::Unexpected),
                Err(e) if !refresh && e.code() == Some(pb::ErrorCode::StaleMiniblock) => {
                    refresh = true
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds many events to one stream in one request (at most [`MAX_EVENTS_PER_REQUEST`]),
    /// each built on the stream's head and signed here. Each is accepted or refused on its
    /// own, in the order given; events refused because the head moved on are built again on
    /// the new head and sent once more. Fails as a whole only when the request does.
    pub async fn add_batch(
        &self,
        stream: StreamId,
        payloads: Vec<Payload>,
        ack: pb::Ack,
    ) -> Result<Vec<Added>, ClientError> {
        let mut out: Vec<Option<Added>> = payloads.iter().map(|_| None).collect();
        let mut pending: Vec<(usize, Payload)> = payloads.into_iter().enumerate().collect();
        let mut refresh = false;
        while !pending.is_empty() {
            let head = self.head(stream, refresh).await?;
            let created_at = now_ms();
            let events = pending
                .iter()
                .map(|(_, payload)| {
                    seal(
                        new_event(Some(head), created_at, payload.clone()),
                        &self.key,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ClientError::Unexpected)?;
            let envelopes = events.iter().map(|e| e.envelope().clone()).collect();
            let results = self.add_envelopes(stream, envelopes, ack).await?;
            let mut stale = Vec::new();
            let answers = events.into_iter().zip(results);
            for ((index, payload), (event, answer)) in pending.into_iter().zip(answers) {
                let result = match answer.error {
                    None => Ok(answer.miniblock_num),
                    Some(e) => Err(ClientError::from(e)),
                };
                match result {
                    Err(e) if !refresh && e.code() == Some(pb::ErrorCode::StaleMiniblock) => {
                        stale.push((index, payload))
                    }
                    result => out[index] = Some(Added { event, result }),
                }
            }
            pending = stale;
            refresh = true;
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Sends envelopes as they are (signed elsewhere, or not at all) in one `AddEvents`
    /// request, and returns the node's result for each, in order.
    pub async fn add_envelopes(
        &self,
        stream: StreamId,
        envelopes: Vec<pb::Envelope>,
        ack: pb::Ack,
    ) -> Result<Vec<pb::AddEventResult>, ClientError> {
        let count = envelopes.len();
        let kind = pb::client_request::Kind::AddEvents(pb::AddEventsRequest {
            stream_id: stream.0.to_vec(),
            envelopes,
            ack: ack as i32,
        });
        match self.call(kind).await? {
            pb::client_response::Kind::AddEvents(r) if r.results.len() == count => Ok(r.results),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Adds a text message.
    pub async fn add_message(
        &self,
        stream: StreamId,
        text: &str,
        ack: pb::Ack,
    ) -> Result<(ParsedEvent, pb::AddEventResponse), ClientError> {
        self.add(
            stream,
            Payload::Message(pb::Message {
                data: text.as_bytes().to_vec(),
            }),
            ack,
        )
        .await
    }

    /// Joins (or leaves) the stream with this client's key.
    pub async fn membership(
        &self,
        stream: StreamId,
        join: bool,
        ack: pb::Ack,
    ) -> Result<(ParsedEvent, pb::AddEventResponse), ClientError> {
        self.member(stream, join, self.address(), ack).await
    }

    /// Adds `address` to the stream (`join`) or removes it, signed by this client: a member
    /// adds others (the only way into an invite-only stream), an admin removes them.
    pub async fn member(
        &self,
        stream: StreamId,
        join: bool,
        address: Address,
        ack: pb::Ack,
    ) -> Result<(ParsedEvent, pb::AddEventResponse), ClientError> {
        self.add(stream, membership(join, address), ack).await
    }

    async fn get_stream_inner(
        &self,
        stream: StreamId,
        head_only: bool,
    ) -> Result<pb::GetStreamResponse, ClientError> {
        self.get_stream_page(stream, head_only, 0, 0).await
    }

    /// One page of the stream: miniblocks `from ..= to` (`to` 0: the head) as far as the
    /// node's page size allows, and the minipool with the page that reaches the head;
    /// `next_from` says where the next page starts.
    pub async fn get_stream_page(
        &self,
        stream: StreamId,
        head_only: bool,
        from: u64,
        to: u64,
    ) -> Result<pb::GetStreamResponse, ClientError> {
        let kind = pb::client_request::Kind::GetStream(pb::GetStreamRequest {
            stream_id: stream.0.to_vec(),
            head_only,
            from,
            to,
        });
        match self.call(kind).await? {
            pb::client_response::Kind::GetStream(r) => Ok(r),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The whole stream as the node holds it: every miniblock (paging through them) and the
    /// minipool.
    pub async fn get_stream(&self, stream: StreamId) -> Result<pb::GetStreamResponse, ClientError> {
        self.get_stream_range(stream, 0, 0).await
    }

    /// Miniblocks `from ..= to` (`to` 0: the head), paging through them, and the minipool if
    /// the range reaches the head.
    pub async fn get_stream_range(
        &self,
        stream: StreamId,
        from: u64,
        to: u64,
    ) -> Result<pb::GetStreamResponse, ClientError> {
        let mut whole = self.get_stream_page(stream, false, from, to).await?;
        let end = if to == 0 { whole.head_num } else { to };
        while let Some(next) = whole.next_from.take() {
            let page = self.get_stream_page(stream, false, next, end).await?;
            if page.miniblocks.is_empty() {
                return Err(ClientError::Unexpected);
            }
            whole.miniblocks.extend(page.miniblocks);
            whole.minipool = page.minipool;
            whole.next_from = page.next_from;
        }
        Ok(whole)
    }

    /// Updates after `after_seq`, waiting up to `wait_ms` for one.
    pub async fn watch(
        &self,
        stream: StreamId,
        after_seq: u64,
        wait_ms: u32,
    ) -> Result<pb::SubscribeResponse, ClientError> {
        self.subscribe(stream, after_seq, wait_ms, false).await
    }

    /// [`Client::watch`], with each promoted miniblock as its header alone
    /// (`MiniblockHeader`, naming its events by hash): for a watcher that keeps the envelopes
    /// of the events it saw admitted.
    pub async fn watch_headers(
        &self,
        stream: StreamId,
        after_seq: u64,
        wait_ms: u32,
    ) -> Result<pb::SubscribeResponse, ClientError> {
        self.subscribe(stream, after_seq, wait_ms, true).await
    }

    async fn subscribe(
        &self,
        stream: StreamId,
        after_seq: u64,
        wait_ms: u32,
        headers_only: bool,
    ) -> Result<pb::SubscribeResponse, ClientError> {
        let kind = pb::client_request::Kind::Subscribe(pb::SubscribeRequest {
            stream_id: stream.0.to_vec(),
            after_seq,
            wait_ms,
            headers_only,
        });
        match self.call(kind).await? {
            pb::client_response::Kind::Subscribe(r) => Ok(r),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The node's status; with `list_streams`, the ids of the streams it holds too.
    pub async fn info(&self, list_streams: bool) -> Result<pb::InfoResponse, ClientError> {
        match self
            .call(pb::client_request::Kind::Info(pb::InfoRequest {
                list_streams,
            }))
            .await?
        {
            pb::client_response::Kind::Info(r) => Ok(r),
            _ => Err(ClientError::Unexpected),
        }
    }
}
