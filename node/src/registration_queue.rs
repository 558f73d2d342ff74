//! The registration queue: hands the engine's registrations to the registrar strictly in the
//! order the engine made them, each run's once this node's copies of their candidates are
//! durable. Durability comes in write order, so waiting in turn costs nothing, and the registry
//! then takes a chained candidate after its base. After them it tells the registrar when the
//! rounds this node leads are settled (nothing more is coming: the batch may leave). It does
//! not batch or send transactions (the registrar does).

use std::pin::Pin;
use std::time::Instant;

use rill_chain::{Leading, MiniblockRegistration, Registrar, RegistrationOutcome};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::faults::Action;

/// One run's registrations, in order, with the write that makes their candidates durable.
struct Registrations {
    entries: Vec<MiniblockRegistration>,
    durable: Pin<Box<dyn Future<Output = bool> + Send>>,
    fault: Action,
    queued_at: Instant,
}

enum Item {
    Run(Registrations),
    /// The rounds this node leads are settled: what is queued may leave.
    Settled,
}

/// Handle to the queue's task; it stops when the handle is dropped.
pub(crate) struct RegistrationQueue {
    queue: mpsc::UnboundedSender<Item>,
    /// Whether the engine leads rounds now, and the last block it handled (the registrar
    /// reads it when it could send).
    leading: watch::Sender<Leading>,
    /// The last chain block the engine handled.
    block: u64,
    /// Registrations were pushed since the registrar was last told the rounds are settled.
    unsettled: bool,
    /// The block handled when the registrar was last told so.
    settled_at: u64,
}

impl RegistrationQueue {
    /// `leading` is the sender of the registrar's [`rill_chain::RegistrarConfig::leading`].
    pub(crate) fn spawn(registrar: Registrar, leading: watch::Sender<Leading>) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(run(registrar, queued));
        Self {
            queue,
            leading,
            block: 0,
            unsettled: false,
            settled_at: 0,
        }
    }

    /// Queues `entries` for when `durable` resolves; `fault` (a test's) holds them back or
    /// loses them.
    pub(crate) fn push(
        &mut self,
        entries: Vec<MiniblockRegistration>,
        durable: impl Future<Output = bool> + Send + 'static,
        fault: Action,
    ) {
        self.unsettled = true;
        let _ = self.queue.send(Item::Run(Registrations {
            entries,
            durable: Box::pin(durable),
            fault,
            queued_at: Instant::now(),
        }));
    }

    /// The engine handled chain block `number` (the rounds it elects have started); told
    /// to the registrar with the next [`Self::rounds`].
    pub(crate) fn block(&mut self, number: u64) {
        self.block = number;
    }

    /// Whether the engine leads rounds now, told to the registrar with the last block
    /// handled. The registrar holds a batch back while the engine leads; once it no longer
    /// does (or after a block that started no round), the registrar is told, after the
    /// registrations pushed so far, that what it holds may leave.
    pub(crate) fn rounds(&mut self, rounds: bool) {
        let now = Leading {
            block: self.block,
            rounds,
        };
        // Called on every turn of the node's loop: the registrar's view changes only when
        // this does.
        let before = *self.leading.borrow();
        if before != now {
            self.leading.send_replace(now);
        }
        if !rounds && (before.rounds || self.unsettled || self.block > self.settled_at) {
            self.unsettled = false;
            self.settled_at = self.block;
            let _ = self.queue.send(Item::Settled);
        }
    }
}

async fn run(registrar: Registrar, mut queued: mpsc::UnboundedReceiver<Item>) {
    while let Some(item) = queued.recv().await {
        let run = match item {
            Item::Run(run) => run,
            Item::Settled => {
                registrar.flush().await;
                continue;
            }
        };
        if !run.durable.await {
            // A store write failed: the node stops, and nothing after it may leave.
            return;
        }
        match run.fault {
            Action::Deliver => {}
            Action::Drop => continue,
            // Held back as long after it was queued (not after the one before it).
            Action::Delay(by) => tokio::time::sleep_until((run.queued_at + by).into()).await,
        }
        let pending = registrar.queue_in_order(run.entries.clone()).await;
        tokio::spawn(async move {
            let outcomes = pending.outcomes().await;
            for (entry, outcome) in run.entries.iter().zip(outcomes) {
                match outcome {
                    Ok(RegistrationOutcome::Registered { .. }) => {}
                    Ok(RegistrationOutcome::Rejected { reason, .. }) => {
                        debug!(stream = %entry.stream_id, num = entry.num, %reason, "registration refused");
                    }
                    Err(e) => {
                        warn!(stream = %entry.stream_id, num = entry.num, %e, "registration failed");
                    }
                }
            }
        });
    }
}
