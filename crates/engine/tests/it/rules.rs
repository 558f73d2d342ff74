//! One test per admission and candidate rule: each refusal has its own reason, and nothing is
//! stored for a refused input.

use alloy_primitives::{Address, B256};
use rill_engine::{
    Answer, CandidateVerdict, Effect, Engine, EngineConfig, Input, PeerGossip, Reject, StoreOp,
    StreamView, Verdict,
};
use rill_protocol::{ParsedMiniblock, Payload, StreamId, pb};

use crate::support::{Solo, event, genesis, key, member, message};

fn refused(result: Result<Vec<Effect>, Reject>) -> Reject {
    match result {
        Ok(effects) => panic!("expected a refusal, got {} effects", effects.len()),
        Err(reason) => reason,
    }
}

#[test]
fn member_message_is_admitted_stored_and_gossiped() {
    let mut solo = Solo::new(EngineConfig::default());
    let e = message(&solo.creator.clone(), solo.head(), 1);
    let effects = solo.add(e.clone()).unwrap();
    assert!(
        effects.iter().any(
            |x| matches!(x, Effect::Store(StoreOp::AddToMinipool { event, .. }) if *event == e)
        )
    );
    assert!(effects.iter().any(|x| matches!(x, Effect::Gossip { .. })));
    assert_eq!(
        solo.engine.stream(&solo.stream).unwrap().minipool_hashes(),
        vec![e.hash()]
    );
}

#[test]
fn event_for_an_unknown_stream_is_refused() {
    let mut solo = Solo::new(EngineConfig::default());
    let e = message(&solo.creator.clone(), solo.head(), 1);
    let other = StreamId([9; 32]);
    assert_eq!(
        refused(solo.engine.add_event(1, other, e)),
        Reject::UnknownStream(other)
    );
}

#[test]
fn oversized_event_is_refused() {
    let mut solo = Solo::new(EngineConfig {
        params: rill_engine::NetworkParams {
            max_event_bytes: 100,
            ..Default::default()
        },
        ..EngineConfig::default()
    });
    let big = event(
        &solo.creator.clone(),
        solo.head(),
        1,
        Payload::Message(pb::Message { data: vec![0; 200] }),
    );
    assert!(matches!(
        refused(solo.add(big)),
        Reject::TooLarge { max: 100, .. }
    ));
}

#[test]
fn event_on_a_miniblock_outside_the_recency_window_is_stale() {
    let mut solo = Solo::new(EngineConfig {
        recency_window: 2,
        admission_margin: 0,
        ..EngineConfig::default()
    });
    let creator = solo.creator.clone();
    let genesis_ref = solo.head();
    for salt in 0..3 {
        solo.add(message(&creator, solo.head(), 100 + salt))
            .unwrap();
        solo.next_block();
    }
    assert_eq!(solo.head().0, 3);
    let old = message(&creator, genesis_ref, 1);
    assert_eq!(
        refused(solo.add(old)),
        Reject::StaleMiniblock { num: 0, window: 2 }
    );
}

#[test]
fn an_event_enters_the_minipool_only_with_the_admission_margin_left() {
    // Window 4, margin 2: a node admits events on the last 2 miniblocks, so an acknowledged
    // event stays includable for 2 more.
    let mut solo = Solo::new(EngineConfig {
        recency_window: 4,
        admission_margin: 2,
        ..EngineConfig::default()
    });
    let creator = solo.creator.clone();
    let mut refs = vec![solo.head()];
    for salt in 0..3 {
        solo.add(message(&creator, solo.head(), 100 + salt))
            .unwrap();
        solo.next_block();
        refs.push(solo.head());
    }
    assert_eq!(solo.head().0, 3);
    assert_eq!(
        refused(solo.add(message(&creator, refs[0], 1))),
        Reject::StaleMiniblock { num: 0, window: 2 }
    );
    solo.add(message(&creator, refs[1], 2))
        .expect("two miniblocks old: admitted");
}

#[test]
fn event_on_a_miniblock_the_stream_lacks_is_refused() {
    let mut solo = Solo::new(EngineConfig::default());
    let creator = solo.creator.clone();
    let future = message(&creator, (5, B256::repeat_byte(1)), 1);
    assert!(matches!(
        refused(solo.add(future)),
        Reject::UnknownMiniblock { num: 5, .. }
    ));
    let forged = message(&creator, (0, B256::repeat_byte(1)), 2);
    assert!(matches!(
        refused(solo.add(forged)),
        Reject::UnknownMiniblock { num: 0, .. }
    ));
}

