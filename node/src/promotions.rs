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

/// Candidates stored since the node started, by stream: a promotion or a drop touches only
/// its own stream's entries (a node with a thousand busy streams promotes a thousand a block).
#[derive(Default)]
pub(crate) struct StoredCandidates {
    by_stream: HashMap<StreamId, Vec<(u64, B256)>>,
    /// Entries in all streams.
    len: usize,
}

impl StoredCandidates {
    /// Candidate `hash`, number `num` of `stream`, was submitted to the store.
    pub(crate) fn stored(&mut self, stream: StreamId, num: u64, hash: B256) {
        if self.len >= REMEMBERED {
            self.by_stream.clear();
            self.len = 0;
        }
        self.by_stream.entry(stream).or_default().push((num, hash));
        self.len += 1;
    }

    /// Events were dropped from `stream`'s minipool: its stored candidates may miss them.
    pub(crate) fn dropped(&mut self, stream: &StreamId) {
        if let Some(forgotten) = self.by_stream.remove(stream) {
            self.len -= forgotten.len();
        }
    }

    /// `stream`'s head moved some other way (a jump to a snapshot).
    pub(crate) fn moved(&mut self, stream: &StreamId) {
        self.dropped(stream);
    }

    /// Miniblock `num`, `hash` of `stream` is promoted: whether it may settle later. The
    /// stream's candidates up to `num` are forgotten either way.
    pub(crate) fn promoting(&mut self, stream: &StreamId, num: u64, hash: &B256) -> bool {
        let Some(stored) = self.by_stream.get_mut(stream) else {
            return false;
        };
        let settles_later = stored.contains(&(num, *hash));
        let before = stored.len();
        stored.retain(|(n, _)| *n > num);
        self.len -= before - stored.len();
        if stored.is_empty() {
            self.by_stream.remove(stream);
        }
        settles_later
    }

    /// Entries in all streams.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
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
        assert_eq!(
            stored.len(),
            0,
            "the stream's candidates up to 1 are forgotten"
        );
        stored.stored(A, 2, h1);
        assert!(!stored.promoting(&B, 2, &h1), "another stream's");
        assert!(stored.promoting(&A, 2, &h1));
        assert_eq!(stored.len(), 0);
        assert!(stored.by_stream.is_empty());
    }
}
