//! The composed libp2p behaviour. Field order is deliberate: gossip first (latency matters
//! most), then the request-response protocols and client sessions, then identify.

use std::time::Duration;

use libp2p::gossipsub::{self, IdentityTransform, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify};
use rill_protocol::pb;

use crate::codec::ProtoCodec;
use crate::gossip::{Filter, filter};
use crate::{P2pConfig, Role, SpawnError};

pub(crate) const EVENTS: StreamProtocol = StreamProtocol::new("/rill/events/1");
pub(crate) const MINIBLOCK: StreamProtocol = StreamProtocol::new("/rill/miniblock/1");
pub(crate) const CLIENT: StreamProtocol = StreamProtocol::new("/rill/client/1");

pub(crate) type EventsCodec = ProtoCodec<pb::GetEventsRequest, pb::GetEventsResponse>;
pub(crate) type MiniblockCodec = ProtoCodec<pb::MiniblockRequest, pb::MiniblockResponse>;
pub(crate) type ClientCodec = ProtoCodec<pb::ClientRequest, pb::ClientResponse>;

pub(crate) type Gossipsub = gossipsub::Behaviour<IdentityTransform, Filter>;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) gossipsub: Gossipsub,
    pub(crate) events: request_response::Behaviour<EventsCodec>,
    pub(crate) miniblock: request_response::Behaviour<MiniblockCodec>,
    pub(crate) client: request_response::Behaviour<ClientCodec>,
    pub(crate) sessions: libp2p_stream::Behaviour,
    pub(crate) identify: identify::Behaviour,
}

/// Gossip message ids are content hashes (batches carry their sender and a sequence number, so
/// two batches never share one).
fn content_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(alloy_primitives::keccak256(&message.data).to_vec())
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair, config: &P2pConfig) -> Result<Self, SpawnError> {
        // Room for a batch (nodes fill messages up to 256 KiB) plus one maximal event (a batch
        // that cannot take it whole sends it alone), plus the framing.
        let max_gossip = 256 * 1024 + config.max_event_bytes + 4096;
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(500))
            // Messages carry no signature: each is delivered by its sender over an
            // authenticated connection (inboxes are not relayed), and the node checks that.
            .validation_mode(ValidationMode::Permissive)
            .validate_messages()
            .message_id_fn(content_id)
            .max_transmit_size(max_gossip)
            .build()
            .map_err(|e| SpawnError::Behaviour(Box::new(e)))?;
        let peer_id = key.public().to_peer_id();
        let mut gossipsub = Gossipsub::new_with_subscription_filter(
            MessageAuthenticity::Author(peer_id),
            gossip_config,
            filter(),
        )
        .map_err(|e| SpawnError::Behaviour(e.into()))?;
        let thresholds = gossipsub::PeerScoreThresholds::default();
        let params = gossipsub::PeerScoreParams {
            app_specific_weight: 1.0,
            ..Default::default()
        };
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|e| SpawnError::Behaviour(e.into()))?;

        let node_support = match config.role {
            Role::Node => ProtocolSupport::Full,
            Role::Client => ProtocolSupport::Outbound,
        };
        let node_rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_requests);
        let client_rr = node_rr
            .clone()
            .with_request_timeout(config.client_request_timeout());
        let max = config.max_message_bytes;
        let events = request_response::Behaviour::with_codec(
            ProtoCodec::new(64 * 1024, max),
            [(EVENTS, node_support.clone())],
            node_rr.clone(),
        );
        let miniblock = request_response::Behaviour::with_codec(
            ProtoCodec::new(max, max),
            [(MINIBLOCK, node_support.clone())],
            node_rr,
        );
        let client = request_response::Behaviour::with_codec(
            ProtoCodec::new(max, max),
            [(CLIENT, node_support)],
            client_rr,
        );
        let identify = identify::Behaviour::new(
            identify::Config::new("/rill/1.0.0".into(), key.public())
                .with_agent_version(format!("rill/{}", env!("CARGO_PKG_VERSION"))),
        );
        Ok(Self {
            gossipsub,
            events,
            miniblock,
            client,
            sessions: libp2p_stream::Behaviour::new(),
            identify,
        })
    }
}
