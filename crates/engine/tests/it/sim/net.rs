//! The simulated network: gossip and requests that may be dropped, duplicated or delayed, and
//! how a node serves a request (answers bounded in bytes, like the node's read server).

use std::collections::BTreeSet;

use alloy_primitives::B256;
use rand::Rng;
use rill_engine::{
    CandidateVerdict, Gossip, Input, PeerGossip, Request, RequestKind, Response, StreamView,
};
use rill_protocol::{ParsedEvent, ParsedMiniblock};

use super::{Job, Sim};

/// A request that gets no answer fails after this long (the transport's request timeout).
const REQUEST_TIMEOUT_MS: u64 = 1000;
/// Bytes of events one answer carries at most (small, so catch-up needs many pages).
const PAGE_BYTES: usize = 4_000;

fn bytes(miniblock: &ParsedMiniblock) -> usize {
    miniblock
        .events()
        .iter()
        .map(|e| e.envelope().event.len())
        .sum::<usize>()
        + 200
}

impl Sim {
    /// A message over the faulty network: maybe dropped, maybe twice, after a random delay.
    /// Returns whether it was sent at all.
    pub(super) fn send(&mut self, job: impl Fn() -> Job) -> bool {
        if self.faults && self.rng.gen_bool(0.05) {
            return false;
        }
        let copies = if self.faults && self.rng.gen_bool(0.03) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.gen_range(1..80);
            self.schedule(delay, job());
        }
        true
    }

    pub(super) fn gossip(&mut self, from: usize, to: usize, message: &Gossip) {
        let gossip = match message {
            Gossip::EventReceived(event) => PeerGossip::Events(vec![event.clone()]),
            Gossip::EventInPool(hash) => PeerGossip::InPool(vec![*hash]),
        };
        self.send(|| Job::Gossip {
            from,
            to,
            gossip: gossip.clone(),
        });
    }

    /// A request over the faulty network. If it (or its answer) is lost, or the peer is down,
    /// the requester hears that it failed after the request timeout.
    pub(super) fn request(&mut self, from: usize, to: usize, request: Request) {
        let kind = request.kind();
        if !self.send(|| Job::Request {
            from,
            to,
            request: request.clone(),
        }) {
            self.fail_later(from, to, kind);
        }
    }

    fn fail_later(&mut self, from: usize, to: usize, kind: RequestKind) {
        let input = Input::Response {
            from: self.nodes[to].key.address(),
            stream: self.stream,
            response: Response::Failed(kind),
        };
        self.schedule(REQUEST_TIMEOUT_MS, Job::Deliver { to: from, input });
    }

    /// `to` stores (or refuses) the candidate `asker` sent it; the answer to send back.
    fn save_candidate(
        &mut self,
        now: u64,
        asker: alloy_primitives::Address,
        to: usize,
        miniblock: ParsedMiniblock,
    ) -> Response {
        let hash = miniblock.hash();
        let stream = self.stream;
        let engine = self.live(to).expect("live");
        let answer = engine.candidate(now, asker, stream, miniblock);
        if std::env::var_os("RILL_SIM_DEBUG").is_some() {
            eprintln!(
                "t={} node {to} answers candidate {hash}: {:?}",
                self.now, answer.answer
            );
        }
        self.apply(to, answer.effects);
        match answer.answer {
            CandidateVerdict::Stored => Response::CandidateSaved(hash),
            CandidateVerdict::Deferred => Response::CandidateDeferred(hash),
            _ => Response::CandidateRefused(hash),
        }
    }

    /// `to` serves `from`'s request and answers it.
    pub(super) fn serve(&mut self, from: usize, to: usize, request: Request) {
        let kind = request.kind();
        if self.nodes[to].engine.is_none() {
            return self.fail_later(from, to, kind);
        }
        let (now, stream, asker) = (self.clock(to), self.stream, self.nodes[from].key.address());
        let response = match request {
            Request::Proposal(request) => {
                let engine = self.live(to).expect("live");
                let answer = engine.propose(now, asker, stream, &request);
                self.apply(to, answer.effects);
                match answer.answer {
                    Ok(reply) => Response::Proposal(reply),
                    Err(_) => Response::Failed(kind),
                }
            }
            Request::SaveCandidate { miniblock, held } => {
                let hash = miniblock.hash();
                let engine = self.live(to).expect("live");
                // As the node's router does: an envelope left out must be in the replica's
                // minipool, else it answers "unavailable" and the leader sends it whole. Now
                // and then the replica lost one it proposed (a fault).
                let pool = engine.stream(&stream);
                let lacks = held.iter().zip(miniblock.events()).any(|(held, e)| {
                    *held && pool.and_then(|view| view.pool_event(&e.hash())).is_none()
                });
                let lost = self.faults && held.contains(&true) && self.rng.gen_bool(0.1);
                if lacks || lost {
                    self.omissions_lacked += 1;
                    Response::CandidateDeferred(hash)
                } else {
                    self.save_candidate(now, asker, to, miniblock)
                }
            }
            Request::GetEvents(hashes) => {
                // Served from the store (minipool and miniblocks), up to a page of bytes.
                let store = &self.nodes[to].store;
                let wanted: BTreeSet<B256> = hashes.into_iter().collect();
                let mut budget = PAGE_BYTES;
                let events: Vec<ParsedEvent> = store
                    .pool
                    .iter()
                    .chain(store.miniblocks.iter().flat_map(|m| m.events()))
                    .filter(|e| wanted.contains(&e.hash()))
                    .take_while(|e| {
                        let size = e.envelope().event.len();
                        let fits = size <= budget;
                        budget = budget.saturating_sub(size);
                        fits
                    })
                    .cloned()
                    .collect();
                Response::Events(events)
            }
            Request::GetMiniblocks {
                from: first,
                to: last,
            } => {
                // A page of promoted miniblocks (at least one), then the candidates after them.
                let store = &self.nodes[to].store;
                let mut budget = PAGE_BYTES;
                let mut miniblocks: Vec<ParsedMiniblock> = Vec::new();
                // Contiguous from `first`, as rill-store serves them (a replica that jumped
                // lacks what came before the jump).
                for (k, m) in store
                    .miniblocks
                    .iter()
                    .skip_while(|m| m.num() < first)
                    .take_while(|m| m.num() <= last)
                    .enumerate()
                {
                    if m.num() != first + k as u64 {
                        break;
                    }
                    if !miniblocks.is_empty() && bytes(m) > budget {
                        break;
                    }
                    budget = budget.saturating_sub(bytes(m));
                    miniblocks.push(m.clone());
                }
                let complete = miniblocks.last().is_none_or(|m| m.num() >= last);
                let candidates: Vec<ParsedMiniblock> = if complete {
                    store
                        .candidates
                        .iter()
                        .filter(|c| c.num() >= first)
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                let randomness = miniblocks
                    .iter()
                    .chain(&candidates)
                    .filter_map(|m| {
                        let block = m.header().chain_block;
                        self.randomness.get(&block).map(|r| (block, *r))
                    })
                    .collect();
                Response::Miniblocks {
                    miniblocks,
                    candidates,
                    randomness,
                }
            }
        };
        let input = Input::Response {
            from: self.nodes[to].key.address(),
            stream,
            response,
        };
        if !self.send(|| Job::Deliver {
            to: from,
            input: input.clone(),
        }) {
            self.fail_later(from, to, kind);
        }
    }
}
