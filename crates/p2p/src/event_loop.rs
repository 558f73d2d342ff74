//! The task that owns the `Swarm`: it turns libp2p events into [`NetworkEvent`]s and the
//! handle's commands into swarm calls, and gates peers by the registry. It never waits on the
//! node: when the node's queue is full, gossip is ignored and requests are answered "busy".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use futures::StreamExt;
use libp2p::gossipsub::{self, PublishError, TopicHash, TopicScoreParams};
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{PeerId, Swarm, identify, noise, tcp, yamux};
use rill_protocol::{NodeKey, pb};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::admission::SharedGate;
use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::gossip::inbox_topic;
use crate::handle::{Command, NetworkEvent, NodeRequest, NodeResponse, P2p, Responder, Route};
use crate::inbound::{
    EventsProtocol, MiniblockProtocol, NodeProtocol, Reply, busy, inbound, not_a_node,
};
use crate::outgoing::Outgoing;
use crate::session::{SESSION, Server, Sessions, serve};
use crate::{GossipBatch, P2pConfig, RequestError, Role, SpawnError};

mod gate;

/// How often peers the node wants to stay connected to are dialled again.
const REDIAL_EVERY: Duration = Duration::from_secs(2);

/// Builds the swarm, starts listening, and spawns the event loop. Returns once every listen
/// address is bound, with the handle and the stream of [`NetworkEvent`]s.
pub async fn spawn(
    key: &NodeKey,
    config: P2pConfig,
) -> Result<(P2p, mpsc::Receiver<NetworkEvent>), SpawnError> {
    let keypair = key.libp2p_keypair();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| SpawnError::Transport {
            what: "tcp",
            source: Box::new(e),
        })?
        .with_quic()
        .with_behaviour(|key| {
            Behaviour::new(key, &config).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| SpawnError::Behaviour(Box::new(e)))?
        // Node connections are kept: gossip and proposals need them every block. A substream
        // this side opens names its one protocol and sends its request in the same flight
        // (multistream-select's `V1Lazy`), rather than waiting a round trip for the peer to
        // confirm the protocol first.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(3600))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| SpawnError::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    let (event_tx, events) = mpsc::channel(config.event_capacity.max(1));
    // Wait until every listener has an address, so callers can hand it out.
    let mut bound = 0;
    while bound < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                bound += 1;
                let _ = event_tx.try_send(NetworkEvent::Listening(address));
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => return Err(SpawnError::Listener(error)),
            _ => {}
        }
    }
    let me = key.address();
    let inbox = inbox_topic(&me);
    if config.role == Role::Node {
        subscribe_inbox(&mut swarm, &inbox);
    }
    let (commands, command_rx) = mpsc::channel(config.command_capacity.max(1));
    let peer_id = *swarm.local_peer_id();
    let client_gate = SharedGate::new(config.client_rate);
    let mut control = swarm.behaviour().sessions.new_control();
    if config.role == Role::Node && config.client_sessions {
        let incoming = control
            .accept(SESSION)
            .map_err(|e| SpawnError::Behaviour(Box::new(e)))?;
        let server = Server {
            events: event_tx.clone(),
            gate: client_gate.clone(),
            metrics: config.metrics.clone(),
            max_message: config.max_message_bytes,
            max_sessions: config.max_concurrent_requests,
            idle: config.session_idle,
            write_timeout: config.request_timeout,
            open: Default::default(),
        };
        tokio::spawn(serve(server, incoming));
    }
    let sessions = config.client_sessions.then(|| {
        Arc::new(Sessions::new(
            control,
            config.max_message_bytes,
            config.client_request_timeout(),
        ))
    });
    let event_loop = EventLoop {
        swarm,
        config,
        me,
        inbox: inbox.hash(),
        seq: 0,
        commands: commands.clone(),
        command_rx,
        events: event_tx,
        nodes: HashMap::new(),
        registered_addrs: HashMap::new(),
        keep: HashSet::new(),
        dials: HashMap::new(),
        pending_events: HashMap::new(),
        pending_miniblock: HashMap::new(),
        pending_client: HashMap::new(),
        outgoing: Outgoing::default(),
        peers_of: HashMap::new(),
        subscriptions: HashMap::new(),
        client_gate,
    };
    tokio::spawn(event_loop.run());
    Ok((
        P2p {
            commands,
            peer_id,
            sessions,
        },
        events,
    ))
}

