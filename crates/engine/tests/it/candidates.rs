//! A leader's candidate over three hand-driven engines: who stores it, what each replica is
//! sent, and when it is registered or given up.

use alloy_primitives::Address;
use rill_engine::{
    CandidateVerdict, Effect, EngineConfig, Input, PeerGossip, Request, Response, StoreOp,
    StreamView, elect_leader,
};
use rill_protocol::ParsedEvent;

use crate::support::{key, message, registrations};
use crate::three::{Three, randao};

#[test]
fn a_candidate_is_registered_once_more_than_half_of_the_nodes_stored_it() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    for i in 0..3 {
        t.engines[i].add_event(0, t.stream, e.clone()).unwrap();
    }
    let (_, effects) = t.round(leader, block);
    let candidate = Three::candidate_in(&effects);
    assert!(registrations(&effects).is_empty());
    // One replica stored it: with the leader, 2 of 3.
    let effects = t.offer(leader, &candidate, &[1]);
    let registered = registrations(&effects);
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].hash, candidate.hash());
    // The second answer registers nothing more.
    assert!(registrations(&t.offer(leader, &candidate, &[2])).is_empty());
}

#[test]
fn a_stored_candidate_tells_the_store_which_of_its_events_the_minipool_holds() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    // Nodes 0 and 1 hold `e` (a majority); node 2 has never seen it.
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    for i in 0..2 {
        t.engines[i].add_event(0, t.stream, e.clone()).unwrap();
    }
    let pooled_in = |effects: &[Effect]| {
        effects.iter().find_map(|x| match x {
            Effect::Store(StoreOp::StoreCandidate { pooled, .. }) => Some(pooled.clone()),
            _ => None,
        })
    };
    let (_, effects) = t.round(leader, block);
    assert_eq!(
        pooled_in(&effects),
        Some(vec![true]),
        "the leader's own pool"
    );
    let candidate = Three::candidate_in(&effects);
    for (replica, pooled) in [(1, true), (2, false)] {
        let answer =
            t.engines[replica].candidate(1500, t.addrs[leader], t.stream, candidate.clone());
        assert!(matches!(answer.answer, CandidateVerdict::Stored));
        assert_eq!(
            pooled_in(&answer.effects),
            Some(vec![pooled]),
            "replica {replica}: its envelope is looked up (and written) only if not pooled"
        );
    }
}

#[test]
fn a_candidate_leaves_out_for_each_replica_what_it_proposed_and_is_sent_whole_when_asked_again() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    // Every node holds `a`; nodes 0 and 1 hold `b` (a majority), node 2 does not.
    let a = message(&key(2), (0, t.genesis.hash()), 1);
    let b = message(&key(2), (0, t.genesis.hash()), 2);
    for i in 0..3 {
        t.engines[i].add_event(0, t.stream, a.clone()).unwrap();
    }
    for i in 0..2 {
        t.engines[i].add_event(0, t.stream, b.clone()).unwrap();
    }
    let (_, effects) = t.round(leader, block);
    let candidate = Three::candidate_in(&effects);
    let sent = |effects: &[Effect]| -> Vec<(Address, Vec<bool>)> {
        effects
            .iter()
            .filter_map(|x| match x {
                Effect::Send {
                    to,
                    request: Request::SaveCandidate { miniblock, held },
                    ..
                } if miniblock.hash() == candidate.hash() => Some((*to, held.clone())),
                _ => None,
            })
            .collect()
    };
    let held_of = |e: &ParsedEvent| {
        let index = candidate.events().iter().position(|x| x.hash() == e.hash());
        index.expect("in the candidate")
    };
    let mut offers = sent(&effects);
    offers.sort();
    let mut expected = Vec::new();
    for (replica, holds) in [(1, [true, true]), (2, [true, false])] {
        let mut held = vec![false; 2];
        held[held_of(&a)] = holds[0];
        held[held_of(&b)] = holds[1];
        expected.push((t.addrs[replica], held));
    }
    expected.sort();
    assert_eq!(
        offers, expected,
        "each replica gets what it did not propose"
    );
    // Replica 1 lost an event it proposed and asks for time: the resend carries everything.
    let deferred = t.engines[leader].handle(
        1600,
        Input::Response {
            from: t.addrs[1],
            stream: t.stream,
            response: Response::CandidateDeferred(candidate.hash()),
        },
    );
    assert!(sent(&deferred).is_empty(), "not resent at once");
    let resent: Vec<_> = (1..=50)
        .flat_map(|k| sent(&t.engines[leader].handle(1600 + k * 100, Input::Tick)))
        .collect();
    assert_eq!(resent, vec![(t.addrs[1], Vec::new())], "whole, once");
}

