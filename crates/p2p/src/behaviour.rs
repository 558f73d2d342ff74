//! The composed libp2p behaviour. Field order is deliberate: gossip first (latency matters
//! most), then the request-response protocols, then discovery.

use std::time::Duration;

use libp2p::gossipsub::{self, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify, kad};
use rill_protocol::pb;

use crate::codec::ProtoCodec;
use crate::handle::{P2pConfig, Role};

pub(crate) const EVENTS: StreamProtocol = StreamProtocol::new("/rill/events/1");
pub(crate) const MINIBLOCK: StreamProtocol = StreamProtocol::new("/rill/miniblock/1");
pub(crate) const CLIENT: StreamProtocol = StreamProtocol::new("/rill/client/1");
const KAD: StreamProtocol = StreamProtocol::new("/rill/kad/1");

pub(crate) type EventsCodec = ProtoCodec<pb::GetEventsRequest, pb::GetEventsResponse>;
pub(crate) type MiniblockCodec = ProtoCodec<pb::MiniblockRequest, pb::MiniblockResponse>;
pub(crate) type ClientCodec = ProtoCodec<pb::ClientRequest, pb::ClientResponse>;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) events: request_response::Behaviour<EventsCodec>,
    pub(crate) miniblock: request_response::Behaviour<MiniblockCodec>,
    pub(crate) client: request_response::Behaviour<ClientCodec>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// Gossip message ids are content hashes, so the same bytes are one message wherever they
/// come from.
fn content_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(alloy_primitives::keccak256(&message.data).to_vec())
}

impl Behaviour {
    pub(crate) fn new(key: &Keypair, config: &P2pConfig) -> Result<Self, String> {
        // Room for a batch of events (nodes batch up to 256 KiB) or one maximal event, plus
        // the gossip framing.
        let max_gossip = config.max_event_bytes.max(256 * 1024) + 4096;
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(500))
            .validation_mode(ValidationMode::Strict)
            .validate_messages()
            .message_id_fn(content_id)
            .max_transmit_size(max_gossip)
            .build()
            .map_err(|e| e.to_string())?;
        let mut gossipsub =
            gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config)?;
        let thresholds = gossipsub::PeerScoreThresholds::default();
        let params = gossipsub::PeerScoreParams {
            app_specific_weight: 1.0,
            ..Default::default()
        };
        gossipsub.with_peer_score(params, thresholds)?;

        let node_support = match config.role {
            Role::Node => ProtocolSupport::Full,
            Role::Client => ProtocolSupport::Outbound,
        };
        let node_rr =
            request_response::Config::default().with_request_timeout(config.request_timeout);
        // Long polls of `watch` wait up to 30 s for updates.
        let client_rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout.max(Duration::from_secs(40)));
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
        let peer_id = key.public().to_peer_id();
        let mut kad = kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad::Config::new(KAD),
        );
        kad.set_mode(Some(match config.role {
            Role::Node => kad::Mode::Server,
            Role::Client => kad::Mode::Client,
        }));
        Ok(Self {
            gossipsub,
            events,
            miniblock,
            client,
            identify,
            kad,
        })
    }
}