#[test]
fn duplicate_in_minipool_or_recent_miniblock_is_refused() {
    let mut solo = Solo::new(EngineConfig::default());
    let e = message(&solo.creator.clone(), solo.head(), 1);
    solo.add(e.clone()).unwrap();
    assert_eq!(refused(solo.add(e.clone())), Reject::Duplicate(e.hash()));
    solo.next_block();
    assert_eq!(solo.head().0, 1);
    assert_eq!(refused(solo.add(e.clone())), Reject::Duplicate(e.hash()));
}

#[test]
fn message_from_a_non_member_is_refused() {
    let mut solo = Solo::new(EngineConfig::default());
    let stranger = key(50);
    let e = message(&stranger, solo.head(), 1);
    assert_eq!(refused(solo.add(e)), Reject::NotAMember(stranger.address()));
}

#[test]
fn join_counts_only_from_the_miniblock_that_includes_it() {
    let mut solo = Solo::new(EngineConfig::default());
    let joiner = key(51);
    solo.add(member(&joiner, solo.head(), true, joiner.address()))
        .unwrap();
    // Still not a member: the join is only in the minipool.
    let early = message(&joiner, solo.head(), 1);
    assert_eq!(
        refused(solo.add(early)),
        Reject::NotAMember(joiner.address())
    );
    solo.next_block();
    solo.add(message(&joiner, solo.head(), 2)).unwrap();
    // Joining again is refused.
    let again = member(&joiner, solo.head(), true, joiner.address());
    assert_eq!(
        refused(solo.add(again)),
        Reject::AlreadyMember(joiner.address())
    );
}

#[test]
fn leave_counts_only_from_the_miniblock_that_includes_it() {
    let mut solo = Solo::new(EngineConfig::default());
    let creator = solo.creator.clone();
    solo.add(member(&creator, solo.head(), false, creator.address()))
        .unwrap();
    // Still a member until the leave is promoted.
    solo.add(message(&creator, solo.head(), 1)).unwrap();
    solo.next_block();
    let after = message(&creator, solo.head(), 2);
    assert_eq!(
        refused(solo.add(after)),
        Reject::NotAMember(creator.address())
    );
}

#[test]
fn only_members_may_add_others_or_remove_anyone() {
    let mut solo = Solo::new(EngineConfig::default());
    let stranger = key(52);
    let invite = member(&stranger, solo.head(), true, key(53).address());
    assert_eq!(
        refused(solo.add(invite)),
        Reject::NotAMember(stranger.address())
    );
    let kick = member(&stranger, solo.head(), false, solo.creator.address());
    assert_eq!(
        refused(solo.add(kick)),
        Reject::NotAMember(stranger.address())
    );
    let creator = solo.creator.clone();
    let leave_non_member = member(&creator, solo.head(), false, stranger.address());
    assert_eq!(
        refused(solo.add(leave_non_member)),
        Reject::NotAMember(stranger.address())
    );
}

#[test]
fn inceptions_and_headers_cannot_be_added_as_events() {
    let mut solo = Solo::new(EngineConfig::default());
    let creator = solo.creator.clone();
    let g = genesis(StreamId([8; 32]), &creator, &creator);
    assert_eq!(
        refused(solo.add(g.events()[0].clone())),
        Reject::BadPayload("an inception")
    );
    assert_eq!(
        refused(solo.add(g.header_event().clone())),
        Reject::BadPayload("a miniblock header")
    );
}

#[test]
fn gossip_from_a_peer_that_is_not_a_stream_node_is_refused_and_not_stored() {
    let mut solo = Solo::new(EngineConfig::default());
    let outsider = Address::repeat_byte(0xee);
    let e = message(&solo.creator.clone(), solo.head(), 1);
    let answer = solo
        .engine
        .gossip(5, outsider, solo.stream, PeerGossip::Events(vec![e]));
    assert_eq!(answer.answer, Verdict::Reject);
    assert!(matches!(
        answer.effects.as_slice(),
        [Effect::Rejected { reason: Reject::NotAStreamNode(a), .. }] if *a == outsider
    ));
    assert!(
        solo.engine
            .stream(&solo.stream)
            .unwrap()
            .minipool_hashes()
            .is_empty()
    );
}

#[test]
fn genesis_without_an_inception_is_refused() {
    let node = key(1);
    let mut engine = Engine::new(node.clone(), EngineConfig::default());
    let stream = StreamId([3; 32]);
    let good = genesis(stream, &key(2), &node);
    // A genesis whose inception names another stream.
    let effects = engine.handle(
        0,
        Input::StreamAllocated {
            stream: StreamId([4; 32]),
            nodes: vec![node.address()],
            genesis: good,
        },
    );
    assert!(matches!(
        effects.as_slice(),
        [Effect::Rejected {
            reason: Reject::BadGenesis(_),
            ..
        }]
    ));
    assert_eq!(engine.stream_ids().count(), 0);
}

