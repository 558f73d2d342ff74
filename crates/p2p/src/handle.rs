//! The handle the node holds, and what the network tells it.

use std::time::Duration;

use alloy_primitives::Address;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use rill_protocol::{StreamId, pb};
use tokio::sync::{mpsc, oneshot};

/// Whether this peer is a node (serves node protocols, joins stream topics) or a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A registered node.
    Node,
    /// A client: only makes client requests.
    Client,
}

/// Network settings.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Node or client.
    pub role: Role,
    /// Addresses to listen on (e.g. `/ip4/127.0.0.1/tcp/0`, `/ip4/127.0.0.1/udp/0/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// The registry's `maxEventBytes`: bounds gossip messages.
    pub max_event_bytes: usize,
    /// Largest request-response message (miniblocks, streams).
    pub max_message_bytes: usize,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// How long unpublished gossip keeps being retried while no peer is subscribed.
    pub publish_retry_for: Duration,
}

impl P2pConfig {
    /// Defaults for a node listening on `listen`.
    pub fn node(listen: Vec<Multiaddr>) -> Self {
        Self {
            role: Role::Node,
            listen,
            max_event_bytes: 64 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            publish_retry_for: Duration::from_secs(30),
        }
    }

    /// Defaults for a client (listens nowhere).
    pub fn client() -> Self {
        Self {
            role: Role::Client,
            listen: Vec::new(),
            ..Self::node(Vec::new())
        }
    }
}

/// The gossipsub topic of a stream.
pub fn stream_topic(stream: &StreamId) -> IdentTopic {
    IdentTopic::new(format!("/rill/stream/{stream}"))
}

/// The node's verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Valid: forward it.
    Accept,
    /// Not useful (a duplicate, an old event) but not malicious: drop it.
    Ignore,
    /// Invalid: drop it and penalise the peer that sent it.
    Reject,
}

impl From<Validation> for MessageAcceptance {
    fn from(v: Validation) -> Self {
        match v {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Ignore => MessageAcceptance::Ignore,
            Validation::Reject => MessageAcceptance::Reject,
        }
    }
}

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The peer could not be reached.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// No response in time.
    #[error("request timed out")]
    Timeout,
    /// The stream failed (the peer closed it, refused the protocol, or sent garbage).
    #[error("request failed: {0}")]
    Failed(String),
    /// The network task has stopped.
    #[error("the network has stopped")]
    Stopped,
}

/// Something the network hands to the node.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip message from a registered node, to validate and then report with
    /// [`P2p::report_validation`].
    Gossip {
        /// The node that published it (signed source).
        from: Address,
        /// The peer that forwarded it.
        via: PeerId,
        /// Its id, for the report.
        id: MessageId,
        /// The stream whose topic carried it.
        topic: String,
        /// The decoded message.
        message: pb::GossipMessage,
    },
    /// A registered node asks for events.
    EventsRequest {
        /// The node.
        from: Address,
        /// The request.
        request: pb::GetEventsRequest,
        /// Where the answer goes.
        responder: Responder<pb::GetEventsResponse>,
    },
    /// A registered node's miniblock-protocol request.
    MiniblockRequest {
        /// The node.
        from: Address,
        /// The request.
        request: pb::MiniblockRequest,
        /// Where the answer goes.
        responder: Responder<pb::MiniblockResponse>,
    },
    /// A client request (from anyone).
    ClientRequest {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: pb::ClientRequest,
        /// Where the answer goes.
        responder: Responder<pb::ClientResponse>,
    },
    /// A connection to a peer opened (the first one).
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// The swarm listens on a new address.
    Listening(Multiaddr),
}

