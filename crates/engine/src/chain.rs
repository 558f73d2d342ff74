//! What the engine knows of the chain: recent blocks' randomness (for leader election), the
//! randomness of older blocks the node looked up for catch-up, and the chain's head.

use std::collections::BTreeMap;

use alloy_primitives::B256;

/// How many recent blocks are remembered.
const KEEP: usize = 256;
/// How many older blocks looked up for catch-up are remembered.
const KEEP_LOOKED_UP: usize = 65_536;

/// Chain blocks, by number.
#[derive(Debug, Default)]
pub(crate) struct ChainBlocks {
    recent: BTreeMap<u64, B256>,
    looked_up: BTreeMap<u64, B256>,
    head: u64,
}

impl ChainBlocks {
    /// A block delivered by the chain monitor, in order.
    pub(crate) fn insert(&mut self, number: u64, prevrandao: B256) {
        self.recent.insert(number, prevrandao);
        while self.recent.len() > KEEP {
            self.recent.pop_first();
        }
        self.head = self.head.max(number);
    }

    /// The randomness of an older block, looked up for catch-up.
    pub(crate) fn remember(&mut self, number: u64, prevrandao: B256) {
        self.looked_up.insert(number, prevrandao);
        while self.looked_up.len() > KEEP_LOOKED_UP {
            self.looked_up.pop_first();
        }
    }

    /// The chain's head is at least `number`.
    pub(crate) fn head_at_least(&mut self, number: u64) {
        self.head = self.head.max(number);
    }

    /// The chain's head, as far as this node knows.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The randomness of a recent block (one a candidate may name).
    pub(crate) fn recent(&self, number: u64) -> Option<B256> {
        self.recent.get(&number).copied()
    }

    /// The randomness of any block this node knows.
    pub(crate) fn randomness(&self, number: u64) -> Option<B256> {
        self.recent(number)
            .or_else(|| self.looked_up.get(&number).copied())
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
