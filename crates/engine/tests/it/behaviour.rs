//! Protocol behaviour over three hand-driven engines (nodes keys 10, 11, 12).

use alloy_primitives::{Address, B256};
use rill_engine::{
    CandidateVerdict, Effect, Engine, EngineConfig, Gossip, Holdings, Input, Notification,
    PeerGossip, ProposalReply, ProposalRequest, Request, Response, RestoredStream, StoreOp,
    StreamView,
};
use rill_protocol::ParsedMiniblock;

use crate::support::{key, message, registrations};
use crate::three::{Three, proposal_requests, randao};

#[test]
fn announced_event_that_never_arrives_is_fetched_from_the_announcer_after_the_delay() {
    let mut t = Three::new();
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    t.engines[0].add_event(0, t.stream, e.clone()).unwrap();
    // Node 2 misses NewEventReceived but hears NewEventInPool from node 1.
    let from = t.addrs[1];
    let answer = t.engines[2].gossip(10, from, t.stream, PeerGossip::InPool(vec![e.hash()]));
    assert!(answer.effects.is_empty());
    let early = t.engines[2].handle(100, Input::Tick);
    assert!(
        early.iter().all(|x| !matches!(x, Effect::Send { .. })),
        "not before the delay"
    );
    let due = t.engines[2].handle(10 + EngineConfig::default().fetch_delay_ms, Input::Tick);
    let asked = due
        .iter()
        .find_map(|x| match x {
            Effect::Send {
                to,
                request: Request::GetEvents(hashes),
                ..
            } => Some((*to, hashes.clone())),
            _ => None,
        })
        .expect("a fetch");
    assert_eq!(asked, (t.addrs[1], vec![e.hash()]));
    let got = t.engines[2].handle(
        300,
        Input::Response {
            from: t.addrs[1],
            stream: t.stream,
            response: Response::Events(vec![e.clone()]),
        },
    );
    assert!(
        got.iter().any(
            |x| matches!(x, Effect::Store(StoreOp::AddToMinipool { event, .. }) if *event == e)
        )
    );
    assert!(got.iter().any(
        |x| matches!(x, Effect::Gossip { message: Gossip::EventInPool(h), .. } if *h == e.hash())
    ));
}

#[test]
fn event_held_by_a_majority_is_reported_as_quorum() {
    let mut t = Three::new();
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    let admitted = t.engines[0].add_event(0, t.stream, e.clone()).unwrap();
    assert!(
        !admitted
            .iter()
            .any(|x| matches!(x, Effect::Notify(Notification::EventQuorum { .. })))
    );
    let from = t.addrs[1];
    let effects = t.engines[0]
        .gossip(5, from, t.stream, PeerGossip::InPool(vec![e.hash()]))
        .effects;
    assert!(effects.iter().any(|x| matches!(
        x,
        Effect::Notify(Notification::EventQuorum { hash, .. }) if *hash == e.hash()
    )));
}

/// Whether `effects` report `hash` (quorum, replicated).
fn reached(effects: &[Effect], hash: B256) -> (bool, bool) {
    let quorum = effects.iter().any(
        |x| matches!(x, Effect::Notify(Notification::EventQuorum { hash: h, .. }) if *h == hash),
    );
    let replicated = effects.iter().any(|x| {
        matches!(x, Effect::Notify(Notification::EventReplicated { hash: h, .. }) if *h == hash)
    });
    (quorum, replicated)
}

/// What node 0 reported when `from` was found holding `hash` at `now`.
fn reported(t: &mut Three, now: u64, from: Address, hash: B256) -> (bool, bool) {
    let effects = t.engines[0]
        .gossip(now, from, t.stream, PeerGossip::InPool(vec![hash]))
        .effects;
    reached(&effects, hash)
}

