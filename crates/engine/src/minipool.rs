//! A stream's minipool: the admitted events that wait for a miniblock, in arrival order,
//! which of the stream's nodes are known to hold each of them, and when each is due to be
//! pushed again to the nodes that have not confirmed holding it (a schedule ordered by time,
//! so a tick visits only the events that are due, never the whole pool).
//!
//! The events are one insertion-ordered map, so a round walks them in sequence and a
//! promotion takes a block's events out in one pass; events only ever leave it in such
//! passes, which keep the order of the rest. An event taken out leaves its schedule entry
//! behind, skipped when it falls due (at most the push delay's ceiling later): a promotion
//! takes thousands of events out at once, on the node's loop, and need not search the
//! schedule for each.

use std::collections::BTreeSet;

use alloy_primitives::map::{B256IndexMap, B256Set};
use alloy_primitives::{Address, B256};
use rill_protocol::ParsedEvent;

#[derive(Debug)]
struct Pooled {
    event: ParsedEvent,
    /// Nodes known to hold the event (this node included once it stored it).
    holders: BTreeSet<Address>,
    /// Whether waiting clients were told that a quorum holds it.
    quorum_told: bool,
    /// Whether the node was told that a quorum and every live node hold it.
    replicated_told: bool,
    /// When it is next pushed to the nodes not known to hold it.
    next_push_ms: u64,
    /// How many times it was pushed.
    pushes: u32,
}

/// What an event reached when a node was found to hold it (each is reported once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reached {
    /// More than half of the stream's nodes hold it.
    pub(crate) quorum: bool,
    /// More than half of the stream's nodes hold it, and so does every live one.
    pub(crate) replicated: bool,
}

/// The minipool of one stream.
#[derive(Debug, Default)]
pub(crate) struct Minipool {
    /// The events by hash, in arrival order.
    events: B256IndexMap<Pooled>,
    /// When each pooled event is next pushed: `(next_push_ms, hash)`.
    schedule: BTreeSet<(u64, B256)>,
}

impl Minipool {
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(crate) fn contains(&self, hash: &B256) -> bool {
        self.events.contains_key(hash)
    }

    pub(crate) fn get(&self, hash: &B256) -> Option<&ParsedEvent> {
        self.events.get(hash).map(|p| &p.event)
    }

    /// The hashes in arrival order.
    pub(crate) fn hashes(&self) -> impl ExactSizeIterator<Item = &B256> {
        self.events.keys()
    }

    /// The events in arrival order.
    pub(crate) fn events(&self) -> impl Iterator<Item = &ParsedEvent> {
        self.events.values().map(|p| &p.event)
    }

    /// Adds an event held by `me`, first pushed at `push_at_ms` to the nodes that have not
    /// confirmed holding it by then; returns false if it was already there.
    pub(crate) fn insert(&mut self, event: ParsedEvent, me: Address, push_at_ms: u64) -> bool {
        let hash = event.hash();
        if self.events.contains_key(&hash) {
            return false;
        }
        self.events.insert(
            hash,
            Pooled {
                event,
                holders: BTreeSet::from([me]),
                quorum_told: false,
                replicated_told: false,
                next_push_ms: push_at_ms,
                pushes: 0,
            },
        );
        self.schedule.insert((push_at_ms, hash));
        true
    }

    /// The events due for a push at `now`, each with the `nodes` not known to hold it, in
    /// the order they fell due; each is rescheduled after a doubling delay (from `delay_ms` up
    /// to `max_delay_ms`), and one every node holds leaves the schedule. Visits only what is
    /// due.
    pub(crate) fn due_pushes(
        &mut self,
        now: u64,
        nodes: &[Address],
        delay_ms: u64,
        max_delay_ms: u64,
    ) -> Vec<(Address, ParsedEvent)> {
        let mut due = Vec::new();
        while let Some(&(at, hash)) = self.schedule.first() {
            if at > now {
                break;
            }
            self.schedule.pop_first();
            // Gone, or rescheduled since (an entry left by an event taken out and admitted
            // again): nothing to do for this entry.
            let Some(pooled) = self.events.get_mut(&hash).filter(|p| p.next_push_ms == at) else {
                continue;
            };
            let before = due.len();
            let lacking = nodes.iter().filter(|n| !pooled.holders.contains(*n));
            due.extend(lacking.map(|n| (*n, pooled.event.clone())));
            if due.len() == before {
                // Every node holds it: nothing more to push (a node that forgets it after a
                // restart gets it back from proposal rounds and its own fetches).
                continue;
            }
            pooled.pushes = pooled.pushes.saturating_add(1);
            let backoff = delay_ms.saturating_mul(1u64 << pooled.pushes.min(16));
            pooled.next_push_ms = now + backoff.min(max_delay_ms);
            self.schedule.insert((pooled.next_push_ms, hash));
        }
        due
    }