/// Joins this node's inbox, scoring what arrives there: capped rewards for first deliveries
/// and a heavy penalty for invalid messages, so a few of them graylist a peer.
fn subscribe_inbox(swarm: &mut Swarm<Behaviour>, inbox: &gossipsub::IdentTopic) {
    let params = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.9,
        ..TopicScoreParams::default()
    };
    let gossipsub = &mut swarm.behaviour_mut().gossipsub;
    if let Err(e) = gossipsub.set_topic_params(inbox.clone(), params) {
        warn!(%e, "inbox score params refused");
    }
    if let Err(e) = gossipsub.subscribe(inbox) {
        warn!(%e, "subscribing to the inbox failed");
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: P2pConfig,
    me: Address,
    inbox: TopicHash,
    /// The sequence number of the next gossip batch.
    seq: u64,
    commands: mpsc::Sender<Command>,
    command_rx: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetworkEvent>,
    /// Registered nodes.
    nodes: HashMap<PeerId, Address>,
    /// Registered nodes' addresses, as the registry gives them: every dial names it, since
    /// the swarm forgets an address after one failed dial.
    registered_addrs: HashMap<PeerId, libp2p::Multiaddr>,
    /// Peers to stay connected to.
    keep: HashSet<PeerId>,
    dials: HashMap<PeerId, Vec<Reply<()>>>,
    pending_events: HashMap<OutboundRequestId, Reply<NodeResponse>>,
    pending_miniblock: HashMap<OutboundRequestId, Reply<NodeResponse>>,
    pending_client: HashMap<OutboundRequestId, Reply<pb::ClientResponse>>,
    /// Gossip on its way to node inboxes.
    outgoing: Outgoing,
    /// Registered nodes' peer ids by address.
    peers_of: HashMap<Address, PeerId>,
    /// The topics each connected peer subscribed to.
    subscriptions: HashMap<PeerId, HashSet<TopicHash>>,
    /// What each client peer may still ask, shared with the client sessions.
    client_gate: SharedGate,
}

/// How a node dials a peer: the address given and the swarm's, unless connected or
/// dialing already, from a new local port. With the port reused (libp2p's default), two nodes
/// dialing each other at once from their listen ports make a TCP simultaneous open: one
/// connection that both sides dialed, whose security handshake fails. Over a link with latency
/// the two SYNs cross every time, and the nodes never connect.
fn dial_opts(peer: PeerId, addr: Option<libp2p::Multiaddr>) -> DialOpts {
    DialOpts::peer_id(peer)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .addresses(addr.into_iter().collect())
        .extend_addresses_through_behaviour()
        .allocate_new_port()
        .build()
}

