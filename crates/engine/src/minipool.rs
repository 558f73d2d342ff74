//! A stream's minipool: the admitted events that wait for a miniblock, in arrival order, and
//! which of the stream's nodes are known to hold each of them.

use std::collections::{BTreeSet, HashMap};

use alloy_primitives::{Address, B256};
use rill_protocol::ParsedEvent;

#[derive(Debug)]
struct Pooled {
    event: ParsedEvent,
    /// Nodes known to hold the event (this node included once it stored it).
    holders: BTreeSet<Address>,
    /// Whether waiting clients were told that a quorum holds it.
    quorum_told: bool,
}

/// The minipool of one stream.
#[derive(Debug, Default)]
pub(crate) struct Minipool {
    order: Vec<B256>,
    events: HashMap<B256, Pooled>,
}

impl Minipool {
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn contains(&self, hash: &B256) -> bool {
        self.events.contains_key(hash)
    }

    pub(crate) fn get(&self, hash: &B256) -> Option<&ParsedEvent> {
        self.events.get(hash).map(|p| &p.event)
    }

    /// The hashes in arrival order.
    pub(crate) fn hashes(&self) -> &[B256] {
        &self.order
    }

    /// The events in arrival order.
    pub(crate) fn events(&self) -> impl Iterator<Item = &ParsedEvent> {
        self.order
            .iter()
            .filter_map(|h| self.events.get(h).map(|p| &p.event))
    }

    /// Adds an event held by `me`; returns false if it was already there.
    pub(crate) fn insert(&mut self, event: ParsedEvent, me: Address) -> bool {
        let hash = event.hash();
        if self.events.contains_key(&hash) {
            return false;
        }
        self.order.push(hash);
        self.events.insert(
            hash,
            Pooled {
                event,
                holders: BTreeSet::from([me]),
                quorum_told: false,
            },
        );
        true
    }

    /// Records that `who` holds `hash`. Returns true the first time more than half of
    /// `nodes` hold it (the moment waiting clients are told).
    pub(crate) fn hold(&mut self, hash: &B256, who: Address, nodes: usize) -> bool {
        let Some(pooled) = self.events.get_mut(hash) else {
            return false;
        };
        pooled.holders.insert(who);
        if !pooled.quorum_told && pooled.holders.len() * 2 > nodes {
            pooled.quorum_told = true;
            return true;
        }
        false
    }

    /// Takes out every event that `remove` selects, and returns them in arrival order.
    pub(crate) fn remove_where(
        &mut self,
        mut remove: impl FnMut(&ParsedEvent) -> bool,
    ) -> Vec<ParsedEvent> {
        let mut removed = Vec::new();
        let events = &mut self.events;
        self.order.retain(|hash| {
            let gone = events.get(hash).is_none_or(|p| remove(&p.event));
            if gone && let Some(pooled) = events.remove(hash) {
                removed.push(pooled.event);
            }
            !gone
        });
        removed
    }
}
