//! The rules that keep a stream from losing or stranding events and from being led out of
//! turn: anti-entropy pushes, reconciliation in proposal rounds, verdicts that tell honest
//! races from misbehaviour, clocks, turns, producers of fetched miniblocks, rules that change
//! at a chain block, and node statuses.

use alloy_primitives::{Address, B256, U256};
use rill_engine::{
    CandidateVerdict, Effect, Engine, EngineConfig, Gossip, Input, NetworkParams, NodeStatus,
    PeerGossip, Reject, Request, Response, StoreOp, StreamView, Verdict, elect_leader,
};
use rill_protocol::{ParsedMiniblock, StreamId, pb};

use crate::support::{genesis, key, message};

const SEEDS: [u8; 3] = [10, 11, 12];

/// Three engines on one stream; node keys 10, 11, 12; creator key 2.
struct Net {
    engines: Vec<Engine>,
    addrs: Vec<Address>,
    stream: StreamId,
    genesis: ParsedMiniblock,
}

fn randao(number: u64) -> B256 {
    B256::from(U256::from(number * 7 + 3))
}

impl Net {
    fn new(config: EngineConfig) -> Self {
        let addrs: Vec<Address> = SEEDS.map(|s| key(s).address()).to_vec();
        let stream = StreamId([9; 32]);
        let genesis = genesis(stream, &key(2), &key(10));
        let engines = SEEDS
            .iter()
            .map(|s| {
                let mut engine = Engine::new(key(*s), config);
                engine.handle(
                    0,
                    Input::StreamAllocated {
                        stream,
                        nodes: addrs.clone(),
                        genesis: genesis.clone(),
                    },
                );
                engine
            })
            .collect();
        Self {
            engines,
            addrs,
            stream,
            genesis,
        }
    }

    fn block(&mut self, i: usize, number: u64, now: u64) -> Vec<Effect> {
        self.engines[i].handle(
            now,
            Input::ChainBlock {
                number,
                prevrandao: randao(number),
            },
        )
    }

    fn leader_of(&self, number: u64) -> usize {
        let leader = elect_leader(&self.stream, number, &randao(number), &self.addrs);
        self.addrs.iter().position(|a| *a == leader).unwrap()
    }

    /// A candidate for miniblock 1 by node `by`, elected at `block`.
    fn candidate(&self, by: u8, block: u64, timestamp_ms: u64, events: usize) -> ParsedMiniblock {
        let events: Vec<_> = (0..events)
            .map(|i| message(&key(2), (0, self.genesis.hash()), 100 + i as u64))
            .collect();
        let header = pb::MiniblockHeader {
            num: 1,
            prev_hash: self.genesis.hash().to_vec(),
            timestamp_ms,
            event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
            event_num_offset: 1,
            snapshot: None,
            prev_snapshot_num: 0,
            chain_block: block,
        };
        ParsedMiniblock::seal(header, events, &key(by)).unwrap()
    }
}

