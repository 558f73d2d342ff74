//! The add path of the client service: an add's share of its stream's budget, its events
//! opened on the workers, admitted through the node's loop, and its answer once they are
//! durable here and, if the client asked, held by a quorum or promoted.

use std::time::Duration;

use rill_protocol::{StreamId, pb};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ClientService, Wait, backlog, code, refuse_all, stopping};
use crate::convert::error;
use crate::event_loop::LoopMsg;
use crate::workers::Lane;

/// How long clients' events wait for the worker threads, which take the replication work
/// first, before the add is refused `UNAVAILABLE` (BENCHMARKS.md, "Backpressure on
/// admission": 1 s kept the devnet's throughput at 64 writers, 5 s lost a fifth of it).
const ADMISSION_WAIT: Duration = Duration::from_secs(1);

impl ClientService {
    /// Takes the events' share of the stream's budget (see [`backlog`]), opens them on the
    /// workers (one job), admits them through the loop (one message, one store write), and
    /// answers once they are durable here (one flush) and, if asked, held by a quorum or
    /// promoted, until the node's ack timeout after `arrived`. What the add waited for first
    /// (a catch-up on a stream this node had not heard of, the stream's backlog, the workers,
    /// the loop, the flush) comes out of that time, so a client (or the node that forwarded
    /// its add) gets a typed `TIMEOUT` before its own request times out. Each event gets its
    /// own result.
    pub(super) async fn add_events(
        &self,
        stream: StreamId,
        envelopes: Vec<pb::Envelope>,
        ack: pb::Ack,
        arrived: Instant,
    ) -> Vec<pb::AddEventResult> {
        let mut results: Vec<pb::AddEventResult> = envelopes
            .iter()
            .map(|e| pb::AddEventResult {
                hash: e.hash.clone(),
                ..Default::default()
            })
            .collect();
        let mut share = match self
            .backlog
            .enter(stream, envelopes.len(), backlog::WAIT)
            .await
        {
            Ok(share) => {
                if share.paced() {
                    self.metrics.client_adds_paced.inc();
                }
                share
            }
            Err(behind) => {
                self.metrics.client_adds_held_back.inc();
                return refuse_all(results, behind);
            }
        };
        let opener = self.workers.opener(self.limits());
        let open = move || {
            envelopes
                .into_iter()
                .map(|e| opener.open(e))
                .collect::<Vec<_>>()
        };
        // Clients' events wait behind the work of keeping up with the other nodes, not for
        // long: a node that stays busy says so, and the client comes back (or goes to
        // another of the stream's nodes).
        let opened = tokio::time::timeout(ADMISSION_WAIT, self.workers.run(Lane::Admission, open));
        let opened = match opened.await {
            Ok(Some(opened)) => opened,
            Ok(None) => return refuse_all(results, stopping()),
            Err(_) => {
                self.metrics.client_adds_held_back.inc();
                return refuse_all(results, backlog::busy_replicating());
            }
        };
        let mut admit = Vec::new();
        let mut refused = Vec::new();
        for (i, opened) in opened.into_iter().enumerate() {
            match opened {
                Ok(event) => admit.push((i, event)),
                Err(e) => {
                    refused.push(e.name());
                    results[i].error = Some(e.to_pb());
                }
            }
        }
        if !refused.is_empty() {
            let _ = self.mailbox.send(LoopMsg::ClientRefused(refused)).await;
        }
        if admit.is_empty() {
            return results;
        }
        // Register before admission, so the moment cannot be missed: the client's wait, if
        // it asked for one, and the budget's (its share goes back once the event is
        // replicated).
        let waits: Vec<_> = admit
            .iter()
            .map(|(_, event)| match ack {
                pb::Ack::Local => None,
                pb::Ack::Quorum => Some(self.acks.wait(event.hash(), Wait::Quorum)),
                pb::Ack::Miniblock => Some(self.acks.wait(event.hash(), Wait::Miniblock)),
            })
            .collect();
        let mut replicated: Vec<_> = admit
            .iter()
            .map(|(_, event)| Some(self.acks.wait(event.hash(), Wait::Replicated)))
            .collect();
        let (reply, admitted) = oneshot::channel();
        let events = admit.iter().map(|(_, event)| event.clone()).collect();
        let sent = self.mailbox.send(LoopMsg::AddEvents {
            stream,
            events,
            reply,
        });
        let verdicts = match sent.await {
            Ok(()) => admitted.await.ok(),
            Err(_) => None,
        };
        let Some(verdicts) = verdicts else {
            drop(waits);
            drop(replicated);
            for (_, event) in &admit {
                self.acks.cancel(&event.hash());
            }
            return refuse_all(results, stopping());
        };
        let mut accepted = Vec::new();
        let mut leased = Vec::new();
        for (((i, event), (verdict, wait)), lease) in admit
            .into_iter()
            .zip(verdicts.into_iter().zip(waits))
            .zip(replicated.iter_mut())
        {
            let hash = event.hash();
            results[i].hash = hash.to_vec();
            match verdict {
                Ok(()) => {
                    leased.push((hash, lease.take().expect("one wait per event")));
                    accepted.push((i, hash, wait));
                }
                Err(reject) => {
                    drop(wait);
                    *lease = None;
                    self.acks.cancel(&hash);
                    results[i].error = Some(error(code(&reject), reject.to_string()));
                }
            }
        }
        share.give_back(share.held().saturating_sub(leased.len()));
        backlog::hold_until_replicated(&self.acks, share, leased);
        // Acknowledge only what is on disk (one flush serves every write since the last).
        if !accepted.is_empty() && !self.writer.durable().await {
            for (i, _, _) in &accepted {
                results[*i].error = Some(error(pb::ErrorCode::Internal, "the store cannot flush"));
            }
            return results;
        }
        let deadline = arrived + self.ack_timeout;
        for (i, hash, wait) in accepted {
            let Some(wait) = wait else { continue };
            match tokio::time::timeout_at(deadline, wait).await {
                Ok(Ok(num)) => results[i].miniblock_num = num.filter(|_| ack == pb::Ack::Miniblock),
                _ => {
                    self.acks.cancel(&hash);
                    results[i].error = Some(error(
                        pb::ErrorCode::Timeout,
                        format!(
                            "event {hash} is in this node's minipool but was not {ack:?}-acknowledged within {:?} of its arrival; check `rill stream get`",
                            self.ack_timeout
                        ),
                    ));
                }
            }
        }
        results
    }
}
