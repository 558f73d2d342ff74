//! Which promotions may move the head with a small write and settle later (see rill-store's
//! `settle.rs`): those of a candidate this node stored whose events are all still where the
//! candidate keeps them. A candidate keeps its events in its own parts and, for those that
//! were in the minipool when it was stored, in the pool's rows. Only a minipool drop takes
//! events out of those rows before the candidate's promotion, so a drop in a stream makes its
//! stored candidates promote whole. So do candidates stored before a restart (not known
//! here) and miniblocks fetched from peers (never stored as candidates).

use std::collections::HashMap;

use alloy_primitives::B256;
use rill_protocol::StreamId;

/// Candidates remembered at most. One never promoted (its round lost) is forgotten when its
/// stream promotes past its number; a stream that stops first keeps its entry until this
/// bound clears them all (their promotions, if any, are then written whole).
const REMEMBERED: usize = 65_536;

/// Candidates stored since the node started, by hash.
#[derive(Default)]
pub(crate) struct StoredCandidates(HashMap<B256, (StreamId, u64)>);

impl StoredCandidates {
    /// Candidate `hash`, number `num` of `stream`, was submitted to the store.
    pub(crate) fn stored(&mut self, stream: StreamId, num: u64, hash: B256) {
        if self.0.len() >= REMEMBERED {
            self.0.clear();
        }
        self.0.insert(hash, (stream, num));
    }

    /// Events were dropped from `stream`'s minipool: its stored candidates may miss them.
    pub(crate) fn dropped(&mut self, stream: &StreamId) {
        self.0.retain(|_, (s, _)| s != stream);
    }

    /// `stream`'s head moved some other way (a jump to a snapshot).
    pub(crate) fn moved(&mut self, stream: &StreamId) {
        self.dropped(stream);
    }

    /// Miniblock `num`, `hash` of `stream` is promoted: whether it may settle later. The
    /// stream's candidates up to `num` are forgotten either way.
    pub(crate) fn promoting(&mut self, stream: &StreamId, num: u64, hash: &B256) -> bool {
        let settles_later = self.0.get(hash) == Some(&(*stream, num));
        self.0.retain(|_, (s, n)| s != stream || *n > num);
        settles_later
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: StreamId = StreamId([1; 32]);
    const B: StreamId = StreamId([2; 32]);

    #[test]
    fn only_a_stored_candidate_with_nothing_dropped_since_settles_later() {
        let mut stored = StoredCandidates::default();
        let (h1, h2, h3) = (
            B256::repeat_byte(1),
            B256::repeat_byte(2),
            B256::repeat_byte(3),
        );
        stored.stored(A, 1, h1);
        stored.stored(A, 1, h2);
        stored.stored(B, 1, h3);
        stored.dropped(&B);
        assert!(!stored.promoting(&B, 1, &h3), "its stream dropped events");
        assert!(
            !stored.promoting(&A, 1, &B256::repeat_byte(9)),
            "never stored"
        );
        assert!(
            stored.0.is_empty(),
            "the stream's candidates up to 1 are forgotten"
        );
        stored.stored(A, 2, h1);
        assert!(!stored.promoting(&B, 2, &h1), "another stream's");
        assert!(stored.promoting(&A, 2, &h1));
        assert!(stored.0.is_empty());
    }
}