impl EventLoop {
    async fn run(mut self) {
        let mut expire = tokio::time::interval(Duration::from_secs(1));
        let mut redial = tokio::time::interval(REDIAL_EVERY);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = self.command_rx.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = expire.tick(), if self.outgoing.has_waiting() => {
                    let dropped = self.outgoing.expire(Instant::now());
                    self.config.metrics.gossip_undelivered.inc_by(dropped as u64);
                }
                _ = redial.tick() => {
                    self.redial();
                    self.client_gate.lock().prune(std::time::Instant::now());
                }
                // The node is gone: send what it queued last, then stop and free the listen
                // addresses.
                () = self.events.closed() => {
                    while let Ok(command) = self.command_rx.try_recv() {
                        self.on_command(command);
                    }
                    return;
                }
            }
        }
    }

    /// Hands an event to the node without waiting; gives it back if the node's queue is full.
    fn emit(&self, event: NetworkEvent) -> Result<(), Box<NetworkEvent>> {
        self.events.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event) => {
                Box::new(event)
            }
        })
    }

    fn on_command(&mut self, command: Command) {
        let behaviour = self.swarm.behaviour_mut();
        match command {
            Command::Dial(peer, addr, reply) => self.dial(peer, addr, reply),
            Command::SetNodes(nodes) => self.set_nodes(nodes),
            Command::KeepConnected(peers) => {
                self.keep = peers.into_iter().collect();
                self.redial();
            }
            Command::Gossip(to, batch) => self.gossip(to, batch),
            Command::Report(id, via, verdict) => {
                behaviour
                    .gossipsub
                    .report_message_validation_result(&id, &via, verdict.into());
            }
            Command::Request(peer, NodeRequest::Events(request), reply) => {
                let id = behaviour.events.send_request(&peer, request);
                self.pending_events.insert(id, reply);
            }
            Command::Request(peer, NodeRequest::Miniblock(request), reply) => {
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

    fn dial(&mut self, peer: PeerId, addr: Option<libp2p::Multiaddr>, reply: Reply<()>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let addr = addr.or_else(|| self.registered_addrs.get(&peer).cloned());
        match self.swarm.dial(dial_opts(peer, addr)) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                self.dials.entry(peer).or_default().push(reply)
            }
            Err(e) => {
                let _ = reply.send(Err(RequestError::Unreachable((&e).into())));
            }
        }
    }

    fn redial(&mut self) {
        let missing: Vec<PeerId> = self
            .keep
            .iter()
            .filter(|p| !self.swarm.is_connected(p))
            .copied()
            .collect();
        for peer in missing {
            let addr = self.registered_addrs.get(&peer).cloned();
            if let Err(e) = self.swarm.dial(dial_opts(peer, addr)) {
                debug!(%peer, %e, "redial failed");
            }
        }
    }

    /// Sends a batch to a node's inbox: now if it is subscribed; once it is, if it is
    /// connected (for a few seconds at most); not at all if it is not connected (counted; the
    /// node carries the events again when it is back).
    fn gossip(&mut self, to: Address, batch: GossipBatch) {
        let topic = inbox_topic(&to).hash();
        let data = batch.encode(self.me, self.seq);
        self.seq += 1;
        if self.outgoing.is_subscribed(&topic) {
            return self.publish(topic, data);
        }
        let connected = self
            .peers_of
            .get(&to)
            .is_some_and(|peer| self.swarm.is_connected(peer));
        if connected {
            let until = Instant::now() + self.config.subscription_wait;
            self.outgoing.wait(topic, data, until);
        } else {
            self.config.metrics.gossip_undelivered.inc();
        }
    }

    fn publish(&mut self, topic: TopicHash, data: Vec<u8>) {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), data)
        {
            Ok(_) => {
                self.config.metrics.gossip_published.inc();
            }
            Err(PublishError::Duplicate) => {}
            Err(e) => {
                self.config.metrics.gossip_publish_failed.inc();
                warn!(%e, %topic, "gossip publish failed");
            }
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Events(event)) => {
                if let Some((peer, request, channel)) =
                    inbound(event, &mut self.pending_events, NodeResponse::Events)
                {
                    self.on_node_request::<EventsProtocol>(peer, request, channel);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Miniblock(event)) => {
                if let Some((peer, request, channel)) =
                    inbound(event, &mut self.pending_miniblock, NodeResponse::Miniblock)
                {
                    self.on_node_request::<MiniblockProtocol>(peer, request, channel);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Client(event)) => {
                if let Some((peer, request, channel)) =
                    inbound(event, &mut self.pending_client, |r| r)
                {
                    let admitted = self.client_gate.lock().admit(&peer, &request);
                    if let Err(refusal) = admitted {
                        self.config.metrics.client_requests_limited.inc();
                        let limited = pb::ClientResponse {
                            kind: None,
                            error: Some(refusal),
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .client
                            .send_response(channel, limited);
                        return;
                    }
                    let responder = self.responder(channel);
                    let event = NetworkEvent::ClientRequest {
                        peer,
                        request,
                        responder,
                    };
                    if let Err(NetworkEvent::ClientRequest { responder, .. }) =
                        self.emit(event).map_err(|e| *e)
                        && let Some(channel) = responder.into_channel()
                    {
                        self.config.metrics.requests_shed.inc();
                        let busy = pb::ClientResponse {
                            kind: None,
                            error: Some(busy()),
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .client
                            .send_response(channel, busy);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if self.nodes.contains_key(&peer_id) => {
                for addr in info.listen_addrs {
                    self.swarm.add_peer_address(peer_id, addr);
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
                    self.gate_gossip(&peer_id);
                    let _ = self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.outgoing.gone(&peer_id);
                // A client's bucket outlives its connection (reconnecting does not refill
                // it); full buckets are pruned.
                self.subscriptions.remove(&peer_id);
                let _ = self.emit(NetworkEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                let failure = (&error).into();
                for reply in self.dials.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(Err(RequestError::Unreachable(failure)));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                let _ = self.emit(NetworkEvent::Listening(address));
            }
            _ => {}
        }
    }

    /// A node-protocol request: refused for a peer that is not a node, handed to the node,
    /// or answered "busy" if the node's queue is full.
    fn on_node_request<P: NodeProtocol>(
        &mut self,
        peer: PeerId,
        request: P::Request,
        channel: ResponseChannel<P::Response>,
    ) {
        let Some(from) = self.nodes.get(&peer).copied() else {
            self.config.metrics.requests_not_a_node.inc();
            let refusal = P::refusal(not_a_node(&peer));
            P::send(self.swarm.behaviour_mut(), channel, refusal);
            return;
        };
        let event = P::event(from, request, self.responder(channel));
        if let Err(event) = self.emit(event)
            && let Some(channel) = P::responder(*event).and_then(Responder::into_channel)
        {
            self.config.metrics.requests_shed.inc();
            P::send(self.swarm.behaviour_mut(), channel, P::refusal(busy()));
        }
    }

    fn responder<T>(&self, channel: ResponseChannel<T>) -> Responder<T> {
        Responder(Route::Swarm {
            channel,
            commands: self.commands.clone(),
        })
    }

    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        via: &PeerId,
        verdict: gossipsub::MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, via, verdict);
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                self.config.metrics.gossip_received.inc();
                let batch = self
                    .nodes
                    .get(&propagation_source)
                    .copied()
                    .filter(|_| {
                        message.source == Some(propagation_source) && message.topic == self.inbox
                    })
                    .map(|from| (from, GossipBatch::decode(&message.data, from)));
                match batch {
                    Some((from, Ok(batch))) => {
                        let event = NetworkEvent::Gossip {
                            from,
                            via: propagation_source,
                            id: message_id.clone(),
                            batch,
                        };
                        if self.emit(event).is_err() {
                            // The node is overloaded: nothing wrong with the sender, and the
                            // stream's nodes carry the events again.
                            self.config.metrics.gossip_shed.inc();
                            self.report(
                                &message_id,
                                &propagation_source,
                                gossipsub::MessageAcceptance::Ignore,
                            );
                        }
                    }
                    other => {
                        // Not from a registered node, relayed, sent to the wrong topic, or not
                        // a gossip batch: no honest node does that.
                        debug!(
                            peer = %propagation_source,
                            registered = other.is_some(),
                            error = ?other.and_then(|(_, b)| b.err()),
                            "gossip refused"
                        );
                        self.config.metrics.gossip_refused.inc();
                        self.report(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Reject,
                        );
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => self.subscribed(peer_id, topic),
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                self.unsubscribed(peer_id, &topic);
            }
            _ => {}
        }
    }
}