#[test]
fn writers_are_paced_to_every_replica_heard_from_lately() {
    let mut t = Three::new();
    let window = EngineConfig::default().pace_window_ms;
    let (one, two) = (t.addrs[1], t.addrs[2]);
    // Nothing heard from node 2 yet: a quorum is all there is to wait for.
    let first = message(&key(2), (0, t.genesis.hash()), 1);
    let admitted = t.engines[0].add_event(0, t.stream, first.clone()).unwrap();
    assert_eq!(reached(&admitted, first.hash()), (false, false));
    assert_eq!(reported(&mut t, 1, one, first.hash()), (true, true));
    // Node 2 holds it too: it is heard from now, and nothing is reported twice.
    assert_eq!(reported(&mut t, 2, two, first.hash()), (false, false));
    // The next event waits for node 2 beyond the quorum.
    let second = message(&key(2), (0, t.genesis.hash()), 2);
    t.engines[0]
        .add_event(10, t.stream, second.clone())
        .unwrap();
    assert_eq!(reported(&mut t, 11, one, second.hash()), (true, false));
    assert_eq!(reported(&mut t, 12, two, second.hash()), (false, true));
    // Node 2 falls silent for longer than the window (crashed, cut off): it no longer holds
    // the writers back.
    let third = message(&key(2), (0, t.genesis.hash()), 3);
    let later = 12 + window + 1;
    t.engines[0]
        .add_event(later, t.stream, third.clone())
        .unwrap();
    assert_eq!(reported(&mut t, later + 1, one, third.hash()), (true, true));
}

#[test]
fn peers_that_announced_an_event_before_it_arrived_hold_it() {
    let mut t = Three::new();
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    // Node 1's announcement overtakes node 2's copy of the event.
    let announced =
        t.engines[0].gossip(1, t.addrs[1], t.stream, PeerGossip::InPool(vec![e.hash()]));
    assert!(
        !announced
            .effects
            .iter()
            .any(|x| matches!(x, Effect::Notify(_)))
    );
    let arrived = t.engines[0]
        .gossip(2, t.addrs[2], t.stream, PeerGossip::Events(vec![e.clone()]))
        .effects;
    // All three hold it now: it is replicated at once, and not fetched.
    assert_eq!(reached(&arrived, e.hash()), (true, true));
    let config = EngineConfig::default();
    let later = t.engines[0].handle(
        2 + config.fetch_delay_ms + config.push_delay_ms,
        Input::Tick,
    );
    assert!(
        !later
            .iter()
            .any(|x| matches!(x, Effect::Send { .. } | Effect::GossipTo { .. })),
        "neither fetched nor pushed: {later:?}"
    );
}

#[test]
fn an_announced_event_whose_copy_is_being_checked_is_fetched_only_late() {
    let mut t = Three::new();
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    let fetches = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|x| {
                matches!(
                    x,
                    Effect::Send {
                        request: Request::GetEvents(_),
                        ..
                    }
                )
            })
            .count()
    };
    let delay = EngineConfig::default().fetch_delay_ms;
    let from = t.addrs[1];
    let _ = t.engines[2].gossip(
        10,
        from,
        t.stream,
        PeerGossip::InPoolArriving(vec![e.hash()]),
    );
    let soon = t.engines[2].handle(10 + delay, Input::Tick);
    assert_eq!(fetches(&soon), 0, "the copy being checked may still get in");
    // It did not (its check was shed): the announcer is asked after all.
    let late = t.engines[2].handle(10 + 10 * delay, Input::Tick);
    assert_eq!(fetches(&late), 1);
}