/// A three-node stream seen from replica `me` (key 11), with nodes keys 10, 11, 12.
struct Replica {
    engine: Engine,
    stream: StreamId,
    genesis: ParsedMiniblock,
}

impl Replica {
    fn new() -> Self {
        let nodes: Vec<Address> = [10, 11, 12].map(|s| key(s).address()).to_vec();
        let stream = StreamId([5; 32]);
        let genesis = genesis(stream, &key(2), &key(10));
        let mut engine = Engine::new(key(11), EngineConfig::default());
        engine.handle(
            0,
            Input::StreamAllocated {
                stream,
                nodes,
                genesis: genesis.clone(),
            },
        );
        Self {
            engine,
            stream,
            genesis,
        }
    }

    /// The leader of block `number` (prevrandao = number) and its key seed.
    fn leader_seed(&self, number: u64) -> u8 {
        let nodes: Vec<Address> = [10, 11, 12].map(|s| key(s).address()).to_vec();
        let leader = rill_engine::elect_leader(&self.stream, number, &randao(number), &nodes);
        [10, 11, 12]
            .into_iter()
            .find(|s| key(*s).address() == leader)
            .unwrap()
    }

    fn block(&mut self, number: u64) {
        self.engine.handle(
            1000 * number,
            Input::ChainBlock {
                number,
                prevrandao: randao(number),
            },
        );
    }

    fn candidate(&mut self, from_seed: u8, miniblock: ParsedMiniblock) -> Answer<CandidateVerdict> {
        self.engine
            .candidate(5000, key(from_seed).address(), self.stream, miniblock)
    }

    fn header(&self, block: u64) -> pb::MiniblockHeader {
        pb::MiniblockHeader {
            num: 1,
            prev_hash: self.genesis.hash().to_vec(),
            timestamp_ms: 10,
            event_hashes: vec![],
            event_num_offset: 1,
            snapshot: None,
            prev_snapshot_num: 0,
            chain_block: block,
        }
    }

    fn events(&self, salt: u64) -> Vec<rill_protocol::ParsedEvent> {
        vec![message(&key(2), (0, self.genesis.hash()), salt)]
    }
}

fn randao(number: u64) -> B256 {
    B256::from(alloy_primitives::U256::from(number * 31 + 7))
}

fn seal(
    mut header: pb::MiniblockHeader,
    events: Vec<rill_protocol::ParsedEvent>,
    seed: u8,
) -> ParsedMiniblock {
    header.event_hashes = events.iter().map(|e| e.hash().to_vec()).collect();
    ParsedMiniblock::seal(header, events, &key(seed)).unwrap()
}

/// The reason a candidate was refused; the refusal is also reported as the only effect, and
/// nothing is stored.
fn rejection(answer: &Answer<CandidateVerdict>) -> Reject {
    let CandidateVerdict::Refused(reason) = &answer.answer else {
        panic!("expected a refusal, got {:?}", answer.answer);
    };
    match answer.effects.as_slice() {
        [
            Effect::Rejected {
                reason: reported, ..
            },
        ] => assert_eq!(reported, reason),
        other => panic!("expected one rejection, got {other:?}"),
    }
    reason.clone()
}

#[test]
fn valid_candidate_from_the_elected_leader_is_stored() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let answer = r.candidate(leader, seal(r.header(1), r.events(1), leader));
    assert_eq!(answer.answer, CandidateVerdict::Stored);
    assert!(
        matches!(
            answer.effects.as_slice(),
            [Effect::Store(StoreOp::StoreCandidate { .. })]
        ),
        "{:?}",
        answer.effects
    );
}

#[test]
fn candidate_signed_by_a_node_that_was_not_elected_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let other = [10, 11, 12].into_iter().find(|s| *s != leader).unwrap();
    let effects = r.candidate(other, seal(r.header(1), r.events(1), other));
    assert!(matches!(
        rejection(&effects),
        Reject::WrongLeader { block: 1, .. }
    ));
}

#[test]
fn candidate_on_another_head_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let mut header = r.header(1);
    header.prev_hash = vec![9; 32];
    let effects = r.candidate(leader, seal(header, r.events(1), leader));
    assert!(matches!(rejection(&effects), Reject::BadPrevHash { .. }));
}

