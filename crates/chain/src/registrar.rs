//! The batched miniblock registrar: a node's one transaction sender.
//!
//! Entries queue up and go out in one `setStreamLastMiniblockBatch` transaction when the batch
//! is full or `flush_after` (a quarter of the block time) has passed since the oldest queued
//! entry. One transaction is in flight at a time and the registrar sets every nonce itself, so
//! nothing else may send from the node's key while it runs (stream allocation goes through it
//! too). Each entry's outcome is read from the receipt's logs: the contract emits exactly one
//! success or failure log per entry, in order. A transaction that fails to send or reverts is
//! retried whole; no entry is lost because another one was bad.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::primitives::{Address, B256, Bytes, TxHash};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricsRegistry;
use rill_protocol::StreamId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::registry::{mined_in, transact};
use crate::{ChainError, MiniblockRegistration, RegistrationFailure, Registry, RegistryEvent};

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
}

impl Default for RegistrarMetrics {
    fn default() -> Self {
        Self {
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            transactions: Counter::default(),
            failed_batches: Counter::default(),
            rejected_entries: Counter::default(),
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
    }
}

/// How the registrar batches.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    /// Send as soon as this many entries are queued.
    pub max_batch: usize,
    /// Send at most this long after the oldest queued entry arrived (a quarter block time).
    pub flush_after: Duration,
    /// Tries per transaction before its entries get an error.
    pub max_attempts: u32,
    /// Where it counts.
    pub metrics: RegistrarMetrics,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            max_batch: 50,
            flush_after: Duration::from_millis(250),
            max_attempts: 5,
            metrics: RegistrarMetrics::default(),
        }
    }
}

/// What the registry said about one entry.
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

enum Command {
    Register(MiniblockRegistration, Reply<RegistrationOutcome>),
    Allocate {
        id: StreamId,
        nodes: Vec<Address>,
        genesis_hash: B256,
        genesis: Vec<u8>,
        reply: Reply<u64>,
    },
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
        let task = Task {
            registry,
            sender,
            config,
            receiver,
            queue: VecDeque::new(),
            nonce: None,
        };
        tokio::spawn(task.run());
        Self { commands }
    }

    /// Queues `entry` and waits for the registry's verdict on it.
    pub async fn register(
        &self,
        entry: MiniblockRegistration,
    ) -> Result<RegistrationOutcome, RegistrarError> {
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(Command::Register(entry, reply))
            .await
            .map_err(|_| RegistrarError::Stopped)?;
        outcome.await.map_err(|_| RegistrarError::Stopped)?
    }

    /// Allocates a stream from this node's key. Returns the block it was mined in.
    pub async fn allocate_stream(
        &self,
        id: StreamId,
        nodes: Vec<Address>,
        genesis_hash: B256,
        genesis: Vec<u8>,
    ) -> Result<u64, RegistrarError> {
        let (reply, outcome) = oneshot::channel();
        let command = Command::Allocate {
            id,
            nodes,
            genesis_hash,
            genesis,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| RegistrarError::Stopped)?;
        outcome.await.map_err(|_| RegistrarError::Stopped)?
    }
}

struct Queued {
    entry: MiniblockRegistration,
    reply: Reply<RegistrationOutcome>,
    since: Instant,
}

struct Task {
    registry: Registry,
    sender: Address,
    config: RegistrarConfig,
    receiver: mpsc::Receiver<Command>,
    queue: VecDeque<Queued>,
    /// The next nonce to use; `None` after an error, to be read again from the chain.
    nonce: Option<u64>,
}

impl Task {
    async fn run(mut self) {
        loop {
            let deadline = self
                .queue
                .front()
                .map(|q| q.since + self.config.flush_after);
            let command = tokio::select! {
                command = self.receiver.recv() => command,
                _ = sleep_until(deadline) => {
                    self.flush_one().await;
                    continue;
                }
            };
            match command {
                Some(Command::Register(entry, reply)) => {
                    self.queue.push_back(Queued {
                        entry,
                        reply,
                        since: Instant::now(),
                    });
                    while self.queue.len() >= self.config.max_batch {
                        self.flush_one().await;
                    }
                }
                Some(Command::Allocate {
                    id,
                    nodes,
                    genesis_hash,
                    genesis,
                    reply,
                }) => {
                    let genesis = Bytes::from(genesis);
                    let contract = self.registry.contract().clone();
                    let result = self
                        .send(|| {
                            contract
                                .allocateStream(
                                    id.into(),
                                    nodes.clone(),
                                    genesis_hash,
                                    genesis.clone(),
                                )
                                .with_cloned_provider()
                        })
                        .await
                        .and_then(|receipt| mined_in(&receipt));
                    let _ = reply.send(result.map_err(RegistrarError::from));
                }
                None => {
                    while !self.queue.is_empty() {
                        self.flush_one().await;
                    }
                    return;
                }
            }
        }
    }

