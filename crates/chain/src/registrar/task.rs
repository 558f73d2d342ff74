//! The registrar's task: two queues, flushed together in one transaction.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use alloy::consensus::Transaction as _;
use alloy::contract::{CallBuilder, CallDecoder};
use alloy::primitives::{Address, Bytes, TxHash};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    AllocationOutcome, Command, NewStream, RegistrarConfig, RegistrarError, RegistrationOutcome,
    Reply,
};
use crate::bindings::RillRegistry;
use crate::provider::receipt_within;
use crate::{ChainError, MiniblockRegistration, Registry, RegistryEvent};

struct Queued<E, O> {
    entry: E,
    reply: Reply<O>,
    /// When the caller asked (the queue-wait metric counts from here).
    asked: Instant,
    /// When the task took it in (the batch deadline counts from here: an entry that waited
    /// in the channel behind a transaction in flight must not make the next batch leave
    /// before the others waiting with it are in).
    since: Instant,
}

impl<E, O> Queued<E, O> {
    fn new(entry: E, reply: Reply<O>, asked: Instant) -> Self {
        Self {
            entry,
            reply,
            asked,
            since: Instant::now(),
        }
    }
}

pub(super) struct Task {
    registry: Registry,
    sender: Address,
    config: RegistrarConfig,
    receiver: mpsc::Receiver<Command>,
    registrations: VecDeque<Queued<MiniblockRegistration, RegistrationOutcome>>,
    allocations: VecDeque<Queued<NewStream, AllocationOutcome>>,
    /// The next nonce to use; `None` after an error, to be read again from the chain.
    nonce: Option<u64>,
    /// The chain's block gas limit, once read.
    block_gas_limit: Option<u64>,
    /// A flush was asked for: what is queued leaves at once (unless the caller leads).
    flush_now: bool,
    /// The block the last batch was mined in.
    mined_in: u64,
}

