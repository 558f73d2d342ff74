//! The handle the node holds, and what the network tells it.

use std::sync::Arc;

use alloy_primitives::Address;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use rill_protocol::pb;
use tokio::sync::{mpsc, oneshot};

use crate::session::Sessions;
use crate::{GossipBatch, RequestError};

/// The node's verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Valid: keep it.
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

/// A registered node, as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its address.
    pub address: Address,
    /// Its libp2p identity.
    pub peer: PeerId,
    /// Where it listens.
    pub addr: Option<Multiaddr>,
}

/// A request of the node protocols (`/rill/events/1`, `/rill/miniblock/1`).
#[derive(Clone, Debug, PartialEq)]
pub enum NodeRequest {
    /// `GetEvents`.
    Events(pb::GetEventsRequest),
    /// A miniblock-protocol request.
    Miniblock(pb::MiniblockRequest),
}

/// The response to a [`NodeRequest`], of the same protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeResponse {
    /// To `GetEvents`.
    Events(pb::GetEventsResponse),
    /// To a miniblock-protocol request.
    Miniblock(pb::MiniblockResponse),
}

/// Something the network hands to the node.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip batch a registered node sent to this node's inbox, decoded and shape-checked,
    /// to validate and then report with [`P2p::report_validation`].
    Gossip {
        /// The node that sent it (it delivered it itself).
        from: Address,
        /// Its peer id.
        via: PeerId,
        /// The message id, for the report.
        id: MessageId,
        /// The events and announcements.
        batch: GossipBatch,
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
pub struct Responder<T>(pub(crate) Route<T>);

/// Where a response goes.
#[derive(Debug)]
pub(crate) enum Route<T> {
    /// A request-response request: the swarm's task sends the answer.
    Swarm {
        channel: ResponseChannel<T>,
        commands: mpsc::Sender<Command>,
    },
    /// A client session's request: the session's task writes the answer.
    Session(oneshot::Sender<T>),
}

impl<T> Responder<T> {
    /// The request-response channel, if the request came that way.
    pub(crate) fn into_channel(self) -> Option<ResponseChannel<T>> {
        match self.0 {
            Route::Swarm { channel, .. } => Some(channel),
            Route::Session(_) => None,
        }
    }
}

macro_rules! responder_send {
    ($response:ty, $command:ident) => {
        impl Responder<$response> {
            /// Sends the response (waiting if the swarm's queue is full).
            pub async fn send(self, response: $response) {
                match self.0 {
                    Route::Swarm { channel, commands } => {
                        let _ = commands.send(Command::$command(channel, response)).await;
                    }
                    Route::Session(reply) => {
                        let _ = reply.send(response);
                    }
                }
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
    SetNodes(Vec<NodeEntry>),
    KeepConnected(Vec<PeerId>),
    Gossip(Address, GossipBatch),
    Report(MessageId, PeerId, Validation),
    Request(
        PeerId,
        NodeRequest,
        oneshot::Sender<Result<NodeResponse, RequestError>>,
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

/// The cloneable handle to the network task. Its calls wait when the swarm's queue is full.
#[derive(Clone, Debug)]
pub struct P2p {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) peer_id: PeerId,
    /// Client sessions to the peers this side asks (`None`: every client request goes over
    /// `/rill/client/1`).
    pub(crate) sessions: Option<Arc<Sessions>>,
}

impl P2p {
    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn send(&self, command: Command) {
        let _ = self.commands.send(command).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await;
        answer.await.ok()
    }

    /// Connects to a peer (at `addr`, or an address the network knows for it).
    pub async fn dial(&self, peer: PeerId, addr: Option<Multiaddr>) -> Result<(), RequestError> {
        self.ask(|r| Command::Dial(peer, addr, r))
            .await
            .unwrap_or(Err(RequestError::Stopped))
    }

    /// Replaces the set of registered nodes. Only they may use node protocols and gossip;
    /// every other peer is ignored by gossip and refused on node protocols.
    pub async fn set_nodes(&self, nodes: Vec<NodeEntry>) {
        self.send(Command::SetNodes(nodes)).await;
    }

    /// The peers to stay connected to (the nodes this node shares streams with): the network
    /// dials them again whenever a connection drops.
    pub async fn keep_connected(&self, peers: Vec<PeerId>) {
        self.send(Command::KeepConnected(peers)).await;
    }

    /// Sends a gossip batch to a node's inbox: at once if it is subscribed; once its
    /// subscription arrives if it is connected (for `subscription_wait` at most); not at all if
    /// it is not connected (the node's anti-entropy carries the events again).
    pub async fn gossip(&self, to: Address, batch: GossipBatch) {
        self.send(Command::Gossip(to, batch)).await;
    }

    /// Reports the node's verdict on a gossip message.
    pub async fn report_validation(&self, id: MessageId, via: PeerId, verdict: Validation) {
        self.send(Command::Report(id, via, verdict)).await;
    }

    /// A node-protocol request.
    pub async fn request(
        &self,
        peer: PeerId,
        request: NodeRequest,
    ) -> Result<NodeResponse, RequestError> {
        self.ask(|r| Command::Request(peer, request, r))
            .await
            .unwrap_or(Err(RequestError::Stopped))
    }

    /// A client request: over a client session with the peer, or over `/rill/client/1` if
    /// sessions are off or the peer does not serve them.
    pub async fn client_request(
        &self,
        peer: PeerId,
        request: pb::ClientRequest,
    ) -> Result<pb::ClientResponse, RequestError> {
        if let Some(sessions) = &self.sessions
            && let Some(answer) = sessions.request(self, peer, &request).await
        {
            return answer;
        }
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
