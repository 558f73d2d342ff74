//! The task that owns the `Swarm`.

use std::collections::HashMap;
use std::time::Duration;

use alloy_primitives::Address;
use futures::StreamExt;
use libp2p::gossipsub::{self, PublishError, TopicHash, TopicScoreParams};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{PeerId, Swarm, identify, noise, tcp, yamux};
use prost::Message as _;
use rill_protocol::{NodeKey, pb};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::handle::{Command, NetworkEvent, P2p, P2pConfig, RequestError, Responder};
use crate::stream_topic;

type Pending<T> = HashMap<OutboundRequestId, oneshot::Sender<Result<T, RequestError>>>;

/// Builds the swarm, starts listening, and spawns the event loop. Returns once every listen
/// address is bound, with the handle and the stream of [`NetworkEvent`]s.
pub async fn spawn(
    key: &NodeKey,
    config: P2pConfig,
) -> Result<(P2p, mpsc::UnboundedReceiver<NetworkEvent>), String> {
    let keypair = key.libp2p_keypair();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_quic()
        .with_behaviour(|key| {
            Behaviour::new(key, &config).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| e.to_string())?
        // Node connections are kept: gossip and proposals need them every block.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| format!("listen on {addr}: {e}"))?;
    }
    let (event_tx, events) = mpsc::unbounded_channel();
    // Wait until every listener has an address, so callers can hand it out.
    let mut bound = 0;
    while bound < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                bound += 1;
                let _ = event_tx.send(NetworkEvent::Listening(address));
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(format!("listener failed: {error}"));
            }
            _ => {}
        }
    }
    let (commands, command_rx) = mpsc::unbounded_channel();
    let peer_id = *swarm.local_peer_id();
    let event_loop = EventLoop {
        swarm,
        config,
        commands: commands.clone(),
        command_rx,
        events: event_tx,
        nodes: HashMap::new(),
        dials: HashMap::new(),
        pending_events: HashMap::new(),
        pending_miniblock: HashMap::new(),
        pending_client: HashMap::new(),
        unpublished: Vec::new(),
    };
    tokio::spawn(event_loop.run());
    Ok((P2p { commands, peer_id }, events))
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: P2pConfig,
    commands: mpsc::UnboundedSender<Command>,
    command_rx: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NetworkEvent>,
    /// Registered, Operational nodes.
    nodes: HashMap<PeerId, Address>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), RequestError>>>>,
    pending_events: Pending<pb::GetEventsResponse>,
    pending_miniblock: Pending<pb::MiniblockResponse>,
    pending_client: Pending<pb::ClientResponse>,
    /// Gossip that found no subscribed peer yet: (topic, bytes, give up at).
    unpublished: Vec<(TopicHash, Vec<u8>, Instant)>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut retry = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = self.command_rx.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = retry.tick(), if !self.unpublished.is_empty() => self.retry_unpublished(),
            }
        }
    }

    fn emit(&self, event: NetworkEvent) {
        let _ = self.events.send(event);
    }

    fn on_command(&mut self, command: Command) {
        let behaviour = self.swarm.behaviour_mut();
        match command {
            Command::Dial(peer, addr, reply) => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let opts = match addr {
                    Some(addr) => DialOpts::peer_id(peer).addresses(vec![addr]).build(),
                    None => DialOpts::peer_id(peer).build(),
                };
                match self.swarm.dial(opts) {
                    Ok(()) => self.dials.entry(peer).or_default().push(reply),
                    Err(DialError::DialPeerConditionFalse(_)) => {
                        self.dials.entry(peer).or_default().push(reply)
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::Unreachable(e.to_string())));
                    }
                }
            }
            Command::SetNodes(nodes) => {
                self.nodes.clear();
                for (address, peer, addr) in nodes {
                    self.nodes.insert(peer, address);
                    if let Some(addr) = addr {
                        self.swarm.add_peer_address(peer, addr.clone());
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                }
            }
            Command::Subscribe(stream) => {
                let topic = stream_topic(&stream);
                // Small, capped rewards for time in the mesh and first deliveries; a heavy
                // penalty for invalid messages, so a few of them graylist a peer. Quiet streams
                // are normal, so few deliveries cost nothing.
                let params = TopicScoreParams {
                    topic_weight: 1.0,
                    time_in_mesh_weight: 0.01,
                    time_in_mesh_quantum: Duration::from_secs(1),
                    time_in_mesh_cap: 3600.0,
                    first_message_deliveries_weight: 1.0,
                    first_message_deliveries_cap: 100.0,
                    mesh_message_deliveries_weight: 0.0,
                    mesh_failure_penalty_weight: 0.0,
                    invalid_message_deliveries_weight: -100.0,
                    invalid_message_deliveries_decay: 0.9,
                    ..TopicScoreParams::default()
                };
                if let Err(e) = behaviour.gossipsub.set_topic_params(topic.clone(), params) {
                    warn!(%e, "topic score params refused");
                }
                if let Err(e) = behaviour.gossipsub.subscribe(&topic) {
                    warn!(%e, ?stream, "subscribe failed");
                }
            }
            Command::Unsubscribe(stream) => {
                behaviour.gossipsub.unsubscribe(&stream_topic(&stream));
            }
            Command::Publish(stream, message) => {
                let topic = stream_topic(&stream).hash();
                let data = message.encode_to_vec();
                self.publish(topic, data, Instant::now() + self.config.publish_retry_for);
            }
            Command::Report(id, via, verdict) => {
                behaviour
                    .gossipsub
                    .report_message_validation_result(&id, &via, verdict.into());
            }
            Command::Events(peer, request, reply) => {
                let id = behaviour.events.send_request(&peer, request);
                self.pending_events.insert(id, reply);
            }
            Command::Miniblock(peer, request, reply) => {
                let id = behaviour.miniblock.send_request(&peer, request);
                self.pending_miniblock.insert(id, reply);
            }
            Command::Client(peer, request, reply) => {
                let id = behaviour.client.send_request(&peer, request);
                self.pending_client.insert(id, reply);
            }
            Command::RespondEvents(channel, response) => {
                let _ = behaviour.events.send_response(channel, response);
            }
            Command::RespondMiniblock(channel, response) => {
                let _ = behaviour.miniblock.send_response(channel, response);
            }
            Command::RespondClient(channel, response) => {
                let _ = behaviour.client.send_response(channel, response);
            }
            Command::PeerScore(peer, reply) => {
                let _ = reply.send(behaviour.gossipsub.peer_score(&peer));
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
        }
    }

    fn publish(&mut self, topic: TopicHash, data: Vec<u8>, give_up_at: Instant) {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), data.clone())
        {
            Ok(_) | Err(PublishError::Duplicate) => {}
            Err(PublishError::NoPeersSubscribedToTopic | PublishError::AllQueuesFull(_)) => {
                // Never lose it: keep it until a peer subscribes.
                self.unpublished.push((topic, data, give_up_at));
            }
            Err(e) => warn!(%e, %topic, "gossip publish failed"),
        }
    }

    fn retry_unpublished(&mut self) {
        let now = Instant::now();
        for (topic, data, give_up_at) in std::mem::take(&mut self.unpublished) {
            if now >= give_up_at {
                warn!(%topic, "no peer subscribed in time; gossip message dropped (peers fetch announced events)");
                continue;
            }
            self.publish(topic, data, give_up_at);
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Events(event)) => {
                if let Some((peer, request, channel)) = inbound(event, &mut self.pending_events) {
                    match self.nodes.get(&peer) {
                        Some(from) => self.emit(NetworkEvent::EventsRequest {
                            from: *from,
                            request,
                            responder: self.responder(channel),
                        }),
                        None => {
                            let refusal = pb::GetEventsResponse {
                                envelopes: vec![],
                                error: Some(not_a_node(&peer)),
                            };
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .events
                                .send_response(channel, refusal);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Miniblock(event)) => {
                if let Some((peer, request, channel)) = inbound(event, &mut self.pending_miniblock)
                {
                    match self.nodes.get(&peer) {
                        Some(from) => self.emit(NetworkEvent::MiniblockRequest {
                            from: *from,
                            request,
                            responder: self.responder(channel),
                        }),
                        None => {
                            let refusal = pb::MiniblockResponse {
                                kind: None,
                                error: Some(not_a_node(&peer)),
                            };
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .miniblock
                                .send_response(channel, refusal);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Client(event)) => {
                if let Some((peer, request, channel)) = inbound(event, &mut self.pending_client) {
                    let responder = self.responder(channel);
                    self.emit(NetworkEvent::ClientRequest {
                        peer,
                        request,
                        responder,
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if self.nodes.contains_key(&peer_id) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                for reply in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
                if num_established.get() == 1 {
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.emit(NetworkEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                for reply in self.dials.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(RequestError::Unreachable(error.to_string())));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.emit(NetworkEvent::Listening(address));
            }
            _ => {}
        }
    }

    fn responder<T>(&self, channel: ResponseChannel<T>) -> Responder<T> {
        Responder {
            channel,
            commands: self.commands.clone(),
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let from = message
                    .source
                    .and_then(|source| self.nodes.get(&source).copied());
                let decoded = pb::GossipMessage::decode(message.data.as_slice());
                match (from, self.nodes.contains_key(&propagation_source), decoded) {
                    (Some(from), true, Ok(decoded)) => self.emit(NetworkEvent::Gossip {
                        from,
                        via: propagation_source,
                        id: message_id,
                        topic: message.topic.into_string(),
                        message: decoded,
                    }),
                    (from, via_node, decoded) => {
                        // Not from a registered node, or not a Rill message: reject, which
                        // penalises the peer that sent it.
                        debug!(
                            peer = %propagation_source,
                            registered_source = from.is_some(),
                            via_node,
                            decodes = decoded.is_ok(),
                            "gossip rejected"
                        );
                        self.swarm
                            .behaviour_mut()
                            .gossipsub
                            .report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                gossipsub::MessageAcceptance::Reject,
                            );
                    }
                }
            }
            gossipsub::Event::Subscribed { .. } if !self.unpublished.is_empty() => {
                self.retry_unpublished();
            }
            _ => {}
        }
    }
}

/// Routes a request-response event: completes our outbound requests and returns an inbound one.
fn inbound<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    pending: &mut Pending<Resp>,
) -> Option<(PeerId, Req, ResponseChannel<Resp>)> {
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request, channel, ..
            } => Some((peer, request, channel)),
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
                None
            }
        },
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let error = match error {
                    OutboundFailure::Timeout => RequestError::Timeout,
                    OutboundFailure::DialFailure => RequestError::Unreachable("dial failed".into()),
                    other => RequestError::Failed(other.to_string()),
                };
                let _ = reply.send(Err(error));
            }
            None
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            debug!(%peer, %error, "inbound request failed");
            None
        }
        request_response::Event::ResponseSent { .. } => None,
    }
}

fn not_a_node(peer: &PeerId) -> pb::Error {
    pb::Error {
        code: pb::ErrorCode::NotANode as i32,
        message: format!(
            "peer {peer} is not a registered, operational node; node protocols are for nodes (clients use /rill/client/1)"
        ),
    }
}