    /// Sends up to `max_batch` queued entries in one transaction and answers each of them.
    async fn flush_one(&mut self) {
        let take = self.queue.len().min(self.config.max_batch);
        if take == 0 {
            return;
        }
        let batch: Vec<Queued> = self.queue.drain(..take).collect();
        let entries: Vec<_> = batch.iter().map(|q| q.entry.into()).collect();
        let contract = self.registry.contract().clone();
        let result = self
            .send(|| {
                contract
                    .setStreamLastMiniblockBatch(entries.clone())
                    .with_cloned_provider()
            })
            .await
            .and_then(|receipt| outcomes(&receipt, self.registry.address(), batch.len()));
        match result {
            Ok(outcomes) => {
                let metrics = &self.config.metrics;
                metrics.transactions.inc();
                metrics.batch_size.observe(batch.len() as f64);
                let registered = outcomes
                    .iter()
                    .filter(|o| matches!(o, RegistrationOutcome::Registered { .. }))
                    .count();
                info!(
                    entries = batch.len(),
                    registered, "registration batch mined"
                );
                for (queued, outcome) in batch.into_iter().zip(outcomes) {
                    if let RegistrationOutcome::Rejected { reason, .. } = &outcome {
                        metrics.rejected_entries.inc();
                        debug!(stream = ?queued.entry.stream_id, num = queued.entry.num, %reason, "registration rejected");
                    }
                    let _ = queued.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                warn!(entries = batch.len(), %error, "registration batch failed");
                self.config.metrics.failed_batches.inc();
                let error = Arc::new(error);
                for queued in batch {
                    let _ = queued.reply.send(Err(RegistrarError::Chain(error.clone())));
                }
            }
        }
    }

    /// Sends the call built by `make` with our own nonce, retrying failures that may pass on
    /// another try. A contract revert with a known reason is final.
    async fn send<D: CallDecoder>(
        &mut self,
        make: impl Fn() -> CallBuilder<crate::ChainProvider, D>,
    ) -> Result<TransactionReceipt, ChainError> {
        let mut last = None;
        for attempt in 1..=self.config.max_attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt - 2))).await;
            }
            let nonce = match self.nonce {
                Some(nonce) => nonce,
                None => match self
                    .registry
                    .provider()
                    .get_transaction_count(self.sender)
                    .pending()
                    .await
                {
                    Ok(nonce) => nonce,
                    Err(error) => {
                        last = Some(ChainError::from(error));
                        continue;
                    }
                },
            };
            let call = make().nonce(nonce);
            match transact(call).await {
                Ok(receipt) => {
                    self.nonce = Some(nonce + 1);
                    return Ok(receipt);
                }
                Err(error @ ChainError::TxFailed(_)) => {
                    // Mined but reverted: the nonce is spent.
                    self.nonce = Some(nonce + 1);
                    warn!(attempt, %error, "transaction reverted; retrying");
                    last = Some(error);
                }
                Err(error @ ChainError::Reverted(_)) => {
                    self.nonce = None;
                    return Err(error);
                }
                Err(error) => {
                    self.nonce = None;
                    warn!(attempt, %error, "transaction not sent; retrying");
                    last = Some(error);
                }
            }
        }
        Err(last.expect("max_attempts is at least 1"))
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One outcome per entry, from the registry's logs in the receipt, in entry order.
fn outcomes(
    receipt: &TransactionReceipt,
    registry: Address,
    entries: usize,
) -> Result<Vec<RegistrationOutcome>, ChainError> {
    let tx = receipt.transaction_hash;
    let block = receipt.block_number.unwrap_or_default();
    let outcomes: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .filter(|log| log.address() == registry)
        .filter_map(|log| match RegistryEvent::decode(&log.inner)? {
            RegistryEvent::MiniblockRegistered { .. } => {
                Some(RegistrationOutcome::Registered { tx, block })
            }
            RegistryEvent::MiniblockRegistrationFailed { reason, .. } => {
                Some(RegistrationOutcome::Rejected { reason, tx })
            }
            _ => None,
        })
        .collect();
    if outcomes.len() != entries {
        return Err(ChainError::OutcomeCount {
            entries,
            outcomes: outcomes.len(),
        });
    }
    Ok(outcomes)
}