#[test]
fn a_candidate_no_replica_stores_is_given_up_and_its_events_stay_in_the_pool() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    for i in 0..3 {
        t.engines[i].add_event(0, t.stream, e.clone()).unwrap();
    }
    let (_, effects) = t.round(leader, block);
    let candidate = Three::candidate_in(&effects);
    // Nothing comes back; past the candidate timeout it is given up, never registered.
    let timeout = EngineConfig::default().candidate_timeout_ms;
    let effects = t.engines[leader].handle(1002 + timeout + 1, Input::Tick);
    assert!(registrations(&effects).is_empty());
    let late = t.engines[leader].handle(
        1002 + timeout + 2,
        Input::Response {
            from: t.addrs[1],
            stream: t.stream,
            response: Response::CandidateSaved(candidate.hash()),
        },
    );
    assert!(
        registrations(&late).is_empty(),
        "a given-up candidate stays given up"
    );
    let view = t.engines[leader].stream(&t.stream).unwrap();
    assert_eq!(view.head().num, 0);
    assert_eq!(
        view.minipool_hashes(),
        vec![e.hash()],
        "its event waits for the next one"
    );
}

#[test]
fn a_candidate_refused_by_every_replica_is_given_up_at_once() {
    let mut t = Three::new();
    let leader = 0;
    let block = t.block_led_by(leader);
    let e = message(&key(2), (0, t.genesis.hash()), 1);
    t.engines[leader].add_event(0, t.stream, e.clone()).unwrap();
    for i in [1, 2] {
        let _ = t.engines[i].gossip(1, t.addrs[0], t.stream, PeerGossip::Events(vec![e.clone()]));
    }
    let (_, effects) = t.round(leader, block);
    let candidate = Three::candidate_in(&effects);
    let refuse = |t: &mut Three, i: usize, now: u64| {
        let effects = t.engines[leader].handle(
            now,
            Input::Response {
                from: t.addrs[i],
                stream: t.stream,
                response: Response::CandidateRefused(candidate.hash()),
            },
        );
        assert!(registrations(&effects).is_empty());
    };
    // Both were sent it without the envelope they proposed: a refusal of that (as a node of
    // an older version answers) is answered with the whole candidate before it counts.
    for i in [1, 2] {
        refuse(&mut t, i, 1500);
    }
    let mut resent: Vec<(Address, bool)> = t.engines[leader]
        .handle(1501, Input::Tick)
        .into_iter()
        .filter_map(|x| match x {
            Effect::Send {
                to,
                request: Request::SaveCandidate { held, .. },
                ..
            } => Some((to, held.is_empty())),
            _ => None,
        })
        .collect();
    resent.sort();
    let mut whole = vec![(t.addrs[1], true), (t.addrs[2], true)];
    whole.sort();
    assert_eq!(resent, whole, "the whole candidate, to both");
    for i in [1, 2] {
        refuse(&mut t, i, 1600);
    }
    // A new round may start at once (nothing waits for the given-up candidate).
    let next = (block + 1..)
        .find(|b| elect_leader(&t.stream, *b, &randao(*b), &t.addrs) == t.addrs[leader])
        .unwrap();
    let effects = t.engines[leader].handle(
        3000,
        Input::ChainBlock {
            number: next,
            prevrandao: randao(next),
        },
    );
    assert!(
        effects.iter().any(|x| matches!(
            x,
            Effect::Send {
                request: Request::Proposal(_),
                ..
            }
        )),
        "{effects:?}"
    );
}
