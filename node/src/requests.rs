//! The one request driver: every request the engine sends to another node goes out here, and
//! its answer (opened on the worker pool) or its failure comes back to the loop as
//! `Input::Response`. A request that cannot be sent, times out or gets an answer that does not
//! open counts as failed: the engine always hears back.

use std::collections::HashMap;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use rill_engine::{Input, Request, RequestKind, Response};
use rill_p2p::{NodeRequest, NodeResponse, P2p, PeerId};
use rill_protocol::{Limits, ParsedEvent, ParsedMiniblock, StreamId, pb};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::batch::{self, Pending};
use crate::blocks::Blocks;
use crate::convert;
use crate::directory::{SharedDirectory, read};
use crate::event_loop::LoopMsg;
use crate::faults::{Action, Hook, MessageKind};
use crate::metrics::{KindLabels, Metrics};
use crate::workers::{Lane, Workers};

/// Sends the engine's requests.
#[derive(Clone)]
pub(crate) struct Requests {
    pub(crate) me: Address,
    pub(crate) p2p: P2p,
    pub(crate) mailbox: mpsc::Sender<LoopMsg>,
    pub(crate) workers: Workers,
    pub(crate) directory: SharedDirectory,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    pub(crate) faults: Hook,
    pub(crate) blocks: Blocks,
    /// How long a request waits for its answer (the transport's timeout).
    pub(crate) timeout: Duration,
    /// The largest request-response message (bounds a round batch).
    pub(crate) max_message_bytes: usize,
    /// Round requests waiting for their batch.
    pub(crate) pending: Pending,
}

fn fault_kind(kind: RequestKind) -> MessageKind {
    match kind {
        RequestKind::Proposal => MessageKind::Proposal,
        RequestKind::SaveCandidate(_) => MessageKind::Candidate,
        RequestKind::GetEvents => MessageKind::GetEvents,
        RequestKind::GetMiniblocks => MessageKind::GetMiniblocks,
    }
}

impl Requests {
    /// Sends `request` to `to` about `stream`; the answer comes back to the loop. Proposals
    /// and candidates join the peer's next round batch (see `batch.rs`).
    pub(crate) fn send(&self, to: Address, stream: StreamId, request: Request) {
        let kind = request.kind();
        self.metrics
            .requests
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
        let peer = read(&self.directory).node(&to).map(|r| r.peer);
        let action = self.faults.action(fault_kind(kind), self.me, to);
        let this = self.clone();
        let round = matches!(kind, RequestKind::Proposal | RequestKind::SaveCandidate(_));
        let wire = convert::request_to_pb(stream, request);
        tokio::spawn(async move {
            let peer = match (peer, action) {
                (None, _) => {
                    debug!(%to, "no address for the node");
                    return this.deliver(to, stream, kind, None).await;
                }
                (Some(_), Action::Drop) => {
                    // Lost on the way: the asker hears nothing until its timeout.
                    tokio::time::sleep(this.timeout).await;
                    return this.deliver(to, stream, kind, None).await;
                }
                (Some(peer), Action::Delay(by)) => {
                    tokio::time::sleep(by).await;
                    peer
                }
                (Some(peer), Action::Deliver) => peer,
            };
            let wire = match wire {
                NodeRequest::Miniblock(request) if round => {
                    let item = batch::Item {
                        stream,
                        kind,
                        request,
                    };
                    if this.pending.push(to, item) {
                        tokio::time::sleep(batch::WINDOW).await;
                        this.flush(to, peer);
                    }
                    return;
                }
                wire => wire,
            };
            let response = match this.p2p.request(peer, wire).await {
                Ok(answer) => this.open(stream, kind, answer).await,
                Err(e) => {
                    debug!(%to, ?kind, %e, "request failed");
                    None
                }
            };
            this.deliver(to, stream, kind, response).await;
        });
    }

    /// Sends the round requests queued for `to`, in batches, and delivers each item's answer.
    fn flush(&self, to: Address, peer: PeerId) {
        let items = self.pending.take(&to);
        for mut items in batch::chunks(items, self.max_message_bytes) {
            self.metrics.round_batch_items.observe(items.len() as f64);
            let wire = NodeRequest::Miniblock(batch::wire(&mut items));
            let this = self.clone();
            tokio::spawn(async move {
                let answers = match this.p2p.request(peer, wire).await {
                    Ok(NodeResponse::Miniblock(answer)) if items.len() > 1 => {
                        batch::unpack(answer, items.len())
                    }
                    Ok(NodeResponse::Miniblock(answer)) => Some(vec![answer]),
                    Ok(_) => None,
                    Err(e) => {
                        debug!(%to, items = items.len(), %e, "round batch failed");
                        None
                    }
                };
                let answers = answers.map_or_else(
                    || vec![None; items.len()],
                    |a| a.into_iter().map(Some).collect(),
                );
                for (item, answer) in items.into_iter().zip(answers) {
                    let this = this.clone();
                    tokio::spawn(async move {
                        let response = match answer {
                            Some(a) => {
                                this.open(item.stream, item.kind, NodeResponse::Miniblock(a))
                                    .await
                            }
                            None => None,
                        };
                        this.deliver(to, item.stream, item.kind, response).await;
                    });
                }
            });
        }
    }

