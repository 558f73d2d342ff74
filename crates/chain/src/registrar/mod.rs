//! The batched registrar: a node's one transaction sender.
//!
//! New streams and new miniblock heads queue up and go out together in one `submitBatch`
//! transaction when a queue is full, when the caller says nothing more is coming soon
//! ([`Registrar::flush`], held back while the caller says it leads rounds: see
//! [`RegistrarConfig::leading`]), or when `flush_after` has passed since the oldest queued
//! entry. One transaction is in flight at a time, so a node sends at
//! most one per block, and the registrar sets every nonce itself: nothing else may send from
//! the node's key while it runs. Each entry's outcome is read from the receipt's logs: the
//! contract emits exactly one success or failure log per entry, in order. A transaction that
//! fails to send or reverts is retried whole; no entry is lost because another one was bad.
//! A transaction that is not mined in time is replaced (same nonce, higher fees), so one
//! dropped transaction never stops a node's registrations.

mod task;

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, TxHash};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricsRegistry;
use rill_protocol::StreamId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::{AllocationFailure, ChainError, MiniblockRegistration, RegistrationFailure, Registry};

/// What the registrar counts.
#[derive(Clone, Debug)]
pub struct RegistrarMetrics {
    /// Entries per batch transaction.
    pub batch_size: Histogram,
    /// Batch transactions mined.
    pub transactions: Counter,
    /// Batches that failed after every attempt.
    pub failed_batches: Counter,
    /// Entries the registry refused.
    pub rejected_entries: Counter,
    /// Transactions not mined within `receipt_timeout` (each is replaced while attempts remain).
    pub replacements: Counter,
    /// How long entries waited in the queue before their transaction was sent (seconds).
    pub queued: Histogram,
    /// From sending a batch transaction to holding its receipt (seconds).
    pub inclusion: Histogram,
}

impl Default for RegistrarMetrics {
    fn default() -> Self {
        Self {
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            transactions: Counter::default(),
            failed_batches: Counter::default(),
            rejected_entries: Counter::default(),
            replacements: Counter::default(),
            queued: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            inclusion: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl RegistrarMetrics {
    /// Registers the metrics under `registry`.
    pub fn register(&self, registry: &mut MetricsRegistry) {
        registry.register(
            "batch_size",
            "Entries per registration transaction",
            self.batch_size.clone(),
        );
        registry.register(
            "transactions",
            "Registration transactions mined",
            self.transactions.clone(),
        );
        registry.register(
            "failed_batches",
            "Registration batches that failed after every attempt",
            self.failed_batches.clone(),
        );
        registry.register(
            "rejected_entries",
            "Registration entries the registry refused",
            self.rejected_entries.clone(),
        );
        registry.register(
            "replacements",
            "Registration transactions not mined in time, to be replaced (same nonce, higher fees)",
            self.replacements.clone(),
        );
        registry.register(
            "queued_seconds",
            "How long entries waited in the registrar's queue before their transaction was sent",
            self.queued.clone(),
        );
        registry.register(
            "inclusion_seconds",
            "From sending a registration transaction to holding its receipt",
            self.inclusion.clone(),
        );
    }
}

/// How the registrar batches.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    /// Send as soon as this many miniblock heads are queued.
    pub max_batch: usize,
    /// Send as soon as this many new streams are queued (each carries its genesis miniblock,
    /// so they weigh more than heads).
    pub max_allocations: usize,
    /// Send at most this long after the oldest queued entry arrived (a node gives half a
    /// block time: its flushes send sooner, this is for rounds that do not settle).
    pub flush_after: Duration,
    /// Tries per transaction before its entries get an error.
    pub max_attempts: u32,
    /// How long a sent transaction may wait to be mined. Past it, the registrar sends a
    /// replacement with the same nonce and higher fees (the first may have been dropped from
    /// the mempool or priced out), and takes whichever of them is mined.
    pub receipt_timeout: Duration,
    /// Where it counts.
    pub metrics: RegistrarMetrics,
    /// What the caller says about the rounds it leads (`None`: it says nothing). While it
    /// leads rounds whose registrations are still to come, or has not yet handled the block
    /// the last batch was mined in (whose rounds are about to start), a [`Registrar::flush`]
    /// does not send: what is queued waits for the next flush or for `flush_after`. A batch
    /// that could not leave in time for its own block then picks up the next block's rounds
    /// instead of leaving alone just before them and making them wait a block more.
    pub leading: Option<watch::Receiver<Leading>>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            // About 16,000 gas per steady-state head (BENCHMARKS.md): 500 fit in 8 M gas, so
            // a node leading hundreds of active streams registers them in one block.
            max_batch: 500,
            max_allocations: 200,
            flush_after: Duration::from_millis(250),
            max_attempts: 5,
            receipt_timeout: Duration::from_secs(30),
            metrics: RegistrarMetrics::default(),
            leading: None,
        }
    }
}

/// What a registrar's caller says about the rounds it leads (see
/// [`RegistrarConfig::leading`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leading {
    /// The last chain block the caller has handled (the rounds it elects have started).
    pub block: u64,
    /// Whether rounds it leads are in progress, their registrations still to come.
    pub rounds: bool,
}

