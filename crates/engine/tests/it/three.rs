//! Three hand-driven engines of one stream (node keys 10, 11, 12) and the steps of a round
//! between them, for the behaviour tests.

use alloy_primitives::{Address, B256, U256};
use rill_engine::{
    CandidateVerdict, Effect, Engine, EngineConfig, Input, ProposalReply, ProposalRequest, Request,
    Response, StoreOp, elect_leader,
};
use rill_protocol::{ParsedMiniblock, StreamId};

use crate::support::{genesis, key};

pub(crate) struct Three {
    pub(crate) engines: Vec<Engine>,
    pub(crate) addrs: Vec<Address>,
    pub(crate) stream: StreamId,
    pub(crate) genesis: ParsedMiniblock,
}

impl Three {
    pub(crate) fn new() -> Self {
        let seeds = [10u8, 11, 12];
        let nodes: Vec<Address> = seeds.map(|s| key(s).address()).to_vec();
        let stream = StreamId([6; 32]);
        let genesis = genesis(stream, &key(2), &key(10));
        let engines = seeds
            .iter()
            .map(|s| {
                let mut engine = Engine::new(key(*s), EngineConfig::default());
                engine.handle(
                    0,
                    Input::StreamAllocated {
                        stream,
                        nodes: nodes.clone(),
                        genesis: genesis.clone(),
                    },
                );
                engine
            })
            .collect();
        Self {
            engines,
            addrs: nodes,
            stream,
            genesis,
        }
    }

    pub(crate) fn index(&self, address: Address) -> usize {
        (0..3).find(|i| self.addrs[*i] == address).unwrap()
    }

    /// A block number whose leader is node `i`.
    pub(crate) fn block_led_by(&self, i: usize) -> u64 {
        let nodes: Vec<Address> = (0..3).map(|j| self.addrs[j]).collect();
        (1..)
            .find(|b| elect_leader(&self.stream, *b, &randao(*b), &nodes) == self.addrs[i])
            .unwrap()
    }
}

impl Three {
    /// Chain block `block` on the leader alone, at 1000 ms: its effects (its proposal
    /// requests, when it has something to cut).
    pub(crate) fn lead(&mut self, leader: usize, block: u64) -> Vec<Effect> {
        self.engines[leader].handle(
            1000,
            Input::ChainBlock {
                number: block,
                prevrandao: randao(block),
            },
        )
    }

    /// Runs a leader round at `block`: the leader asks, every replica answers, and the leader
    /// gets the replies. Returns the replies and the leader's effects.
    pub(crate) fn round(&mut self, leader: usize, block: u64) -> (Vec<ProposalReply>, Vec<Effect>) {
        // Every node sees the block; the leader's effects are its requests.
        for i in (0..3).filter(|i| *i != leader) {
            self.engines[i].handle(
                999,
                Input::ChainBlock {
                    number: block,
                    prevrandao: randao(block),
                },
            );
        }
        let requests = self.lead(leader, block);
        let (mut replies, mut leader_effects) = (Vec::new(), Vec::new());
        for (to, request) in proposal_requests(requests) {
            let replica = self.index(to);
            let from = self.addrs[leader];
            let answer = self.engines[replica].propose(1001, from, self.stream, &request);
            let reply = answer.answer.expect("a stream node's request is answered");
            replies.push(reply.clone());
            leader_effects.extend(self.engines[leader].handle(
                1002,
                Input::Response {
                    from: to,
                    stream: self.stream,
                    response: Response::Proposal(reply),
                },
            ));
        }
        (replies, leader_effects)
    }
}

impl Three {
    /// The leader's candidate among `effects`.
    pub(crate) fn candidate_in(effects: &[Effect]) -> ParsedMiniblock {
        effects
            .iter()
            .find_map(|x| match x {
                Effect::Store(StoreOp::StoreCandidate { miniblock, .. }) => Some(miniblock.clone()),
                _ => None,
            })
            .expect("a candidate")
    }

    /// Hands the leader's candidate to `replicas` and their answers back to the leader.
    /// Returns the leader's effects.
    pub(crate) fn offer(
        &mut self,
        leader: usize,
        candidate: &ParsedMiniblock,
        replicas: &[usize],
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for &i in replicas {
            let verdict = self.engines[i]
                .candidate(1500, self.addrs[leader], self.stream, candidate.clone())
                .answer;
            let response = match verdict {
                CandidateVerdict::Stored => Response::CandidateSaved(candidate.hash()),
                CandidateVerdict::Deferred => Response::CandidateDeferred(candidate.hash()),
                _ => Response::CandidateRefused(candidate.hash()),
            };
            effects.extend(self.engines[leader].handle(
                1600,
                Input::Response {
                    from: self.addrs[i],
                    stream: self.stream,
                    response,
                },
            ));
        }
        effects
    }
}

/// The proposal requests among a leader's `effects`, with the node each goes to.
pub(crate) fn proposal_requests(effects: Vec<Effect>) -> Vec<(Address, ProposalRequest)> {
    effects
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Send {
                to,
                request: Request::Proposal(request),
                ..
            } => Some((to, request)),
            _ => None,
        })
        .collect()
}

pub(crate) fn randao(number: u64) -> B256 {
    B256::from(U256::from(number))
}
