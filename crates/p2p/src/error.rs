//! Why the network could not start, or a request got no answer.

use libp2p::core::upgrade::NegotiationError;
use libp2p::request_response::OutboundFailure;
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, TransportError};

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why the swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A transport (TCP, QUIC, noise, yamux) could not be built.
    #[error("building the {what} transport: {source}")]
    Transport {
        /// Which one.
        what: &'static str,
        /// Why.
        source: Source,
    },
    /// The gossipsub or request-response configuration was refused.
    #[error("configuring the network behaviour: {0}")]
    Behaviour(Source),
    /// A listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        source: TransportError<std::io::Error>,
    },
    /// A listener failed before it had an address.
    #[error("a listener failed: {0}")]
    Listener(std::io::Error),
}

/// Why a peer could not be dialled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialFailure {
    /// No address is known for the peer.
    #[error("no address is known for it")]
    NoAddresses,
    /// The peer at the address has another identity.
    #[error("the peer at that address has another identity")]
    WrongPeerId,
    /// Every transport failed (refused, unreachable, timed out).
    #[error("the connection failed")]
    Transport,
    /// The connection was denied (a connection limit, or the peer is banned).
    #[error("the connection was denied")]
    Denied,
    /// The dial was aborted.
    #[error("the dial was aborted")]
    Aborted,
    /// The peer is this node.
    #[error("it is this node")]
    LocalPeer,
}

impl From<&DialError> for DialFailure {
    fn from(error: &DialError) -> Self {
        match error {
            DialError::NoAddresses => DialFailure::NoAddresses,
            DialError::WrongPeerId { .. } => DialFailure::WrongPeerId,
            DialError::Transport(_) => DialFailure::Transport,
            DialError::Denied { .. } => DialFailure::Denied,
            DialError::LocalPeerId { .. } => DialFailure::LocalPeer,
            DialError::Aborted | DialError::DialPeerConditionFalse(_) => DialFailure::Aborted,
        }
    }
}

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The peer could not be reached.
    #[error("peer unreachable: {0}")]
    Unreachable(DialFailure),
    /// No response in time.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the response arrived.
    #[error("the connection closed before the response")]
    ConnectionClosed,
    /// The peer does not speak the protocol (a client asked as a node, or an old version).
    #[error("the peer does not support the protocol")]
    UnsupportedProtocol,
    /// The stream failed: the peer closed it, or sent an oversized or undecodable frame.
    #[error("the stream failed: {0:?}")]
    Stream(std::io::ErrorKind),
    /// The network task has stopped.
    #[error("the network has stopped")]
    Stopped,
}

impl From<OutboundFailure> for RequestError {
    fn from(failure: OutboundFailure) -> Self {
        match failure {
            OutboundFailure::DialFailure => RequestError::Unreachable(DialFailure::Transport),
            OutboundFailure::Timeout => RequestError::Timeout,
            OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
            OutboundFailure::UnsupportedProtocols => RequestError::UnsupportedProtocol,
            OutboundFailure::Io(error) if protocol_refused(&error) => {
                RequestError::UnsupportedProtocol
            }
            OutboundFailure::Io(error) => RequestError::Stream(error.kind()),
        }
    }
}

/// Whether a stream's error is the peer refusing its protocol. A substream this side opens
/// sends its protocol's name with its first bytes (`V1Lazy`), so the refusal comes back as
/// the stream's error.
pub(crate) fn protocol_refused(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<NegotiationError>())
        .is_some_and(|e| matches!(e, NegotiationError::Failed))
}