/// What the registry said about one miniblock head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// The head was registered.
    Registered {
        /// The batch transaction.
        tx: TxHash,
        /// The block it was mined in.
        block: u64,
    },
    /// The contract refused this entry; the others in the batch were unaffected.
    Rejected {
        /// The contract's reason.
        reason: RegistrationFailure,
        /// The batch transaction.
        tx: TxHash,
    },
}

/// A stream to allocate: its nodes and its genesis miniblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewStream {
    /// The stream.
    pub id: StreamId,
    /// Its nodes, in the order leader election indexes.
    pub nodes: Vec<Address>,
    /// Its genesis miniblock's hash.
    pub genesis_hash: B256,
    /// Its genesis miniblock, encoded (it travels in the allocation log).
    pub genesis: Vec<u8>,
}

/// What the registry said about one new stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocationOutcome {
    /// The stream was allocated.
    Allocated {
        /// The batch transaction.
        tx: TxHash,
        /// The block it was mined in.
        block: u64,
    },
    /// The contract refused this entry; the others in the batch were unaffected.
    Rejected {
        /// The contract's reason.
        reason: AllocationFailure,
        /// The batch transaction.
        tx: TxHash,
    },
}

/// Why an entry or a call got no outcome.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    /// The registrar's task has stopped.
    #[error("the registrar has stopped")]
    Stopped,
    /// The chain kept failing (one error, shared by every entry of the batch it failed).
    #[error(transparent)]
    Chain(Arc<ChainError>),
}

impl From<ChainError> for RegistrarError {
    fn from(error: ChainError) -> Self {
        RegistrarError::Chain(Arc::new(error))
    }
}

type Reply<T> = oneshot::Sender<Result<T, RegistrarError>>;

/// A request to the task, with when it was made (its wait in the queue starts then).
enum Command {
    Register(MiniblockRegistration, Reply<RegistrationOutcome>, Instant),
    Allocate(NewStream, Reply<AllocationOutcome>, Instant),
    /// Everything queued so far may leave now: nothing more is coming for this block.
    Flush,
}

/// Handle to the registrar task. Cheap to clone; the task stops when every handle is dropped
/// (after sending what is queued).
#[derive(Clone, Debug)]
pub struct Registrar {
    commands: mpsc::Sender<Command>,
}

impl Registrar {
    /// Starts the registrar. `registry` must use a provider that signs as `sender`.
    pub fn spawn(registry: Registry, sender: Address, config: RegistrarConfig) -> Self {
        let (commands, receiver) = mpsc::channel(4096);
        tokio::spawn(task::Task::new(registry, sender, config, receiver).run());
        Self { commands }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, RegistrarError> {
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| RegistrarError::Stopped)?;
        outcome.await.map_err(|_| RegistrarError::Stopped)?
    }

    /// Queues a new miniblock head and waits for the registry's verdict on it.
    pub async fn register(
        &self,
        entry: MiniblockRegistration,
    ) -> Result<RegistrationOutcome, RegistrarError> {
        self.ask(|reply| Command::Register(entry, reply, Instant::now()))
            .await
    }

    /// Queues new miniblock heads in their order: the registry takes them in that order, in
    /// one transaction or in successive ones. The verdicts come from the returned
    /// [`Queued::outcomes`].
    pub async fn queue_in_order(&self, entries: Vec<MiniblockRegistration>) -> Queued {
        let mut replies = Vec::with_capacity(entries.len());
        for entry in entries {
            let (reply, outcome) = oneshot::channel();
            let sent = self
                .commands
                .send(Command::Register(entry, reply, Instant::now()))
                .await;
            replies.push(sent.ok().map(|()| outcome));
        }
        Queued { replies }
    }

    /// Sends what is queued without waiting out `flush_after` (or, with a transaction in
    /// flight, as soon as its receipt is in), unless the caller is leading rounds by then
    /// (see [`RegistrarConfig::leading`]): the caller knows nothing more is coming soon,
    /// e.g. every round it led is settled and registered.
    pub async fn flush(&self) {
        let _ = self.commands.send(Command::Flush).await;
    }

    /// Queues a new stream and waits for the registry's verdict on it.
    pub async fn allocate(&self, stream: NewStream) -> Result<AllocationOutcome, RegistrarError> {
        self.ask(|reply| Command::Allocate(stream, reply, Instant::now()))
            .await
    }
}

/// Registrations queued by [`Registrar::queue_in_order`], waiting for their verdicts.
#[derive(Debug)]
pub struct Queued {
    replies: Vec<Option<oneshot::Receiver<Result<RegistrationOutcome, RegistrarError>>>>,
}

impl Queued {
    /// The registry's verdict on each, in the order they were queued.
    pub async fn outcomes(self) -> Vec<Result<RegistrationOutcome, RegistrarError>> {
        let mut outcomes = Vec::with_capacity(self.replies.len());
        for reply in self.replies {
            outcomes.push(match reply {
                Some(outcome) => outcome.await.unwrap_or(Err(RegistrarError::Stopped)),
                None => Err(RegistrarError::Stopped),
            });
        }
        outcomes
    }
}