#[test]
fn an_event_sent_again_is_answered_without_being_opened() {
    let mut t = Three::new();
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    let origin = t.addrs[0];
    let _ = t.engines[1].gossip(1, origin, t.stream, PeerGossip::Events(vec![e.clone()]));
    assert!(
        t.engines[1]
            .stream(&t.stream)
            .unwrap()
            .holds_event(&e.hash())
    );
    let unknown = B256::repeat_byte(9);
    assert!(
        !t.engines[1]
            .stream(&t.stream)
            .unwrap()
            .holds_event(&unknown)
    );
    // Node 2 pushes it too; node 1 found it held and did not open it: it counts node 2 as a
    // holder (a quorum of three now) and tells node 2 it holds it, so the pushes stop.
    let pusher = t.addrs[2];
    let answer = t.engines[1].gossip(
        2,
        pusher,
        t.stream,
        PeerGossip::HeldAlready(vec![e.hash(), unknown]),
    );
    assert_eq!(answer.answer, rill_engine::Verdict::Ignore);
    let told: Vec<_> = answer
        .effects
        .iter()
        .filter_map(|x| match x {
            Effect::GossipTo {
                to,
                message: Gossip::EventInPool(h),
                ..
            } => Some((*to, *h)),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        vec![(pusher, e.hash())],
        "only the held one, only to its sender"
    );
    assert!(
        !answer
            .effects
            .iter()
            .any(|x| matches!(x, Effect::Store(_) | Effect::Send { .. })),
        "nothing stored again, nothing fetched"
    );
    // A node that is not one of the stream's is refused, as for events.
    let outsider = key(99).address();
    let refused = t.engines[1].gossip(
        3,
        outsider,
        t.stream,
        PeerGossip::HeldAlready(vec![e.hash()]),
    );
    assert_eq!(refused.answer, rill_engine::Verdict::Reject);
}

#[test]
fn quorum_event_missing_at_the_leader_is_taken_from_the_replies() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    // Nodes 1 and 2 hold an event the leader never saw.
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    let own = message(&key(2), (0, t.genesis.hash()), 2);
    t.engines[leader]
        .add_event(0, t.stream, own.clone())
        .unwrap();
    for i in [1, 2] {
        let from = t.addrs[3 - i];
        let _ = t.engines[i].gossip(1, from, t.stream, PeerGossip::Events(vec![e.clone()]));
    }
    let (replies, candidate_effects) = t.round(leader, block);
    for reply in &replies {
        assert_eq!(
            reply.missing.len(),
            1,
            "the replica sends what the leader lacks"
        );
    }
    let candidate = candidate_effects
        .iter()
        .find_map(|x| match x {
            Effect::Store(StoreOp::StoreCandidate { miniblock, .. }) => Some(miniblock.clone()),
            _ => None,
        })
        .expect("a candidate");
    // `own` is held by the leader alone: 1 of 3 is no majority. `e` is held by 2 of 3.
    let hashes: Vec<B256> = candidate.events().iter().map(|x| x.hash()).collect();
    assert_eq!(hashes, vec![e.hash()]);
    // The store is told an event is pooled (its envelope is not looked up) only if a write
    // before the candidate's put it in the minipool.
    let mut admitted = Vec::new();
    for effect in &candidate_effects {
        match effect {
            Effect::Store(StoreOp::AddToMinipool { event, .. }) => admitted.push(event.hash()),
            Effect::Store(StoreOp::StoreCandidate { pooled, .. }) => {
                assert_eq!(pooled, &vec![admitted.contains(&e.hash())]);
                break;
            }
            _ => {}
        }
    }
    assert!(
        registrations(&candidate_effects).is_empty(),
        "not registered before a replica stored it"
    );
}

#[test]
fn replies_built_on_another_head_are_ignored() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    t.engines[leader].add_event(0, t.stream, e.clone()).unwrap();
    t.lead(leader, block);
    let stale = ProposalReply {
        num: 1,
        prev_hash: B256::repeat_byte(3),
        holds: Holdings::Listed(vec![e.hash()]),
        snapshot_vote: false,
        missing: vec![],
    };
    for i in [1, 2] {
        let effects = t.engines[leader].handle(
            1001,
            Input::Response {
                from: t.addrs[i],
                stream: t.stream,
                response: Response::Proposal(stale.clone()),
            },
        );
        assert!(effects.is_empty(), "a reply on another head does not count");
    }
    // After the timeout the leader cuts with what it has: 1 of 3 is no quorum, so nothing.
    let effects = t.engines[leader].handle(5000, Input::Tick);
    assert!(
        !effects
            .iter()
            .any(|x| matches!(x, Effect::Store(StoreOp::StoreCandidate { .. })))
    );
}