fn pushes(effects: &[Effect]) -> Vec<(Address, B256)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::GossipTo {
                to,
                message: Gossip::EventReceived(event),
                ..
            } => Some((*to, event.hash())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_event_no_node_confirmed_is_pushed_again_until_each_confirms() {
    let mut net = Net::new(EngineConfig::default());
    let e = message(&key(2), (0, net.genesis.hash()), 1);
    net.engines[0].add_event(0, net.stream, e.clone()).unwrap();
    let delay = EngineConfig::default().push_delay_ms;
    assert!(pushes(&net.engines[0].handle(delay - 1, Input::Tick)).is_empty());
    let mut first = pushes(&net.engines[0].handle(delay, Input::Tick));
    first.sort();
    let mut both = vec![(net.addrs[1], e.hash()), (net.addrs[2], e.hash())];
    both.sort();
    assert_eq!(
        first, both,
        "the event goes to both nodes that did not announce it"
    );
    // Node 1 confirms; only node 2 is pushed to next time (after a longer delay).
    let _ = net.engines[0].gossip(
        delay + 1,
        net.addrs[1],
        net.stream,
        PeerGossip::InPool(vec![e.hash()]),
    );
    assert!(pushes(&net.engines[0].handle(delay * 2, Input::Tick)).is_empty());
    let second = pushes(&net.engines[0].handle(delay * 3 + 1, Input::Tick));
    assert_eq!(second, vec![(net.addrs[2], e.hash())]);
    // Once node 2 confirms too, the event is never pushed again.
    let _ = net.engines[0].gossip(
        delay * 3 + 2,
        net.addrs[2],
        net.stream,
        PeerGossip::InPool(vec![e.hash()]),
    );
    for at in [delay * 8, delay * 40, delay * 400] {
        assert!(pushes(&net.engines[0].handle(at, Input::Tick)).is_empty());
    }
}

#[test]
fn a_node_pushed_an_event_it_holds_confirms_to_the_pusher() {
    let mut net = Net::new(EngineConfig::default());
    let e = message(&key(2), (0, net.genesis.hash()), 1);
    net.engines[1].add_event(0, net.stream, e.clone()).unwrap();
    let answer = net.engines[1].gossip(
        10,
        net.addrs[0],
        net.stream,
        PeerGossip::Events(vec![e.clone()]),
    );
    assert_eq!(answer.answer, Verdict::Ignore, "a duplicate is no fault");
    assert!(answer.effects.iter().any(|x| matches!(
        x,
        Effect::GossipTo { to, message: Gossip::EventInPool(h), .. } if *to == net.addrs[0] && *h == e.hash()
    )));
}

#[test]
fn a_replica_fetches_the_events_a_leaders_proposal_request_names_and_it_lacks() {
    let mut net = Net::new(EngineConfig::default());
    let e = message(&key(2), (0, net.genesis.hash()), 1);
    let request = rill_engine::ProposalRequest {
        num: 1,
        prev_hash: net.genesis.hash(),
        hashes: vec![e.hash()],
        chain_block: 1,
        difference: true,
    };
    let answer = net.engines[1].propose(0, net.addrs[0], net.stream, &request);
    assert!(answer.answer.is_ok());
    let fetch_delay = EngineConfig::default().fetch_delay_ms;
    let effects = net.engines[1].handle(fetch_delay, Input::Tick);
    assert!(effects.iter().any(|x| matches!(
        x,
        Effect::Send { to, request: Request::GetEvents(hashes), .. } if *to == net.addrs[0] && hashes == &vec![e.hash()]
    )));
}

#[test]
fn a_proposal_names_every_event_the_leader_lacks_and_carries_their_envelopes_within_the_budget() {
    let size = message(&key(2), (0, B256::ZERO), 1).envelope().event.len();
    let mut net = Net::new(EngineConfig {
        response_budget_bytes: 2 * size,
        ..EngineConfig::default()
    });
    let events: Vec<_> = (1..=3)
        .map(|salt| message(&key(2), (0, net.genesis.hash()), salt))
        .collect();
    for e in &events {
        assert_eq!(e.envelope().event.len(), size);
        net.engines[1].add_event(0, net.stream, e.clone()).unwrap();
    }
    let request = rill_engine::ProposalRequest {
        num: 1,
        prev_hash: net.genesis.hash(),
        hashes: vec![],
        chain_block: 1,
        difference: true,
    };
    let reply = net.engines[1]
        .propose(0, net.addrs[0], net.stream, &request)
        .answer
        .expect("answered");
    assert_eq!(reply.missing, events[..2], "two envelopes fill the budget");
    assert_eq!(
        reply.holds,
        rill_engine::Holdings::Difference {
            lacking: vec![],
            extra: events.iter().map(|e| e.hash()).collect(),
        },
        "all three named"
    );
}

#[test]
fn a_leader_admits_every_valid_event_a_replica_reports_not_only_quorum_ones() {
    let mut net = Net::new(EngineConfig::default());
    let lone = message(&key(2), (0, net.genesis.hash()), 1);
    let block = (1..).find(|b| net.leader_of(*b) == 0).unwrap();
    let own = message(&key(2), (0, net.genesis.hash()), 2);
    net.engines[0].add_event(0, net.stream, own).unwrap();
    let requests = net.block(0, block, 1000);
    assert!(!requests.is_empty());
    let reply = rill_engine::ProposalReply {
        num: 1,
        prev_hash: net.genesis.hash(),
        holds: rill_engine::Holdings::Listed(vec![lone.hash()]),
        snapshot_vote: false,
        missing: vec![lone.clone()],
    };
    let mut effects = net.engines[0].handle(
        1001,
        Input::Response {
            from: net.addrs[1],
            stream: net.stream,
            response: Response::Proposal(reply),
        },
    );
    // Node 2 holds nothing; its answer closes the round.
    let empty = rill_engine::ProposalReply {
        num: 1,
        prev_hash: net.genesis.hash(),
        holds: rill_engine::Holdings::Listed(vec![]),
        snapshot_vote: false,
        missing: vec![],
    };
    effects.extend(net.engines[0].handle(
        1002,
        Input::Response {
            from: net.addrs[2],
            stream: net.stream,
            response: Response::Proposal(empty),
        },
    ));
    assert!(effects.iter().any(
        |x| matches!(x, Effect::Store(StoreOp::AddToMinipool { event, .. }) if *event == lone)
    ));
    assert!(effects.iter().any(
        |x| matches!(x, Effect::Gossip { message: Gossip::EventInPool(h), .. } if *h == lone.hash())
    ));
    // Before the cut one node of three held it: it waits for the next round.
    assert!(!effects.iter().any(|x| matches!(
        x,
        Effect::Store(StoreOp::StoreCandidate { miniblock, .. }) if miniblock.events().contains(&lone)
    )));
}

#[test]
fn gossip_an_honest_node_may_send_is_ignored_and_only_forgery_is_rejected() {
    let mut net = Net::new(EngineConfig::default());
    let stream = net.stream;
    let from = net.addrs[1];
    let e = message(&key(2), (0, net.genesis.hash()), 1);
    net.engines[0].add_event(0, stream, e.clone()).unwrap();
    let verdict = |net: &mut Net, event| {
        net.engines[0]
            .gossip(5, from, stream, PeerGossip::Events(vec![event]))
            .answer
    };
    // A duplicate, and a stranger's message (membership may have changed): honest races.
    assert_eq!(verdict(&mut net, e.clone()), Verdict::Ignore);
    let stranger = message(&key(77), (0, net.genesis.hash()), 1);
    assert_eq!(verdict(&mut net, stranger), Verdict::Ignore);
    // An inception forwarded as an event: no honest node forwards that.
    let inception = rill_protocol::envelope::inception(
        StreamId([3; 32]),
        pb::StreamSettings::default(),
        0,
        &key(2),
    );
    assert_eq!(verdict(&mut net, inception), Verdict::Reject);
    // An event naming a miniblock 0 the stream does not have.
    let forged = message(&key(2), (0, B256::repeat_byte(5)), 3);
    assert_eq!(verdict(&mut net, forged), Verdict::Reject);
    assert!(Reject::StaleMiniblock { num: 0, window: 1 }.is_honest_race());
    assert!(!Reject::BadPayload("x").is_honest_race());
}

#[test]
fn a_header_stamped_ahead_of_the_replicas_clock_is_refused() {
    let mut net = Net::new(EngineConfig::default());
    let block = 5;
    net.block(1, block, 1_000_000);
    let leader = SEEDS[net.leader_of(block)];
    let skew = EngineConfig::default().max_clock_skew_ms;
    let late = net.candidate(leader, block, 1_000_000 + skew + 1, 1);
    let answer = net.engines[1].candidate(1_000_000, key(leader).address(), net.stream, late);
    assert!(matches!(
        answer.answer,
        CandidateVerdict::Refused(Reject::FutureTimestamp { .. })
    ));
    let fine = net.candidate(leader, block, 1_000_000 + skew, 1);
    let answer = net.engines[1].candidate(1_000_000, key(leader).address(), net.stream, fine);
    assert_eq!(answer.answer, CandidateVerdict::Stored);
}

#[test]
fn a_candidate_elected_long_before_the_chains_head_is_refused() {
    let mut net = Net::new(EngineConfig::default());
    net.block(1, 5, 1000);
    net.engines[1].handle(1000, Input::ChainHead(50));
    let leader = SEEDS[net.leader_of(5)];
    let old = net.candidate(leader, 5, 2000, 1);
    let answer = net.engines[1].candidate(2000, key(leader).address(), net.stream, old);
    assert!(matches!(
        answer.answer,
        CandidateVerdict::Refused(Reject::StaleTurn { block: 5, head: 50 })
    ));
}

#[test]
fn blocks_replayed_far_behind_the_chains_head_elect_no_one() {
    let mut net = Net::new(EngineConfig::default());
    let e = message(&key(2), (0, net.genesis.hash()), 1);
    net.engines[0].add_event(0, net.stream, e).unwrap();
    // After a restart the node learns the head, then replays old blocks.
    net.engines[0].handle(0, Input::ChainHead(100));
    for number in 1..90 {
        let effects = net.block(0, number, 1000 + number);
        assert!(
            !effects.iter().any(|x| matches!(
                x,
                Effect::Send {
                    request: Request::Proposal(_),
                    ..
                }
            )),
            "block {number} is too old to lead"
        );
    }
    let led = (100..).find(|b| net.leader_of(*b) == 0).unwrap();
    for number in 90..=led {
        net.block(0, number, 5000 + number);
    }
    // By now a current block elected node 0 and it led (the request went out at `led`).
}

#[test]
fn a_fetched_miniblock_that_the_elected_leader_did_not_produce_is_refused() {
    let mut net = Net::new(EngineConfig::default());
    let block = 7;
    let elected = SEEDS[net.leader_of(block)];
    let impostor = SEEDS.into_iter().find(|s| *s != elected).unwrap();
    let forged = net.candidate(impostor, block, 50, 1);
    net.engines[2].handle(
        10,
        Input::MiniblockRegistered {
            stream: net.stream,
            num: 1,
            hash: forged.hash(),
        },
    );
    let effects = net.engines[2].handle(
        20,
        Input::Response {
            from: net.addrs[0],
            stream: net.stream,
            response: Response::Miniblocks {
                miniblocks: vec![forged],
                candidates: vec![],
                randomness: vec![(block, randao(block))],
            },
        },
    );
    assert!(effects.iter().any(|x| matches!(
        x,
        Effect::Rejected {
            reason: Reject::WrongLeader { block: 7, .. },
            ..
        }
    )));
    assert_eq!(net.engines[2].stream(&net.stream).unwrap().head().num, 0);
}

#[test]
fn rules_change_for_miniblocks_elected_from_the_change_block_on() {
    let small = NetworkParams {
        max_events_per_miniblock: 1,
        ..NetworkParams::default()
    };
    let mut net = Net::new(EngineConfig::default());
    net.engines[1].handle(
        0,
        Input::Params {
            from_block: 10,
            params: small,
        },
    );
    // Two events elected at block 9: the old rules allow them.
    net.block(1, 9, 1000);
    let before = SEEDS[net.leader_of(9)];
    let two = net.candidate(before, 9, 2000, 2);
    let answer = net.engines[1].candidate(2000, key(before).address(), net.stream, two);
    assert_eq!(answer.answer, CandidateVerdict::Stored);
    // The same at block 10 breaks the new rules.
    net.block(1, 10, 3000);
    let after = SEEDS[net.leader_of(10)];
    let two = net.candidate(after, 10, 4000, 2);
    let answer = net.engines[1].candidate(4000, key(after).address(), net.stream, two);
    assert!(matches!(
        answer.answer,
        CandidateVerdict::Refused(Reject::BadHeader("too many events"))
    ));
}

#[test]
fn a_departing_node_is_not_elected_and_a_failed_one_is_not_waited_for() {
    let mut net = Net::new(EngineConfig::default());
    for engine in &mut net.engines {
        engine.handle(
            0,
            Input::NodeStatus {
                node: key(10).address(),
                from_block: 0,
                status: NodeStatus::Departing,
            },
        );
        engine.handle(
            0,
            Input::NodeStatus {
                node: key(12).address(),
                from_block: 0,
                status: NodeStatus::Failed,
            },
        );
    }
    // Node 11 is the only one elected; it asks node 10 (departing, still serving) and not
    // node 12 (failed).
    let e = message(&key(2), (0, net.genesis.hash()), 1);
    net.engines[1].add_event(0, net.stream, e).unwrap();
    let effects = net.block(1, 1, 1000);
    let asked: Vec<Address> = effects
        .iter()
        .filter_map(|x| match x {
            Effect::Send {
                to,
                request: Request::Proposal(_),
                ..
            } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![key(10).address()]);
    for number in 2..40 {
        for i in [0, 2] {
            let effects = net.block(i, number, 1000 * number);
            assert!(
                !effects.iter().any(|x| matches!(
                    x,
                    Effect::Send {
                        request: Request::Proposal(_),
                        ..
                    }
                )),
                "only Operational nodes lead"
            );
        }
    }
}
