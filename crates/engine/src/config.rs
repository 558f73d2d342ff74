//! Protocol parameters: the registry's network config and the node's own timers.

/// Protocol parameters (from the registry's config and the node's settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Events may build on one of the last this many miniblocks.
    pub recency_window: u64,
    /// Largest event accepted.
    pub max_event_bytes: usize,
    /// At most this many events per miniblock.
    pub max_events_per_miniblock: usize,
    /// A snapshot every this many miniblocks.
    pub snapshot_interval: u64,
    /// Wait this long after a `NewEventInPool` before fetching the event.
    pub fetch_delay_ms: u64,
    /// The leader stops waiting for proposals after this long.
    pub proposal_timeout_ms: u64,
    /// Retry a catch-up fetch after this long.
    pub catch_up_retry_ms: u64,
    /// Forget an unregistered candidate after this many chain blocks.
    pub candidate_ttl_blocks: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            recency_window: 32,
            max_event_bytes: 64 * 1024,
            max_events_per_miniblock: 10_000,
            snapshot_interval: 16,
            fetch_delay_ms: 200,
            proposal_timeout_ms: 500,
            catch_up_retry_ms: 1_000,
            candidate_ttl_blocks: 4,
        }
    }
}

impl EngineConfig {
    /// Whether miniblock `num` carries a snapshot.
    pub fn snapshot_due(&self, num: u64) -> bool {
        self.snapshot_interval > 0 && num.is_multiple_of(self.snapshot_interval)
    }

    pub(crate) fn rules(&self) -> crate::stream::Rules {
        crate::stream::Rules {
            window: self.recency_window,
            max_event_bytes: self.max_event_bytes,
        }
    }
}
