//! Engines wired to real swarms: a node that never gets `NewEventReceived` hears
//! `NewEventInPool`, waits the fetch delay, fetches the event with `GetEvents` from the
//! announcer, and has it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};
use rill_engine::{Effect, Engine, EngineConfig, Gossip, Input, StreamView};
use rill_p2p::{NetworkEvent, P2p, PeerId, Validation};
use rill_protocol::{Limits, NodeKey, ParsedEvent, ParsedMiniblock, Payload, StreamId, pb, seal};
use tokio::sync::{mpsc, watch};

use crate::support::{TestPeer, registered_nodes};

fn genesis(stream: StreamId, creator: &NodeKey, by: &NodeKey) -> ParsedMiniblock {
    let inception =
        rill_protocol::envelope::inception(stream, pb::StreamSettings::default(), 0, creator);
    ParsedMiniblock::genesis(vec![inception], 1, 0, by).unwrap()
}

/// What a driver exposes to the test.
struct Driven {
    p2p: P2p,
    adds: mpsc::UnboundedSender<ParsedEvent>,
    pool: watch::Receiver<Vec<B256>>,
    served: Arc<AtomicUsize>,
}

/// Runs an engine on a swarm, as the node will: gossip in, effects out, ticks every 50 ms.
fn drive(
    mut peer: TestPeer,
    stream: StreamId,
    genesis: ParsedMiniblock,
    nodes: Vec<(Address, PeerId)>,
    drop_received: bool,
) -> Driven {
    let config = EngineConfig {
        fetch_delay_ms: 300,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(peer.key.clone(), config);
    let started = Instant::now();
    let now = move || started.elapsed().as_millis() as u64;
    let (adds, mut add_rx) = mpsc::unbounded_channel::<ParsedEvent>();
    let (fetched_tx, mut fetched_rx) = mpsc::unbounded_channel::<(Address, Vec<pb::Envelope>)>();
    let (pool_tx, pool) = watch::channel(Vec::new());
    let served = Arc::new(AtomicUsize::new(0));
    let p2p = peer.p2p.clone();
    let me = peer.key.address();
    let peers: HashMap<Address, PeerId> = nodes.iter().copied().collect();
    let counter = served.clone();
    peer.p2p.subscribe(stream);
    let node_addrs: Vec<Address> = nodes.iter().map(|n| n.0).collect();
    engine.handle(
        0,
        Input::StreamAllocated {
            stream,
            nodes: node_addrs,
            genesis,
        },
    );
    tokio::spawn(async move {
        let mut stored: HashMap<B256, pb::Envelope> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            let effects = tokio::select! {
                Some(event) = add_rx.recv() => engine.add_event(now(), stream, event).unwrap_or_default(),
                Some((from, envelopes)) = fetched_rx.recv() => {
                    let events = envelopes.into_iter().filter_map(|e| ParsedEvent::open(e, &Limits::default()).ok()).collect();
                    engine.handle(now(), Input::FetchedEvents { from, stream, events })
                }
                _ = tick.tick() => engine.handle(now(), Input::Tick),
                Some(event) = peer.events.recv() => match event {
                    NetworkEvent::Gossip { from, via, id, message, .. } => {
                        peer.p2p.report_validation(id, via, Validation::Accept);
                        match message.kind {
                            Some(pb::gossip_message::Kind::NewEventReceived(m)) => {
                                if drop_received { continue; }
                                let mut effects = Vec::new();
                                for envelope in m.envelopes {
                                    let Ok(event) = ParsedEvent::open(envelope, &Limits::default()) else { continue };
                                    effects.extend(engine.handle(now(), Input::GossipEvent { from, stream, event }));
                                }
                                effects
                            }
                            Some(pb::gossip_message::Kind::NewEventInPool(m)) => {
                                let mut effects = Vec::new();
                                for hash in &m.hashes {
                                    let hash = B256::from_slice(hash);
                                    effects.extend(engine.handle(now(), Input::EventInPool { from, stream, hash }));
                                }
                                effects
                            }
                            None => continue,
                        }
                    }
                    NetworkEvent::EventsRequest { request, responder, .. } => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let envelopes = request.hashes.iter().filter_map(|h| stored.get(&B256::from_slice(h)).cloned()).collect();
                        responder.send(pb::GetEventsResponse { envelopes, error: None });
                        continue;
                    }
                    _ => continue,
                },
            };
            for effect in effects {
                match effect {
                    Effect::StoreEvent { event, .. } => {
                        stored.insert(event.hash(), event.envelope().clone());
                    }
                    Effect::Gossip { message, .. } => {
                        let kind = match message {
                            Gossip::EventReceived(event) => {
                                pb::gossip_message::Kind::NewEventReceived(pb::NewEventReceived {
                                    stream_id: stream.0.to_vec(),
                                    envelopes: vec![event.envelope().clone()],
                                })
                            }
                            Gossip::EventInPool(hash) => {
                                pb::gossip_message::Kind::NewEventInPool(pb::NewEventInPool {
                                    stream_id: stream.0.to_vec(),
                                    hashes: vec![hash.to_vec()],
                                    node: me.to_vec(),
                                })
                            }
                        };
                        peer.p2p
                            .publish(stream, pb::GossipMessage { kind: Some(kind) });
                    }
                    Effect::FetchEvents { from, hashes, .. } => {
                        let p2p = peer.p2p.clone();
                        let target = peers[&from];
                        let back = fetched_tx.clone();
                        tokio::spawn(async move {
                            let request = pb::GetEventsRequest {
                                stream_id: stream.0.to_vec(),
                                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                            };
                            if let Ok(response) = p2p.get_events(target, request).await {
                                let _ = back.send((from, response.envelopes));
                            }
                        });
                    }
                    _ => {}
                }
            }
            let _ = pool_tx.send(
                engine
                    .stream(&stream)
                    .map(|s| s.minipool_hashes())
                    .unwrap_or_default(),
            );
        }
    });
    Driven {
        p2p,
        adds,
        pool,
        served,
    }
}