impl Task {
    pub(super) fn new(
        registry: Registry,
        sender: Address,
        config: RegistrarConfig,
        receiver: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            registry,
            sender,
            config,
            receiver,
            registrations: VecDeque::new(),
            allocations: VecDeque::new(),
            nonce: None,
            block_gas_limit: None,
            flush_now: false,
            mined_in: 0,
        }
    }

    fn oldest(&self) -> Option<Instant> {
        let a = self.registrations.front().map(|q| q.since);
        let b = self.allocations.front().map(|q| q.since);
        a.into_iter().chain(b).min()
    }

    fn full(&self) -> bool {
        self.registrations.len() >= self.config.max_batch
            || self.allocations.len() >= self.config.max_allocations
    }

    /// Whether the caller leads rounds whose registrations are still to come, or is about
    /// to (it has not handled the block the last batch was mined in).
    fn leading(&self) -> bool {
        self.config.leading.as_ref().is_some_and(|leading| {
            let leading = *leading.borrow();
            leading.rounds || leading.block < self.mined_in
        })
    }

    fn is_empty(&self) -> bool {
        self.registrations.is_empty() && self.allocations.is_empty()
    }

    pub(super) async fn run(mut self) {
        loop {
            let deadline = match self.oldest() {
                Some(_) if self.flush_now && !self.leading() => Some(Instant::now()),
                oldest => oldest.map(|since| since + self.config.flush_after),
            };
            let command = tokio::select! {
                command = self.receiver.recv() => command,
                _ = sleep_until(deadline) => {
                    // Everything already asked for rides this transaction.
                    while let Ok(command) = self.receiver.try_recv() {
                        self.take(command);
                    }
                    self.flush_one().await;
                    continue;
                }
            };
            let Some(command) = command else {
                while !self.is_empty() {
                    self.flush_one().await;
                }
                return;
            };
            self.take(command);
            while self.full() {
                self.flush_one().await;
            }
        }
    }

    fn take(&mut self, command: Command) {
        match command {
            Command::Register(entry, reply, asked) => {
                self.registrations
                    .push_back(Queued::new(entry, reply, asked));
            }
            Command::Allocate(stream, reply, asked) => {
                self.allocations
                    .push_back(Queued::new(stream, reply, asked));
            }
            Command::Flush => self.flush_now = !self.is_empty(),
        }
    }

    /// Sends what is queued (up to the batch limits) in one transaction and answers each
    /// entry.
    async fn flush_one(&mut self) {
        let take_r = self.registrations.len().min(self.config.max_batch);
        let take_a = self.allocations.len().min(self.config.max_allocations);
        if take_r + take_a == 0 {
            return;
        }
        self.flush_now = false;
        let registrations: Vec<_> = self.registrations.drain(..take_r).collect();
        let allocations: Vec<_> = self.allocations.drain(..take_a).collect();
        let heads: Vec<RillRegistry::SetMiniblock> =
            registrations.iter().map(|q| q.entry.into()).collect();
        let streams: Vec<RillRegistry::NewStream> = allocations
            .iter()
            .map(|q| RillRegistry::NewStream {
                streamId: q.entry.id.into(),
                nodes: q.entry.nodes.clone(),
                genesisHash: q.entry.genesis_hash,
                genesisMiniblock: Bytes::from(q.entry.genesis.clone()),
            })
            .collect();
        let contract = self.registry.contract().clone();
        let registry = self.registry.address();
        let gas = self.gas_limit(&streams, heads.len()).await;
        let sent = Instant::now();
        for asked in registrations
            .iter()
            .map(|q| q.asked)
            .chain(allocations.iter().map(|q| q.asked))
        {
            self.config
                .metrics
                .queued
                .observe((sent - asked).as_secs_f64());
        }
        let result = self
            .send(|| {
                let call = contract
                    .submitBatch(streams.clone(), heads.clone())
                    .with_cloned_provider();
                match gas {
                    Some(gas) => call.gas(gas),
                    None => call,
                }
            })
            .await;
        if let Ok(receipt) = &result {
            self.mined_in = receipt.block_number.unwrap_or(self.mined_in);
        }
        let result = result.and_then(|receipt| outcomes(&receipt, registry, take_a, take_r));
        let metrics = &self.config.metrics;
        match result {
            Ok((allocated, registered)) => {
                metrics.transactions.inc();
                metrics.inclusion.observe(sent.elapsed().as_secs_f64());
                metrics.batch_size.observe((take_a + take_r) as f64);
                info!(
                    streams = take_a,
                    heads = take_r,
                    ms = sent.elapsed().as_millis() as u64,
                    block = self.mined_in,
                    "registration batch mined"
                );
                for (queued, outcome) in allocations.into_iter().zip(allocated) {
                    if let AllocationOutcome::Rejected { reason, .. } = &outcome {
                        metrics.rejected_entries.inc();
                        debug!(stream = %queued.entry.id, %reason, "allocation rejected");
                    }
                    let _ = queued.reply.send(Ok(outcome));
                }
                for (queued, outcome) in registrations.into_iter().zip(registered) {
                    if let RegistrationOutcome::Rejected { reason, .. } = &outcome {
                        metrics.rejected_entries.inc();
                        debug!(stream = %queued.entry.stream_id, num = queued.entry.num, %reason, "registration rejected");
                    }
                    let _ = queued.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                warn!(streams = take_a, heads = take_r, %error, "registration batch failed");
                metrics.failed_batches.inc();
                let error = Arc::new(error);
                for queued in allocations {
                    let _ = queued.reply.send(Err(RegistrarError::Chain(error.clone())));
                }
                for queued in registrations {
                    let _ = queued.reply.send(Err(RegistrarError::Chain(error.clone())));
                }
            }
        }
    }

    /// The gas limit of a batch: an upper bound of what it uses, computed rather than
    /// estimated, so a send does not first have the chain execute the whole batch (under
    /// load that simulation made transactions miss the next block). Capped at the chain's
    /// block gas limit (read once); `None` (the chain estimates) if that cannot be read.
    async fn gas_limit(
        &mut self,
        streams: &[RillRegistry::NewStream],
        heads: usize,
    ) -> Option<u64> {
        if self.block_gas_limit.is_none() {
            self.block_gas_limit = self
                .registry
                .provider()
                .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                .await
                .ok()
                .flatten()
                .map(|block| block.header.gas_limit);
        }
        let bound = batch_gas(streams, heads);
        self.block_gas_limit.map(|cap| bound.min(cap))
    }

    /// Sends the call built by `make` with our own nonce, retrying failures that may pass on
    /// another try. A contract revert with a known reason is final. A transaction not mined
    /// within `receipt_timeout` is replaced: same nonce, fees a quarter higher; whichever of
    /// the transactions sent for that nonce is mined is the answer.
    async fn send<D: CallDecoder>(
        &mut self,
        make: impl Fn() -> CallBuilder<crate::ChainProvider, D>,
    ) -> Result<TransactionReceipt, ChainError> {
        let mut last = None;
        // Transactions sent for `self.nonce` that were not mined in time: any may still be.
        let mut unmined: Vec<TxHash> = Vec::new();
        let mut fees: Option<Fees> = None;
        for attempt in 1..=self.config.max_attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt - 2))).await;
            }
            match self.mined_meanwhile(&unmined).await {
                Ok(Some(receipt)) => {
                    if let Some(receipt) = self.settle(self.nonce, receipt, &mut last) {
                        return Ok(receipt);
                    }
                    (unmined, fees) = (Vec::new(), None);
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    last = Some(error);
                    continue;
                }
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
            let mut call = make().nonce(nonce);
            if !unmined.is_empty() {
                match self.replacement_fees(fees).await {
                    Ok(bumped) => {
                        fees = Some(bumped);
                        call = call
                            .max_fee_per_gas(bumped.max_fee)
                            .max_priority_fee_per_gas(bumped.max_priority_fee);
                    }
                    Err(error) => {
                        last = Some(error);
                        continue;
                    }
                }
            }
            let pending = match call.send().await {
                Ok(pending) => pending,
                Err(error) => {
                    let error = ChainError::from(error);
                    if let ChainError::Reverted(_) = error {
                        self.nonce = None;
                        return Err(error);
                    }
                    // With a transaction of this nonce possibly in flight the nonce stays: the
                    // next attempt first looks for its receipt, then replaces it again.
                    if unmined.is_empty() {
                        self.nonce = None;
                    }
                    warn!(attempt, %error, "transaction not sent; retrying");
                    last = Some(error);
                    continue;
                }
            };
            let hash = *pending.tx_hash();
            match receipt_within(pending, self.config.receipt_timeout).await {
                Ok(receipt) => {
                    if let Some(receipt) = self.settle(Some(nonce), receipt, &mut last) {
                        return Ok(receipt);
                    }
                    (unmined, fees) = (Vec::new(), None);
                }
                Err(error) => {
                    // Not mined in time, or its receipt could not be read: it may still be
                    // mined, so the nonce stays ours and the next attempt replaces it (a new
                    // nonce could get both transactions mined).
                    self.nonce = Some(nonce);
                    unmined.push(hash);
                    if fees.is_none() {
                        fees = self.fees_of(hash).await;
                    }
                    if let ChainError::NotMined { .. } = error {
                        self.config.metrics.replacements.inc();
                        warn!(attempt, %error, "transaction not mined; replacing it");
                    } else {
                        warn!(attempt, %error, "no receipt; retrying");
                    }
                    last = Some(error);
                }
            }
        }
        // Read the nonce again for the next batch: whatever of ours is still pending is then
        // ahead of it.
        self.nonce = None;
        Err(last.expect("max_attempts is at least 1"))
    }

    /// A mined transaction spent `nonce`: a success is the answer (`Some`), a revert is to be
    /// retried with the next nonce (`None`, the error kept in `last`).
    fn settle(
        &mut self,
        nonce: Option<u64>,
        receipt: TransactionReceipt,
        last: &mut Option<ChainError>,
    ) -> Option<TransactionReceipt> {
        self.nonce = nonce.map(|n| n + 1);
        if receipt.status() {
            return Some(receipt);
        }
        let error = ChainError::TxFailed(receipt.transaction_hash);
        warn!(%error, "transaction reverted; retrying");
        *last = Some(error);
        None
    }

    /// The receipt of whichever of `sent` was mined, if one was.
    async fn mined_meanwhile(
        &self,
        sent: &[TxHash],
    ) -> Result<Option<TransactionReceipt>, ChainError> {
        for hash in sent {
            if let Some(receipt) = self
                .registry
                .provider()
                .get_transaction_receipt(*hash)
                .await?
            {
                return Ok(Some(receipt));
            }
        }
        Ok(None)
    }

    /// The fees a sent transaction offered (`None` if the chain no longer knows it).
    async fn fees_of(&self, hash: TxHash) -> Option<Fees> {
        let tx = self
            .registry
            .provider()
            .get_transaction_by_hash(hash)
            .await
            .ok()??;
        Some(Fees {
            max_fee: tx.max_fee_per_gas(),
            max_priority_fee: tx.max_priority_fee_per_gas().unwrap_or(0),
        })
    }

    /// Fees for a replacement: the chain's current estimate, and at least a quarter above what
    /// the last transaction offered (nodes accept a replacement only 10 % above the original).
    async fn replacement_fees(&self, last: Option<Fees>) -> Result<Fees, ChainError> {
        let estimate = self.registry.provider().estimate_eip1559_fees().await?;
        let bump = |fee: u128| fee.saturating_add(fee / 4).saturating_add(1);
        let last = last.unwrap_or_default();
        Ok(Fees {
            max_fee: estimate.max_fee_per_gas.max(bump(last.max_fee)),
            max_priority_fee: estimate
                .max_priority_fee_per_gas
                .max(bump(last.max_priority_fee)),
        })
    }
}

