//! The registration queue: hands the engine's registrations to the registrar strictly in the
//! order the engine made them, each run's once this node's copies of their candidates are
//! durable. Durability comes in write order, so waiting in turn costs nothing, and the registry
//! then takes a chained candidate after its base. It does not batch or send transactions
//! (the registrar does) and holds no state beyond the queue.

use std::pin::Pin;
use std::time::Instant;

use rill_chain::{MiniblockRegistration, Registrar, RegistrationOutcome};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::faults::Action;

/// One run's registrations, in order, with the write that makes their candidates durable.
struct Registrations {
    entries: Vec<MiniblockRegistration>,
    durable: Pin<Box<dyn Future<Output = bool> + Send>>,
    fault: Action,
    queued_at: Instant,
}

/// Handle to the queue's task; it stops when the handle is dropped.
pub(crate) struct RegistrationQueue {
    queue: mpsc::UnboundedSender<Registrations>,
}

impl RegistrationQueue {
    pub(crate) fn spawn(registrar: Registrar) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(run(registrar, queued));
        Self { queue }
    }

    /// Queues `entries` for when `durable` resolves; `fault` (a test's) holds them back or
    /// loses them.
    pub(crate) fn push(
        &self,
        entries: Vec<MiniblockRegistration>,
        durable: impl Future<Output = bool> + Send + 'static,
        fault: Action,
    ) {
        let _ = self.queue.send(Registrations {
            entries,
            durable: Box::pin(durable),
            fault,
            queued_at: Instant::now(),
        });
    }
}

async fn run(registrar: Registrar, mut queued: mpsc::UnboundedReceiver<Registrations>) {
    while let Some(run) = queued.recv().await {
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
