//! What one block costs each node's engine, on the node's loop, with a full minipool: three
//! engines of one stream hold `N` events; one chain block's round runs (the leader's block,
//! each replica's proposal, the leader's cut and signed candidate, each replica's check of
//! it), then the registration's promotion on every engine. The engine is pure, so this is
//! the loop's own share of a block, without the node's IO. `cargo bench -p rill-engine
//! --bench block` (release, one run; several blocks per size, their median).

#![allow(dead_code)] // the tests' builders, of which this uses a few

#[path = "../tests/it/support.rs"]
mod support;
#[path = "../tests/it/three.rs"]
mod three;

use std::time::{Duration, Instant};

use alloy_primitives::B256;
use rill_engine::{
    CandidateVerdict, Input, PeerGossip, Response, StreamView, Verdict, elect_leader,
};
use rill_protocol::ParsedEvent;

use support::{key, message};
use three::{Three, proposal_requests, randao};

const BLOCKS: usize = 7;

/// The steps of one block, each timed on the engine that takes it.
#[derive(Default)]
struct Steps {
    /// The leader's `ChainBlock` (asking for proposals).
    block: Vec<Duration>,
    /// A replica's proposal (mean of the two).
    propose: Vec<Duration>,
    /// The leader's handling of the two proposals: the cut and the signed candidate.
    cut: Vec<Duration>,
    /// A replica's check of the candidate (mean of the two).
    check: Vec<Duration>,
    /// The promotion on one engine (mean of the three).
    promote: Vec<Duration>,
    /// Admitting the block's events: per event, a client's on one engine and the peers' copy
    /// and announcements on the other two.
    admit_per_event: Vec<Duration>,
}

/// The tests' three engines of one stream, driven block after block (the tests' own rounds
/// keep the clock still and time nothing).
struct Net {
    t: Three,
    block: u64,
    salt: u64,
}

impl Net {
    fn new() -> Self {
        Net {
            t: Three::new(),
            block: 0,
            salt: 0,
        }
    }

    fn now(&self) -> u64 {
        self.block * 1000
    }

    fn head(&self) -> (u64, B256) {
        let head = self.t.engines[0]
            .stream(&self.t.stream)
            .expect("a stream")
            .head();
        (head.num, head.hash)
    }

    /// `count` new events on the head (signed outside the timings).
    fn events(&mut self, count: usize) -> Vec<ParsedEvent> {
        let (creator, head) = (key(2), self.head());
        (0..count)
            .map(|_| {
                self.salt += 1;
                message(&creator, head, self.salt)
            })
            .collect()
    }

    /// Every engine admits `events` and hears that the others hold them; returns the time
    /// per event.
    fn admit(&mut self, events: &[ParsedEvent]) -> Duration {
        let now = self.now() + 100;
        let hashes: Vec<B256> = events.iter().map(|e| e.hash()).collect();
        let t = &mut self.t;
        let started = Instant::now();
        for event in events {
            t.engines[0]
                .add_event(now, t.stream, event.clone())
                .expect("admitted");
        }
        for engine in &mut t.engines[1..] {
            let gossip = PeerGossip::Events(events.to_vec());
            let verdict = engine.gossip(now, t.addrs[0], t.stream, gossip).answer;
            assert_eq!(verdict, Verdict::Accept);
        }
        for i in 0..3 {
            for from in (0..3).filter(|j| *j != i).map(|j| t.addrs[j]) {
                let gossip = PeerGossip::InPool(hashes.clone());
                let verdict = t.engines[i].gossip(now, from, t.stream, gossip).answer;
                assert_ne!(verdict, Verdict::Reject);
            }
        }
        started.elapsed() / events.len() as u32
    }

    /// The next block with events in the pool: its round, its candidate's checks, then its
    /// registration and promotion everywhere.
    fn run_block(&mut self, steps: &mut Steps) {
        self.block += 1;
        let (block, now) = (self.block, self.now());
        let t = &mut self.t;
        let stream = t.stream;
        let prevrandao = randao(block);
        let leader = t.index(elect_leader(&stream, block, &prevrandao, &t.addrs));
        let chain_block = Input::ChainBlock {
            number: block,
            prevrandao,
        };
        for i in (0..3).filter(|i| *i != leader) {
            t.engines[i].handle(now, chain_block.clone());
        }
        let started = Instant::now();
        let requests = t.engines[leader].handle(now, chain_block);
        steps.block.push(started.elapsed());

        let (mut propose, mut cut) = (Duration::ZERO, Duration::ZERO);
        let mut effects = Vec::new();
        for (to, request) in proposal_requests(requests) {
            let replica = t.index(to);
            let from = t.addrs[leader];
            let started = Instant::now();
            let answer = t.engines[replica].propose(now + 5, from, stream, &request);
            propose += started.elapsed();
            let response = Response::Proposal(answer.answer.expect("answered"));
            let started = Instant::now();
            let input = Input::Response {
                from: to,
                stream,
                response,
            };
            effects.extend(t.engines[leader].handle(now + 10, input));
            cut += started.elapsed();
        }
        steps.propose.push(propose / 2);
        steps.cut.push(cut);

        let candidate = Three::candidate_in(&effects);
        let mut check = Duration::ZERO;
        for i in (0..3).filter(|i| *i != leader) {
            let from = t.addrs[leader];
            let started = Instant::now();
            let verdict = t.engines[i].candidate(now + 20, from, stream, candidate.clone());
            check += started.elapsed();
            assert_eq!(verdict.answer, CandidateVerdict::Stored);
        }
        steps.check.push(check / 2);

        let registered = Input::MiniblockRegistered {
            stream,
            num: candidate.num(),
            hash: candidate.hash(),
        };
        let started = Instant::now();
        for engine in &mut t.engines {
            engine.handle(now + 500, registered.clone());
        }
        steps.promote.push(started.elapsed() / 3);
        assert_eq!(self.head(), (candidate.num(), candidate.hash()), "promoted");
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    println!(
        "| events per block | leader's block | a replica's proposal | leader's cut and candidate | a replica's check | promotion (each engine) | admission per event (all three) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for size in [1_000, 3_000, 10_000] {
        let mut net = Net::new();
        let mut steps = Steps::default();
        for _ in 0..BLOCKS {
            let events = net.events(size);
            steps.admit_per_event.push(net.admit(&events));
            net.run_block(&mut steps);
        }
        println!(
            "| {size} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:.2?} |",
            median(steps.block),
            median(steps.propose),
            median(steps.cut),
            median(steps.check),
            median(steps.promote),
            median(steps.admit_per_event),
        );
    }
}
