//! Protocol parameters: the registry's network rules, which change at chain blocks, and the
//! node's own timers.

use std::collections::BTreeMap;

/// The rules the registry sets for every stream. A miniblock follows the rules in force at its
/// `chain_block`, so a change applies at the same miniblock boundary on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkParams {
    /// Largest event accepted.
    pub max_event_bytes: usize,
    /// At most this many events per miniblock.
    pub max_events_per_miniblock: usize,
    /// At most this many bytes of events per miniblock.
    pub max_miniblock_bytes: usize,
    /// A snapshot is due this many miniblocks after the last one (replicas vote for it; it is
    /// required at twice the interval).
    pub snapshot_interval: u64,
}

impl Default for NetworkParams {
    fn default() -> Self {
        Self {
            max_event_bytes: 64 * 1024,
            max_events_per_miniblock: 10_000,
            max_miniblock_bytes: 4 * 1024 * 1024,
            snapshot_interval: 16,
        }
    }
}

/// Protocol parameters: the network's rules as the node starts, and its own timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// The network's rules until the registry changes them.
    pub params: NetworkParams,
    /// Events may build on one of the last this many miniblocks.
    pub recency_window: u64,
    /// A node admits an event into its minipool only while it builds on one of the last
    /// `recency_window - admission_margin` miniblocks, so an acknowledged event has at least
    /// this many miniblocks to be included before it would go stale.
    pub admission_margin: u64,
    /// Wait this long after a `NewEventInPool` before fetching the event.
    pub fetch_delay_ms: u64,
    /// The leader stops waiting for proposals after this long.
    pub proposal_timeout_ms: u64,
    /// The leader gives up a candidate that more than half of the stream's nodes did not store
    /// within this long (its events stay in the pools).
    pub candidate_timeout_ms: u64,
    /// Retry a catch-up fetch after this long.
    pub catch_up_retry_ms: u64,
    /// Forget an unregistered candidate after this many chain blocks.
    pub candidate_ttl_blocks: u64,
    /// An event a node of the stream has not confirmed holding this long after it entered the
    /// minipool is pushed to it again (anti-entropy), then with a doubling delay.
    pub push_delay_ms: u64,
    /// The longest delay between two pushes of one event.
    pub push_max_delay_ms: u64,
    /// Headers stamped further than this ahead of this node's clock are refused.
    pub max_clock_skew_ms: u64,
    /// Lead only for chain blocks at most this far behind the chain's head.
    pub lead_within_blocks: u64,
    /// Bytes of events one answer carries at most (proposal replies; the node pages the rest).
    pub response_budget_bytes: usize,
    /// As leader, cut a candidate on the one held candidate still waiting for its registration
    /// (a chained round) instead of waiting for its promotion. A leader's policy only: a
    /// replica judges a chained candidate the same either way. Off by default: on the devnet
    /// it measured no faster and cost throughput (BENCHMARKS.md, "Chained candidates").
    pub chain_candidates: bool,
    /// Writers are paced to the stream's nodes that were found holding one of its events
    /// within this long ([`Notification::EventReplicated`](crate::Notification)); a node
    /// silent for longer (crashed, cut off) no longer holds them back.
    pub pace_window_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            params: NetworkParams::default(),
            recency_window: 32,
            admission_margin: 8,
            fetch_delay_ms: 200,
            proposal_timeout_ms: 500,
            candidate_timeout_ms: 2_000,
            catch_up_retry_ms: 1_000,
            candidate_ttl_blocks: 4,
            push_delay_ms: 1_000,
            push_max_delay_ms: 8_000,
            max_clock_skew_ms: 5_000,
            lead_within_blocks: 2,
            response_budget_bytes: 2 * 1024 * 1024,
            chain_candidates: false,
            pace_window_ms: 3_000,
        }
    }
}

/// A value that changes at chain blocks: what was in force at each block.
#[derive(Clone, Debug)]
pub(crate) struct Timeline<T> {
    from: BTreeMap<u64, T>,
}

impl<T: Copy> Timeline<T> {
    pub(crate) fn new(initial: T) -> Self {
        Self {
            from: BTreeMap::from([(0, initial)]),
        }
    }

    /// `value` is in force from `block` on.
    pub(crate) fn set(&mut self, block: u64, value: T) {
        self.from.insert(block, value);
    }

    /// What was in force at `block`.
    pub(crate) fn at(&self, block: u64) -> T {
        *self
            .from
            .range(..=block)
            .next_back()
            .map(|(_, v)| v)
            .expect("a timeline starts at block 0")
    }

    /// What is in force now.
    pub(crate) fn latest(&self) -> T {
        *self
            .from
            .values()
            .next_back()
            .expect("a timeline starts at block 0")
    }
}

impl EngineConfig {
    /// The rules a miniblock's events are judged by under `params`.
    pub(crate) fn rules(&self, params: &NetworkParams) -> crate::stream::Rules {
        crate::stream::Rules {
            window: self.recency_window,
            max_event_bytes: params.max_event_bytes,
        }
    }

    /// The stricter rules an event enters a minipool by: a narrower window, so it stays
    /// includable for `admission_margin` miniblocks.
    pub(crate) fn admission_rules(&self, params: &NetworkParams) -> crate::stream::Rules {
        crate::stream::Rules {
            window: self
                .recency_window
                .saturating_sub(self.admission_margin)
                .max(1),
            max_event_bytes: params.max_event_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_answers_what_was_in_force_at_each_block() {
        let mut timeline = Timeline::new(1);
        timeline.set(10, 2);
        timeline.set(20, 3);
        assert_eq!(
            [0, 9, 10, 19, 20, 99].map(|b| timeline.at(b)),
            [1, 1, 2, 2, 3, 3]
        );
        assert_eq!(timeline.latest(), 3);
    }
}
