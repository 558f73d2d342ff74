//! The chain monitor: every block, in order and without gaps, with the registry's logs of that
//! block.
//!
//! It polls over HTTP (`eth_blockNumber`, then `eth_getLogs` for a range and each block's
//! header), and only advances past a block once it has been handed over, so an RPC outage —
//! the node restarting, the connection dropping — just delays delivery: it resumes from the
//! last block delivered. A restarted node resumes by passing its last seen block + 1 as
//! `from_block`. On a chain that reorganizes, `confirmations` keeps the monitor that many blocks
//! behind the head, so it only delivers blocks that deep (a reorg deeper than that is not
//! handled).

use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{ChainError, ChainProvider, RegistryEvent};

/// A block header, as far as Rill cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its timestamp, in seconds.
    pub timestamp: u64,
    /// Its randomness (`prevrandao`, the `mixHash` field), an input of leader election.
    pub prevrandao: B256,
}

/// One block and the registry's logs in it, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    /// The block.
    pub block: BlockInfo,
    /// The registry's events in this block.
    pub events: Vec<RegistryEvent>,
    /// The chain's head when the block was delivered, less the confirmations waited for
    /// (blocks far behind it are catch-up).
    pub head: u64,
}

/// Reads one block's header.
pub async fn block_info(provider: &ChainProvider, number: u64) -> Result<BlockInfo, ChainError> {
    let block = provider
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await?
        .ok_or(ChainError::BlockNotFound(number))?;
    let header = &block.header;
    Ok(BlockInfo {
        number,
        hash: header.hash,
        timestamp: header.timestamp,
        prevrandao: header.mix_hash,
    })
}

/// How the monitor polls.
#[derive(Clone, Copy, Debug)]
pub struct MonitorConfig {
    /// The first block to deliver; `None` starts at the current head.
    pub from_block: Option<u64>,
    /// Pause between polls when caught up.
    pub poll_interval: Duration,
    /// At most this many blocks per `eth_getLogs` call while catching up.
    pub max_range: u64,
    /// Deliver a block only once this many blocks are on top of it (0: at once).
    pub confirmations: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            from_block: None,
            poll_interval: Duration::from_millis(100),
            max_range: 500,
            confirmations: 0,
        }
    }
}

/// Starts monitors.
#[derive(Debug)]
pub struct ChainMonitor;

impl ChainMonitor {
    /// Starts a monitor of `registry`; blocks arrive on the returned channel. The monitor stops
    /// when the receiver is dropped.
    pub fn spawn(
        provider: ChainProvider,
        registry: Address,
        config: MonitorConfig,
    ) -> mpsc::Receiver<ChainBlock> {
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(run(provider, registry, config, sender));
        receiver
    }
}

async fn run(
    provider: ChainProvider,
    registry: Address,
    config: MonitorConfig,
    sender: mpsc::Sender<ChainBlock>,
) {
    let mut next = config.from_block;
    let mut failures = 0u32;
    loop {
        match poll(&provider, registry, &config, &mut next, &sender).await {
            Ok(Delivery::CaughtUp) => {
                failures = 0;
                tokio::time::sleep(config.poll_interval).await;
            }
            Ok(Delivery::More) => failures = 0,
            Ok(Delivery::Closed) => return,
            Err(error) => {
                failures += 1;
                let backoff = Duration::from_millis(100 * u64::from(failures.min(20)));
                warn!(%error, next_block = ?next, ?backoff, "chain monitor poll failed; retrying");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

enum Delivery {
    CaughtUp,
    More,
    Closed,
}

async fn poll(
    provider: &ChainProvider,
    registry: Address,
    config: &MonitorConfig,
    next: &mut Option<u64>,
    sender: &mpsc::Sender<ChainBlock>,
) -> Result<Delivery, ChainError> {
    let head = provider
        .get_block_number()
        .await?
        .saturating_sub(config.confirmations);
    let from = *next.get_or_insert(head);
    if from > head {
        return Ok(Delivery::CaughtUp);
    }
    let to = head.min(from + config.max_range.max(1) - 1);
    let filter = Filter::new()
        .address(registry)
        .from_block(from)
        .to_block(to);
    let mut logs = provider.get_logs(&filter).await?;
    logs.sort_by_key(|log| (log.block_number, log.log_index));
    let mut logs = logs.into_iter().peekable();
    for number in from..=to {
        let info = block_info(provider, number).await?;
        let mut events = Vec::new();
        while let Some(log) = logs.next_if(|log| log.block_number == Some(number)) {
            match RegistryEvent::decode(&log.inner) {
                Some(event) => events.push(event),
                None => debug!(block = number, "ignoring an unknown registry log"),
            }
        }
        if sender
            .send(ChainBlock {
                block: info,
                events,
                head,
            })
            .await
            .is_err()
        {
            return Ok(Delivery::Closed);
        }
        *next = Some(number + 1);
    }
    Ok(if to == head {
        Delivery::CaughtUp
    } else {
        Delivery::More
    })
}
