//! The invariants, checked after the network healed, and an independent replay of the chain.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256};
use rill_protocol::ParsedMiniblock;

use super::{CHANGED, PARAMS, Sim, WINDOW};

impl Sim {
    pub(super) fn check(&self) {
        // Chains: every replica holds the registered chain.
        for (i, node) in self.nodes.iter().enumerate() {
            let hashes: Vec<B256> = node.store.miniblocks.iter().map(|m| m.hash()).collect();
            assert_eq!(
                hashes, self.registered,
                "node {i} did not end on the registered chain"
            );
        }
        let chain = &self.nodes[0].store.miniblocks;
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
        assert_eq!(
            header.snapshot.is_some(),
            params.snapshot_due(num as u64),
            "miniblock {num}'s snapshot follows the rules of block {}",
            header.chain_block
        );
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
    }
}