#[test]
fn candidate_with_a_non_increasing_timestamp_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let mut header = r.header(1);
    header.timestamp_ms = 1;
    let effects = r.candidate(leader, seal(header, r.events(1), leader));
    assert_eq!(
        rejection(&effects),
        Reject::BadTimestamp { head: 1, got: 1 }
    );
}

#[test]
fn candidate_with_a_wrong_event_offset_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let mut header = r.header(1);
    header.event_num_offset = 7;
    let effects = r.candidate(leader, seal(header, r.events(1), leader));
    assert!(matches!(rejection(&effects), Reject::BadHeader(_)));
}

#[test]
fn candidate_with_an_inadmissible_event_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let stranger = message(&key(60), (0, r.genesis.hash()), 1);
    let effects = r.candidate(leader, seal(r.header(1), vec![stranger], leader));
    match rejection(&effects) {
        Reject::InadmissibleEvent { index: 0, reason } => {
            assert_eq!(*reason, Reject::NotAMember(key(60).address()))
        }
        other => panic!("{other:?}"),
    }
    let e = r.events(1).remove(0);
    let twice = r.candidate(leader, seal(r.header(1), vec![e.clone(), e], leader));
    assert!(matches!(
        rejection(&twice),
        Reject::InadmissibleEvent { index: 1, .. }
    ));
}

#[test]
fn candidate_naming_a_forgotten_chain_block_is_refused() {
    let mut r = Replica::new();
    for number in 300..560 {
        r.block(number);
    }
    // Block 1 is older than anything this node remembers.
    let leader = r.leader_seed(1);
    let effects = r.candidate(leader, seal(r.header(1), r.events(1), leader));
    assert_eq!(rejection(&effects), Reject::UnknownChainBlock(1));
}

#[test]
fn candidate_for_a_block_not_seen_yet_waits_for_it() {
    let mut r = Replica::new();
    let leader = r.leader_seed(1);
    let answer = r.candidate(leader, seal(r.header(1), r.events(1), leader));
    assert_eq!(answer.answer, CandidateVerdict::Deferred);
    assert!(answer.effects.is_empty(), "held until block 1 arrives");
    let effects = r.engine.handle(
        1000,
        Input::ChainBlock {
            number: 1,
            prevrandao: randao(1),
        },
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Store(StoreOp::StoreCandidate { .. }))),
        "{effects:?}"
    );
}

#[test]
fn candidate_from_outside_the_stream_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let effects = r.candidate(70, seal(r.header(1), r.events(1), 70));
    assert_eq!(
        rejection(&effects),
        Reject::NotAStreamNode(key(70).address())
    );
}

#[test]
fn every_reject_reason_has_its_own_metric_name() {
    let reasons = [
        Reject::UnknownStream(StreamId::default()),
        Reject::NotAStreamNode(Address::ZERO),
        Reject::TooLarge { size: 0, max: 0 },
        Reject::StaleMiniblock { num: 0, window: 0 },
        Reject::UnknownMiniblock {
            num: 0,
            hash: B256::ZERO,
        },
        Reject::Duplicate(B256::ZERO),
        Reject::NotAMember(Address::ZERO),
        Reject::AlreadyMember(Address::ZERO),
        Reject::BadPayload(""),
        Reject::Malformed(rill_protocol::MiniblockError::MissingHeader),
        Reject::WrongNum {
            expected: 0,
            got: 0,
        },
        Reject::BadPrevHash {
            expected: B256::ZERO,
            got: B256::ZERO,
        },
        Reject::WrongLeader {
            expected: Address::ZERO,
            got: Address::ZERO,
            block: 0,
        },
        Reject::UnknownChainBlock(0),
        Reject::BadTimestamp { head: 0, got: 0 },
        Reject::BadHeader(""),
        Reject::InadmissibleEvent {
            index: 0,
            reason: Box::new(Reject::BadPayload("")),
        },
        Reject::BadGenesis(""),
    ];
    let names: std::collections::HashSet<_> = reasons.iter().map(Reject::code).collect();
    assert_eq!(names.len(), reasons.len());
}

#[test]
fn candidate_with_a_snapshot_before_one_is_due_is_refused() {
    let mut r = Replica::new();
    r.block(1);
    let leader = r.leader_seed(1);
    let mut header = r.header(1);
    header.snapshot = Some(pb::Snapshot {
        stream_id: r.stream.0.to_vec(),
        members: vec![key(2).address().to_vec()],
        settings: Some(pb::StreamSettings::default()),
        event_count: 2,
    });
    let effects = r.candidate(leader, seal(header, r.events(1), leader));
    assert_eq!(
        rejection(&effects),
        Reject::BadHeader("a snapshot before one is due")
    );
}
