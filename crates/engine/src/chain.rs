//! The chain blocks the engine remembers: number → prevrandao, for leader election.

use std::collections::BTreeMap;

use alloy_primitives::B256;

/// How many recent blocks are remembered.
const KEEP: usize = 256;

/// Recent chain blocks, by number.
#[derive(Debug, Default)]
pub(crate) struct ChainBlocks {
    recent: BTreeMap<u64, B256>,
}

impl ChainBlocks {
    pub(crate) fn insert(&mut self, number: u64, prevrandao: B256) {
        self.recent.insert(number, prevrandao);
        while self.recent.len() > KEEP {
            self.recent.pop_first();
        }
    }

    /// The randomness of block `number`, if remembered.
    pub(crate) fn get(&self, number: u64) -> Option<B256> {
        self.recent.get(&number).copied()
    }

    /// Whether `number` is after every block seen so far (so it may still arrive).
    pub(crate) fn is_future(&self, number: u64) -> bool {
        !self.recent.contains_key(&number)
            && self
                .recent
                .keys()
                .next_back()
                .is_none_or(|last| number > *last)
    }
}