#[test]
fn a_replica_proposes_its_difference_from_the_leaders_pool_and_lists_it_for_an_older_leader() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let [shared, leaders, replicas] =
        [1, 2, 3].map(|salt| message(&key(2), (0, t.genesis.hash()), salt));
    for e in [&shared, &leaders] {
        t.engines[leader].add_event(0, t.stream, e.clone()).unwrap();
    }
    for e in [&shared, &replicas] {
        t.engines[1].add_event(0, t.stream, e.clone()).unwrap();
    }
    let requests = proposal_requests(t.lead(leader, block));
    let (_, request) = requests
        .into_iter()
        .find(|(to, _)| *to == t.addrs[1])
        .expect("a request to replica 1");
    assert!(request.difference);
    assert_eq!(
        request.hashes.len(),
        2,
        "the leader's pool: {:?}",
        request.hashes
    );
    let lacking = (0u32..)
        .zip(&request.hashes)
        .filter(|(_, h)| **h == leaders.hash())
        .map(|(i, _)| i)
        .collect();
    let propose = |t: &mut Three, request: &ProposalRequest| {
        t.engines[1]
            .propose(1001, t.addrs[leader], t.stream, request)
            .answer
            .expect("answered")
    };
    let reply = propose(&mut t, &request);
    assert_eq!(
        reply.holds,
        Holdings::Difference {
            lacking,
            extra: vec![replicas.hash()],
        }
    );
    assert_eq!(reply.missing, vec![replicas.clone()]);
    // A leader of an older version does not ask for a difference: the whole list.
    let older = ProposalRequest {
        difference: false,
        ..request
    };
    let Holdings::Listed(mut listed) = propose(&mut t, &older).holds else {
        panic!("a list for an older leader");
    };
    listed.sort();
    let mut held = vec![shared.hash(), replicas.hash()];
    held.sort();
    assert_eq!(listed, held);
}

