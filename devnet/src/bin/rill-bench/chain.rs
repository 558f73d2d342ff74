//! What the bench reads from the chain: registry transactions per block and per sender.

use std::collections::HashMap;

use alloy::primitives::Address;
use alloy::providers::Provider;
use anyhow::Context as _;

/// Registry transactions in blocks `from..=to`.
pub(crate) struct Transactions {
    /// Per block.
    pub(crate) per_block: Vec<usize>,
    /// The most any one sender put in one block.
    pub(crate) max_per_sender_block: usize,
    /// Gas used by the blocks (all transactions).
    pub(crate) gas_used: u64,
}

impl Transactions {
    pub(crate) fn average(&self) -> f64 {
        self.per_block.iter().sum::<usize>() as f64 / self.per_block.len().max(1) as f64
    }

    pub(crate) fn total(&self) -> usize {
        self.per_block.iter().sum()
    }
}

/// Counts the transactions to `registry` in blocks `from..=to`.
pub(crate) async fn registry_transactions(
    rpc: &impl Provider,
    registry: Address,
    from: u64,
    to: u64,
) -> anyhow::Result<Transactions> {
    use alloy::consensus::Transaction as _;
    use alloy::network::TransactionResponse as _;
    let mut per_block = Vec::new();
    let mut gas_used = 0;
    let mut per_sender_block: HashMap<(u64, Address), usize> = HashMap::new();
    for number in from..=to {
        let block = rpc
            .get_block_by_number(number.into())
            .full()
            .await?
            .context("block")?;
        gas_used += block.header.gas_used;
        let mut count = 0;
        for tx in block.transactions.txns() {
            if tx.to() == Some(registry) {
                count += 1;
                *per_sender_block.entry((number, tx.from())).or_default() += 1;
            }
        }
        per_block.push(count);
    }
    Ok(Transactions {
        per_block,
        max_per_sender_block: per_sender_block.values().max().copied().unwrap_or(0),
        gas_used,
    })
}