#[tokio::test]
async fn node_that_missed_new_event_received_fetches_the_announced_event() {
    let nodes = registered_nodes(3).await;
    let stream = StreamId::random();
    let creator = NodeKey::generate();
    let genesis = genesis(stream, &creator, &nodes[0].key);
    let book: Vec<(Address, PeerId)> = nodes.iter().map(|n| (n.address(), n.peer_id())).collect();
    let mut driven: Vec<Driven> = nodes
        .into_iter()
        .enumerate()
        .map(|(i, peer)| drive(peer, stream, genesis.clone(), book.clone(), i == 2))
        .collect();
    // Let the subscriptions spread.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let event = seal(
        pb::StreamEvent {
            creator: vec![],
            salt: vec![1],
            prev_miniblock_hash: genesis.hash().to_vec(),
            prev_miniblock_num: 0,
            created_at_ms: 0,
            payload: Some(Payload::Message(pb::Message {
                data: b"hello".to_vec(),
            })),
        },
        &creator,
    )
    .unwrap();
    driven[0].adds.send(event.clone()).unwrap();

    let has_it = |pool: &Vec<B256>| pool.contains(&event.hash());
    let wait = Duration::from_secs(15);
    tokio::time::timeout(wait, driven[1].pool.wait_for(has_it))
        .await
        .expect("node 1 gets it by gossip")
        .unwrap();
    tokio::time::timeout(wait, driven[2].pool.wait_for(has_it))
        .await
        .expect("node 2 fetches it")
        .unwrap();
    let served: usize = driven[..2]
        .iter()
        .map(|d| d.served.load(Ordering::SeqCst))
        .sum();
    assert!(served >= 1, "node 2 got it through GetEvents, not gossip");
    let _ = driven[0].p2p.peer_id();
}
