//! The randomness of chain blocks, for checking who produced a fetched miniblock: the blocks
//! this node saw (kept for a while), and the chain's RPC for older ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::B256;
use rill_chain::{ChainProvider, block_info};
use tracing::debug;

/// Blocks remembered.
const KEEP: usize = 200_000;

/// Shared by the chain follower (which records blocks) and the request driver (which looks
/// them up). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Blocks {
    seen: Arc<Mutex<BTreeMap<u64, B256>>>,
    provider: ChainProvider,
}

impl Blocks {
    pub(crate) fn new(provider: ChainProvider) -> Self {
        Self {
            seen: Arc::default(),
            provider,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, B256>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, number: u64, prevrandao: B256) {
        let mut seen = self.lock();
        seen.insert(number, prevrandao);
        while seen.len() > KEEP {
            seen.pop_first();
        }
    }

    /// The randomness of `numbers`: remembered ones, and the others read from the chain
    /// (those it cannot read are left out).
    pub(crate) async fn randomness(&self, numbers: Vec<u64>) -> Vec<(u64, B256)> {
        let mut found = Vec::with_capacity(numbers.len());
        let mut missing = Vec::new();
        {
            let seen = self.lock();
            for number in numbers {
                match seen.get(&number) {
                    Some(r) => found.push((number, *r)),
                    None => missing.push(number),
                }
            }
        }
        for number in missing {
            match block_info(&self.provider, number).await {
                Ok(info) => {
                    self.record(number, info.prevrandao);
                    found.push((number, info.prevrandao));
                }
                Err(e) => debug!(number, %e, "block lookup failed"),
            }
        }
        found
    }
}