#[test]
fn a_proposal_naming_positions_past_the_request_counts_its_replica_silent() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    t.engines[leader].add_event(0, t.stream, e.clone()).unwrap();
    t.lead(leader, block);
    let reply = |lacking| ProposalReply {
        num: 1,
        prev_hash: t.genesis.hash(),
        holds: Holdings::Difference {
            lacking,
            extra: vec![],
        },
        snapshot_vote: false,
        missing: vec![],
    };
    // The request named one hash: position 1 is past it. Replica 2 holds the event.
    let mut effects = Vec::new();
    for (i, lacking) in [(1, vec![1]), (2, vec![])] {
        effects.extend(t.engines[leader].handle(
            1001,
            Input::Response {
                from: t.addrs[i],
                stream: t.stream,
                response: Response::Proposal(reply(lacking)),
            },
        ));
    }
    // The round is cut at once, without waiting for replica 1, and its malformed reply
    // counted for nothing: the event is in the candidate on the leader's and replica 2's
    // holding, and only replica 2 is spared its envelope.
    let candidate = Three::candidate_in(&effects);
    assert_eq!(candidate.events(), &[e]);
    let held: Vec<(Address, Vec<bool>)> = effects
        .iter()
        .filter_map(|x| match x {
            Effect::Send {
                to,
                request: Request::SaveCandidate { held, .. },
                ..
            } => Some((*to, held.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        held,
        vec![(t.addrs[1], vec![false]), (t.addrs[2], vec![true])]
    );
}

#[test]
fn registered_miniblock_a_replica_lacks_is_fetched_and_promoted() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    for i in 0..3 {
        t.engines[i].add_event(0, t.stream, e.clone()).unwrap();
    }
    let (_, leader_effects) = t.round(leader, block);
    let candidate = Three::candidate_in(&leader_effects);
    let registration = registrations(&t.offer(leader, &candidate, &[1]))[0];
    // Replica 2 never got the candidate; the registration log tells it to catch up.
    let log = Input::MiniblockRegistered {
        stream: t.stream,
        num: 1,
        hash: registration.hash,
    };
    let effects = t.engines[2].handle(2000, log);
    let (from, from_num, to_num) = effects
        .iter()
        .find_map(|x| match x {
            Effect::Send {
                to,
                request: Request::GetMiniblocks { from, to: last },
                ..
            } => Some((*to, *from, *last)),
            _ => None,
        })
        .expect("a catch-up fetch");
    assert_ne!(from, t.addrs[2]);
    assert_eq!((from_num, to_num), (1, 1));
    let effects = t.engines[2].handle(
        2100,
        Input::Response {
            from,
            stream: t.stream,
            response: Response::Miniblocks {
                miniblocks: vec![candidate.clone()],
                candidates: vec![],
                randomness: vec![],
            },
        },
    );
    assert!(effects.iter().any(
        |x| matches!(x, Effect::Store(StoreOp::Promote { miniblock, .. }) if miniblock.hash() == candidate.hash())
    ));
    let view = t.engines[2].stream(&t.stream).unwrap();
    assert_eq!(view.head().num, 1);
    assert!(
        view.minipool_hashes().is_empty(),
        "promoted events leave the minipool"
    );
}

#[test]
fn a_fetched_miniblock_the_registry_never_registered_is_not_promoted() {
    let mut t = Three::new();
    let block = t.block_led_by(1);
    t.engines[2].handle(
        0,
        Input::ChainBlock {
            number: block,
            prevrandao: randao(block),
        },
    );
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    let header = rill_protocol::pb::MiniblockHeader {
        num: 1,
        prev_hash: t.genesis.hash().to_vec(),
        timestamp_ms: 50,
        event_hashes: vec![e.hash().to_vec()],
        event_num_offset: 1,
        snapshot: None,
        prev_snapshot_num: 0,
        chain_block: block,
    };
    let forged = ParsedMiniblock::seal(header, vec![e], &key(11)).unwrap();
    t.engines[2].handle(
        1,
        Input::MiniblockRegistered {
            stream: t.stream,
            num: 1,
            hash: B256::repeat_byte(4),
        },
    );
    let effects = t.engines[2].handle(
        2,
        Input::Response {
            from: t.addrs[1],
            stream: t.stream,
            response: Response::Miniblocks {
                miniblocks: vec![forged],
                candidates: vec![],
                randomness: vec![],
            },
        },
    );
    assert!(
        !effects
            .iter()
            .any(|x| matches!(x, Effect::Store(StoreOp::Promote { .. })))
    );
    assert_eq!(t.engines[2].stream(&t.stream).unwrap().head().num, 0);
}

#[test]
fn restart_rebuilds_members_head_and_minipool_from_the_store() {
    let mut t = Three::new();
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    t.engines[1].add_event(0, t.stream, e.clone()).unwrap();
    let nodes = t.addrs.clone();
    let mut restarted = Engine::new(key(11), EngineConfig::default());
    restarted
        .restore(RestoredStream {
            id: t.stream,
            nodes,
            miniblocks: vec![t.genesis.clone()],
            minipool: vec![e.clone()],
            candidates: vec![],
            gap: None,
        })
        .unwrap();
    let view = restarted.stream(&t.stream).unwrap();
    assert_eq!(view.head().hash, t.genesis.hash());
    assert_eq!(view.minipool_hashes(), vec![e.hash()]);
    assert!(view.members().contains(&key(2).address()));
    assert!(matches!(
        restarted.add_event(1, t.stream, e.clone()),
        Err(rill_engine::Reject::Duplicate(_))
    ));
}

#[test]
fn event_from_a_member_whose_join_this_replica_has_not_promoted_yet_waits_instead_of_being_refused()
{
    let mut t = Three::new();
    let carol = key(30);
    let join = crate::support::member(&carol, (0, t.genesis.hash()), true, carol.address());
    let hello = message(&carol, (0, t.genesis.hash()), 7);
    // Node 0 already promoted carol's join; node 2 has not, and hears carol's message.
    let effects = t.engines[2]
        .gossip(
            10,
            t.addrs[0],
            t.stream,
            PeerGossip::Events(vec![hello.clone()]),
        )
        .effects;
    assert!(
        !effects.iter().any(|e| matches!(
            e,
            Effect::Rejected { .. } | Effect::Store(StoreOp::AddToMinipool { .. })
        )),
        "neither refused nor stored yet: {effects:?}"
    );
    // Node 2 now promotes the miniblock with the join.
    let block = t.block_led_by(1);
    t.engines[2].handle(
        20,
        Input::ChainBlock {
            number: block,
            prevrandao: randao(block),
        },
    );
    let header = rill_protocol::pb::MiniblockHeader {
        num: 1,
        prev_hash: t.genesis.hash().to_vec(),
        timestamp_ms: 50,
        event_hashes: vec![join.hash().to_vec()],
        event_num_offset: 1,
        snapshot: None,
        prev_snapshot_num: 0,
        chain_block: block,
    };
    let miniblock = ParsedMiniblock::seal(header, vec![join], &key(11)).unwrap();
    let hash = miniblock.hash();
    let verdict = t.engines[2].candidate(30, t.addrs[1], t.stream, miniblock);
    assert_eq!(verdict.answer, CandidateVerdict::Stored);
    let effects = t.engines[2].handle(
        40,
        Input::MiniblockRegistered {
            stream: t.stream,
            num: 1,
            hash,
        },
    );
    assert!(
        effects.iter().any(
            |e| matches!(e, Effect::Store(StoreOp::AddToMinipool { event, .. }) if *event == hello)
        ),
        "{effects:?}"
    );
    assert!(effects.iter().any(|e| matches!(e, Effect::Gossip { message: Gossip::EventInPool(h), .. } if *h == hello.hash())));
}

/// The node is told when the rounds it leads are settled (its registrar then sends without
/// waiting out its window): a round is in progress from the block that elects the node until
/// its candidate's write quorum, when the registration is made, and only on the leader.
#[test]
fn a_round_is_in_progress_from_its_block_until_its_registration() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    for engine in &mut t.engines {
        engine.add_event(0, t.stream, e.clone()).unwrap();
    }
    assert!(
        !t.engines[leader].leads_rounds(),
        "nothing before the block"
    );
    let (_, effects) = t.round(leader, block);
    let candidate = Three::candidate_in(&effects);
    assert!(
        t.engines[leader].leads_rounds(),
        "the candidate waits for its write quorum"
    );
    assert!(
        (1..3).all(|i| !t.engines[i].leads_rounds()),
        "replicas lead nothing"
    );
    let effects = t.offer(leader, &candidate, &[1]);
    assert_eq!(registrations(&effects).len(), 1);
    assert!(!t.engines[leader].leads_rounds(), "settled once registered");
}

/// A round whose proposals never come is settled when it times out, though it registers
/// nothing (the only event is the leader's own, no majority).
#[test]
fn a_round_cut_with_nothing_to_register_is_settled_at_its_timeout() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let own = message(&key(2), (0, t.genesis.hash()), 1);
    t.engines[leader].add_event(0, t.stream, own).unwrap();
    let requests = t.engines[leader].handle(
        1000,
        Input::ChainBlock {
            number: block,
            prevrandao: randao(block),
        },
    );
    assert!(requests.iter().any(|x| matches!(x, Effect::Send { .. })));
    assert!(t.engines[leader].leads_rounds(), "waiting for proposals");
    let timeout = EngineConfig::default().proposal_timeout_ms;
    let effects = t.engines[leader].handle(1000 + timeout, Input::Tick);
    assert!(registrations(&effects).is_empty());
    assert!(
        !t.engines[leader].leads_rounds(),
        "the cut round is settled"
    );
}
