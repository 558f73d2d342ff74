//! The invariants, checked after the network healed, and an independent replay of the chain.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256};
use rill_protocol::ParsedMiniblock;

use super::{CHANGED, PARAMS, Sim, WINDOW};

impl Sim {
    pub(super) fn check(&self) {
        // Chains: every replica holds the registered chain (one that jumped to a peer's
        // snapshot backfilled what it skipped).
        for (i, node) in self.nodes.iter().enumerate() {
            let hashes: Vec<B256> = node.store.miniblocks.iter().map(|m| m.hash()).collect();
            assert_eq!(
                hashes, self.registered,
                "node {i} did not end on the registered chain (gap {:?})",
                node.store.gap
            );
        }
        let chain = &self.full_chain();
        replay(chain, self.change_block());
        // No event a node stored (and kept) is stranded: it is in exactly one miniblock,
        // unless a promotion made it inadmissible and it was dropped.
        let mut included: BTreeMap<B256, usize> = BTreeMap::new();
        for miniblock in chain {
            for event in miniblock.events() {
                *included.entry(event.hash()).or_default() += 1;
            }
        }
        for (hash, (event, holders)) in &self.stored_by {
            if holders.is_empty() {
                continue; // only a node that lost its disk had it
            }
            match included.get(hash) {
                Some(1) => {}
                Some(count) => panic!("event {hash} is in {count} miniblocks"),
                None => assert!(
                    self.dropped.contains(hash),
                    "event {hash} ({:?} by {}) was stored by {holders:?} but never included",
                    event.membership(),
                    event.creator()
                ),
            }
        }
        assert!(
            chain.len() > 3,
            "the stream made progress ({} miniblocks)",
            chain.len()
        );
    }

    /// The whole chain, from the replicas' stores together (one that jumped to a peer's
    /// snapshot lacks what came before).
    pub(super) fn full_chain(&self) -> Vec<ParsedMiniblock> {
        let mut by_num: BTreeMap<u64, ParsedMiniblock> = BTreeMap::new();
        for node in &self.nodes {
            for m in &node.store.miniblocks {
                by_num.entry(m.num()).or_insert_with(|| m.clone());
            }
        }
        assert_eq!(
            by_num.len(),
            self.registered.len(),
            "the replicas together hold the whole chain"
        );
        by_num.into_values().collect()
    }

    /// The first chain block of the changed rules.
    fn change_block(&self) -> u64 {
        super::ACTIVE_MS / super::BLOCK_MS / 2 + 1
    }
}

/// An independent check of a chain: links, increasing timestamps, the rules of each
/// miniblock's electing block (count, bytes, snapshots), no event twice, and every event
/// admissible on the state as of the previous miniblock.
fn replay(chain: &[ParsedMiniblock], change_block: u64) {
    let genesis = &chain[0];
    let mut members: BTreeSet<Address> = BTreeSet::from([genesis.events()[0].creator()]);
    let mut seen: BTreeSet<B256> = genesis.events().iter().map(|e| e.hash()).collect();
    let mut last_snapshot = 0u64;
    let mut event_count = genesis.events().len() as u64;
    for (num, miniblock) in chain.iter().enumerate().skip(1) {
        assert_eq!(
            miniblock.prev_hash(),
            chain[num - 1].hash(),
            "miniblock {num} links to its parent"
        );
        let header = miniblock.header();
        assert!(
            header.timestamp_ms > chain[num - 1].header().timestamp_ms,
            "timestamps increase"
        );
        let params = if header.chain_block >= change_block {
            CHANGED
        } else {
            PARAMS
        };
        assert!(miniblock.events().len() <= params.max_events_per_miniblock);
        let bytes: usize = miniblock
            .events()
            .iter()
            .map(|e| e.envelope().event.len())
            .sum();
        assert!(
            bytes <= params.max_miniblock_bytes,
            "miniblock {num} is too large"
        );
        // Snapshots: not before `interval` miniblocks since the last one, never later than
        // twice that.
        let since = num as u64 - last_snapshot;
        let interval = params.snapshot_interval;
        match header.snapshot.is_some() {
            true => assert!(
                since >= interval,
                "miniblock {num} snapshots early (rules of block {})",
                header.chain_block
            ),
            false => assert!(
                since < 2 * interval,
                "miniblock {num} has no snapshot though one is overdue"
            ),
        }
        assert_eq!(
            header.prev_snapshot_num, last_snapshot,
            "miniblock {num}'s previous snapshot"
        );
        assert_eq!(
            header.event_num_offset, event_count,
            "miniblock {num}'s event offset"
        );
        event_count += miniblock.events().len() as u64;
        let before = members.clone();
        for event in miniblock.events() {
            assert!(
                seen.insert(event.hash()),
                "event {} twice in the chain",
                event.hash()
            );
            let (prev_num, prev_hash) = event.prev_miniblock().expect("events name a miniblock");
            assert!(
                prev_num < num as u64 && chain[prev_num as usize].hash() == prev_hash,
                "bad prev ref"
            );
            assert!(num as u64 - 1 - prev_num <= WINDOW, "stale event included");
            let creator = event.creator();
            match event.membership() {
                Some((true, address)) => {
                    assert!(!before.contains(&address), "join of a member");
                    assert!(
                        address == creator || before.contains(&creator),
                        "invite by a non-member"
                    );
                    members.insert(address);
                }
                Some((false, address)) => {
                    assert!(
                        before.contains(&creator) && before.contains(&address),
                        "bad leave"
                    );
                    members.remove(&address);
                }
                None => assert!(
                    before.contains(&creator),
                    "message from a non-member in miniblock {num}"
                ),
            }
        }
        if let Some(snapshot) = &header.snapshot {
            let listed: BTreeSet<Address> = snapshot
                .members
                .iter()
                .map(|m| Address::from_slice(m))
                .collect();
            assert_eq!(
                listed, members,
                "miniblock {num}'s snapshot lists the members"
            );
            assert_eq!(
                snapshot.event_count, event_count,
                "miniblock {num}'s snapshot count"
            );
            last_snapshot = num as u64;
        }
    }
}