    /// Hands the engine the answer from `to`, or a failure when there is none.
    async fn deliver(
        &self,
        to: Address,
        stream: StreamId,
        kind: RequestKind,
        response: Option<Response>,
    ) {
        let response = response.unwrap_or_else(|| {
            self.metrics
                .request_failures
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc();
            Response::Failed(kind)
        });
        let input = Input::Response {
            from: to,
            stream,
            response,
        };
        let _ = self.mailbox.send(LoopMsg::Input(input)).await;
    }

    /// The events of `miniblocks` that the stream's minipool holds (asked of the loop).
    async fn pool_events<'a>(
        &self,
        stream: StreamId,
        miniblocks: impl Iterator<Item = &'a pb::Miniblock>,
    ) -> HashMap<B256, ParsedEvent> {
        let hashes = miniblocks
            .flat_map(|m| &m.events)
            .filter_map(|e| B256::try_from(e.hash.as_slice()).ok())
            .collect();
        let (reply, held) = oneshot::channel();
        let ask = LoopMsg::PoolEvents {
            stream,
            hashes,
            reply,
        };
        if self.mailbox.send(ask).await.is_err() {
            return HashMap::new();
        }
        held.await.unwrap_or_default()
    }

    /// Turns an answer into the engine's response, opening what it carries on the workers.
    async fn open(
        &self,
        stream: StreamId,
        kind: RequestKind,
        answer: NodeResponse,
    ) -> Option<Response> {
        use pb::miniblock_response::Kind;
        let limits = self.limits;
        let opener = self.workers.opener(limits);
        match (kind, answer) {
            (RequestKind::SaveCandidate(hash), NodeResponse::Miniblock(r)) => {
                let deferred = pb::ErrorCode::Unavailable as i32;
                Some(match (r.error, r.kind) {
                    (None, Some(Kind::SaveCandidate(_))) => Response::CandidateSaved(hash),
                    // Not judged yet (its chain block), or the replica is busy: ask again.
                    (Some(e), _) if e.code == deferred => Response::CandidateDeferred(hash),
                    _ => Response::CandidateRefused(hash),
                })
            }
            (RequestKind::Proposal, NodeResponse::Miniblock(r)) => {
                let Some(Kind::Propose(reply)) = r.kind else {
                    return None;
                };
                let reply = self
                    .workers
                    .run(Lane::Replication, move || {
                        convert::reply_from_pb(reply, &opener)
                    })
                    .await??;
                Some(Response::Proposal(reply))
            }
            (RequestKind::GetEvents, NodeResponse::Events(r)) => {
                if r.error.is_some() {
                    return None;
                }
                let events = self
                    .workers
                    .run(Lane::Replication, move || {
                        r.envelopes
                            .into_iter()
                            .filter_map(|e| opener.open(e).ok())
                            .collect()
                    })
                    .await?;
                Some(Response::Events(events))
            }
            (RequestKind::GetMiniblocks, NodeResponse::Miniblock(r)) => {
                let Some(Kind::GetMiniblocks(got)) = r.kind else {
                    return None;
                };
                // A replica behind holds most of these events in its minipool already.
                let known = self
                    .pool_events(stream, got.miniblocks.iter().chain(&got.candidates))
                    .await;
                let open = move |wire: Vec<pb::Miniblock>| -> Vec<ParsedMiniblock> {
                    wire.into_iter()
                        .filter_map(|m| opener.open_miniblock(m, &known).ok())
                        .collect()
                };
                let (miniblocks, candidates) = self
                    .workers
                    .run(Lane::Replication, move || {
                        (open(got.miniblocks), open(got.candidates))
                    })
                    .await?;
                self.metrics.catch_up_page.observe(miniblocks.len() as f64);
                let blocks = miniblocks
                    .iter()
                    .chain(&candidates)
                    .map(|m| m.header().chain_block)
                    .collect::<std::collections::BTreeSet<_>>();
                let randomness = self.blocks.randomness(blocks.into_iter().collect()).await;
                Some(Response::Miniblocks {
                    miniblocks,
                    candidates,
                    randomness,
                })
            }
            _ => None,
        }
    }
}