/// A pending response. Dropping it closes the request's stream without an answer.
#[derive(Debug)]
pub struct Responder<T> {
    pub(crate) channel: ResponseChannel<T>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

macro_rules! responder_send {
    ($response:ty, $command:ident) => {
        impl Responder<$response> {
            /// Sends the response.
            pub fn send(self, response: $response) {
                let _ = self
                    .commands
                    .send(Command::$command(self.channel, response));
            }
        }
    };
}

responder_send!(pb::GetEventsResponse, RespondEvents);
responder_send!(pb::MiniblockResponse, RespondMiniblock);
responder_send!(pb::ClientResponse, RespondClient);

pub(crate) enum Command {
    Dial(
        PeerId,
        Option<Multiaddr>,
        oneshot::Sender<Result<(), RequestError>>,
    ),
    SetNodes(Vec<(Address, PeerId, Option<Multiaddr>)>),
    Subscribe(StreamId),
    Unsubscribe(StreamId),
    Publish(StreamId, pb::GossipMessage),
    Report(MessageId, PeerId, Validation),
    Events(
        PeerId,
        pb::GetEventsRequest,
        oneshot::Sender<Result<pb::GetEventsResponse, RequestError>>,
    ),
    Miniblock(
        PeerId,
        pb::MiniblockRequest,
        oneshot::Sender<Result<pb::MiniblockResponse, RequestError>>,
    ),
    Client(
        PeerId,
        pb::ClientRequest,
        oneshot::Sender<Result<pb::ClientResponse, RequestError>>,
    ),
    RespondEvents(
        ResponseChannel<pb::GetEventsResponse>,
        pb::GetEventsResponse,
    ),
    RespondMiniblock(
        ResponseChannel<pb::MiniblockResponse>,
        pb::MiniblockResponse,
    ),
    RespondClient(ResponseChannel<pb::ClientResponse>, pb::ClientResponse),
    PeerScore(PeerId, oneshot::Sender<Option<f64>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
}

/// The cloneable handle to the network task.
#[derive(Clone, Debug)]
pub struct P2p {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) peer_id: PeerId,
}

impl P2p {
    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply));
        answer.await.ok()
    }

    /// Connects to a peer (at `addr`, or an address the network knows for it).
    pub async fn dial(&self, peer: PeerId, addr: Option<Multiaddr>) -> Result<(), RequestError> {
        self.ask(|r| Command::Dial(peer, addr, r))
            .await
            .unwrap_or(Err(RequestError::Stopped))
    }

    /// Replaces the set of registered, Operational nodes (address, peer id, listen address).
    /// Only they may use node protocols and stream topics.
    pub fn set_nodes(&self, nodes: Vec<(Address, PeerId, Option<Multiaddr>)>) {
        self.send(Command::SetNodes(nodes));
    }

    /// Joins a stream's topic.
    pub fn subscribe(&self, stream: StreamId) {
        self.send(Command::Subscribe(stream));
    }

    /// Leaves a stream's topic.
    pub fn unsubscribe(&self, stream: StreamId) {
        self.send(Command::Unsubscribe(stream));
    }

    /// Publishes on a stream's topic. If no peer is subscribed yet, the message is kept and
    /// retried as subscriptions arrive (for `publish_retry_for`), never silently lost.
    pub fn publish(&self, stream: StreamId, message: pb::GossipMessage) {
        self.send(Command::Publish(stream, message));
    }

    /// Reports the node's verdict on a gossip message.
    pub fn report_validation(&self, id: MessageId, via: PeerId, verdict: Validation) {
        self.send(Command::Report(id, via, verdict));
    }

    /// `GetEvents` over `/rill/events/1`.
    pub async fn get_events(
        &self,
        peer: PeerId,
        request: pb::GetEventsRequest,
    ) -> Result<pb::GetEventsResponse, RequestError> {
        self.ask(|r| Command::Events(peer, request, r))
            .await
            .unwrap_or(Err(RequestError::Stopped))
    }

    /// A request over `/rill/miniblock/1`.
    pub async fn miniblock_request(
        &self,
        peer: PeerId,
        request: pb::MiniblockRequest,
    ) -> Result<pb::MiniblockResponse, RequestError> {
        self.ask(|r| Command::Miniblock(peer, request, r))
            .await
            .unwrap_or(Err(RequestError::Stopped))
    }

    /// A request over `/rill/client/1`.
    pub async fn client_request(
        &self,
        peer: PeerId,
        request: pb::ClientRequest,
    ) -> Result<pb::ClientResponse, RequestError> {
        self.ask(|r| Command::Client(peer, request, r))
            .await
            .unwrap_or(Err(RequestError::Stopped))
    }

    /// The peer's gossipsub score, if known.
    pub async fn peer_score(&self, peer: PeerId) -> Option<f64> {
        self.ask(|r| Command::PeerScore(peer, r)).await.flatten()
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.ask(Command::ConnectedPeers).await.unwrap_or_default()
    }

    /// The addresses the swarm listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }
}