    /// Whether a push may be due at `now`.
    pub(crate) fn push_due_at(&self, now: u64) -> bool {
        self.schedule.first().is_some_and(|(at, _)| *at <= now)
    }

    /// Records that `who` holds `hash`, and says what that event reached for the first time:
    /// more than half of `nodes` hold it (waiting clients are told), and more than half and
    /// every node that `live` selects hold it (writers are paced to that).
    pub(crate) fn hold(
        &mut self,
        hash: &B256,
        who: Address,
        nodes: &[Address],
        live: impl Fn(&Address) -> bool,
    ) -> Reached {
        let Some(pooled) = self.events.get_mut(hash) else {
            return Reached::default();
        };
        pooled.holders.insert(who);
        let quorum = pooled.holders.len() * 2 > nodes.len();
        let mut reached = Reached::default();
        if quorum && !pooled.quorum_told {
            pooled.quorum_told = true;
            reached.quorum = true;
        }
        if quorum
            && !pooled.replicated_told
            && nodes.iter().all(|n| pooled.holders.contains(n) || !live(n))
        {
            pooled.replicated_told = true;
            reached.replicated = true;
        }
        reached
    }

    /// Takes out the events with these hashes (those it holds); the rest keep their order.
    /// Returns how many it took out.
    pub(crate) fn remove_hashes(&mut self, hashes: &B256Set) -> usize {
        let before = self.events.len();
        if !hashes.is_empty() {
            self.events.retain(|hash, _| !hashes.contains(hash));
        }
        before - self.events.len()
    }

    /// Takes out every event that `remove` selects, and returns them in arrival order.
    pub(crate) fn remove_where(
        &mut self,
        mut remove: impl FnMut(&ParsedEvent) -> bool,
    ) -> Vec<ParsedEvent> {
        let mut removed = Vec::new();
        self.events.retain(|_, pooled| {
            let gone = remove(&pooled.event);
            if gone {
                removed.push(pooled.event.clone());
            }
            !gone
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use rill_protocol::{NodeKey, Payload, pb, seal};

    use super::*;

    fn event(salt: u64) -> ParsedEvent {
        let key = NodeKey::from_secret_bytes(&[3; 32]).expect("a key");
        let event = pb::StreamEvent {
            creator: vec![],
            salt: salt.to_be_bytes().to_vec(),
            prev_miniblock_hash: vec![0; 32],
            prev_miniblock_num: 0,
            created_at_ms: 0,
            payload: Some(Payload::Message(pb::Message { data: vec![1] })),
        };
        seal(event, &key).expect("sealed")
    }

    const ME: Address = Address::repeat_byte(1);
    const PEER: Address = Address::repeat_byte(2);

    #[test]
    fn taking_out_by_hash_keeps_the_order_of_the_rest() {
        let mut pool = Minipool::default();
        let events: Vec<ParsedEvent> = (0..6).map(event).collect();
        for e in &events {
            assert!(pool.insert(e.clone(), ME, 100));
        }
        let gone = B256Set::from_iter([events[1].hash(), events[4].hash(), event(99).hash()]);
        assert_eq!(
            pool.remove_hashes(&gone),
            2,
            "the one it never held is not counted"
        );
        let left: Vec<B256> = [0, 2, 3, 5].iter().map(|i| events[*i].hash()).collect();
        assert_eq!(pool.hashes().copied().collect::<Vec<_>>(), left);
        assert!(!pool.contains(&events[1].hash()));
        assert_eq!(pool.remove_hashes(&gone), 0);
        // Their schedule entries stay behind and push nothing.
        let due = pool.due_pushes(100, &[ME, PEER], 10, 1000);
        let mut pushed: Vec<B256> = due.iter().map(|(_, e)| e.hash()).collect();
        let mut expected = left.clone();
        pushed.sort();
        expected.sort();
        assert_eq!(pushed, expected, "each event left, once, to the peer");
        assert!(!pool.push_due_at(100));
    }

    #[test]
    fn an_event_taken_out_and_admitted_again_is_pushed_on_its_new_schedule_only() {
        let mut pool = Minipool::default();
        let e = event(1);
        pool.insert(e.clone(), ME, 100);
        pool.remove_hashes(&B256Set::from_iter([e.hash()]));
        pool.insert(e.clone(), ME, 500);
        assert!(
            pool.due_pushes(100, &[ME, PEER], 10, 1000).is_empty(),
            "the old entry"
        );
        assert!(pool.push_due_at(500));
        let due = pool.due_pushes(500, &[ME, PEER], 10, 1000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0], (PEER, e.clone()));
        // Rescheduled once, after its backoff (10 ms doubled once).
        assert!(pool.due_pushes(519, &[ME, PEER], 10, 1000).is_empty());
        assert_eq!(pool.due_pushes(520, &[ME, PEER], 10, 1000).len(), 1);
    }
}