/// The EIP-1559 fees of a transaction.
#[derive(Clone, Copy, Debug, Default)]
struct Fees {
    max_fee: u128,
    max_priority_fee: u128,
}

/// More gas than `submitBatch` uses for these entries, whatever each entry's outcome (the
/// registry's costs in BENCHMARKS.md: a head 16,000 to 57,000 gas, a new stream about
/// 114,000 with three nodes and a small genesis; unused gas is not paid for).
pub(super) fn batch_gas(streams: &[RillRegistry::NewStream], heads: usize) -> u64 {
    const BASE: u64 = 60_000;
    const PER_HEAD: u64 = 90_000;
    const PER_STREAM: u64 = 150_000;
    const PER_NODE: u64 = 30_000;
    const PER_GENESIS_BYTE: u64 = 48;
    let streams: u64 = streams
        .iter()
        .map(|s| {
            PER_STREAM
                + PER_NODE * s.nodes.len() as u64
                + PER_GENESIS_BYTE * s.genesisMiniblock.len() as u64
        })
        .sum();
    BASE + PER_HEAD * heads as u64 + streams
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One outcome per entry, from the registry's logs in the receipt, in entry order: the new
/// streams first, then the new heads.
fn outcomes(
    receipt: &TransactionReceipt,
    registry: Address,
    streams: usize,
    heads: usize,
) -> Result<(Vec<AllocationOutcome>, Vec<RegistrationOutcome>), ChainError> {
    let tx = receipt.transaction_hash;
    let block = receipt.block_number.unwrap_or_default();
    let (mut allocated, mut registered) = (Vec::new(), Vec::new());
    for log in receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == registry)
    {
        match RegistryEvent::decode(&log.inner) {
            Some(RegistryEvent::StreamAllocated { .. }) => {
                allocated.push(AllocationOutcome::Allocated { tx, block })
            }
            Some(RegistryEvent::StreamAllocationFailed { reason, .. }) => {
                allocated.push(AllocationOutcome::Rejected { reason, tx })
            }
            Some(RegistryEvent::MiniblockRegistered { .. }) => {
                registered.push(RegistrationOutcome::Registered { tx, block })
            }
            Some(RegistryEvent::MiniblockRegistrationFailed { reason, .. }) => {
                registered.push(RegistrationOutcome::Rejected { reason, tx })
            }
            _ => {}
        }
    }
    if allocated.len() != streams || registered.len() != heads {
        return Err(ChainError::OutcomeCount {
            entries: streams + heads,
            outcomes: allocated.len() + registered.len(),
        });
    }
    Ok((allocated, registered))
}
