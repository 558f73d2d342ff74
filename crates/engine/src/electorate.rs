//! Who may lead: the stream's nodes that were Operational at the electing block. Departing
//! nodes still serve and count toward quorums but are not elected; Failed ones are neither
//! elected nor waited for. The quorum stays more than half of the stream's nodes.

use std::collections::HashMap;

use alloy_primitives::{Address, B256};
use rill_protocol::StreamId;

use crate::config::Timeline;
use crate::elect_leader;

/// A node's standing in the registry, as far as the protocol cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Serving and electable.
    Operational,
    /// Leaving: serves what it holds and stores candidates, but is not elected.
    Departing,
    /// Out of service (or not initialised): not elected, not waited for.
    Failed,
}

impl NodeStatus {
    fn elected(self) -> bool {
        self == NodeStatus::Operational
    }
}

/// Node statuses over chain blocks; a node the registry never changed is Operational.
#[derive(Debug, Default)]
pub(crate) struct Electorate {
    statuses: HashMap<Address, Timeline<NodeStatus>>,
}

impl Electorate {
    /// `node` has `status` from `block` on.
    pub(crate) fn set(&mut self, node: Address, block: u64, status: NodeStatus) {
        self.statuses
            .entry(node)
            .or_insert_with(|| Timeline::new(NodeStatus::Operational))
            .set(block, status);
    }

    /// `node`'s status at `block`.
    pub(crate) fn status(&self, node: &Address, block: u64) -> NodeStatus {
        self.statuses
            .get(node)
            .map_or(NodeStatus::Operational, |t| t.at(block))
    }

    /// Whether this node should wait for `node` (it is not Failed now).
    pub(crate) fn waited_for(&self, node: &Address) -> bool {
        self.statuses
            .get(node)
            .is_none_or(|t| t.latest() != NodeStatus::Failed)
    }

    /// The leader of `stream` at `block`: drawn among the nodes Operational at that block
    /// (among all of them if none is).
    pub(crate) fn leader(
        &self,
        stream: &StreamId,
        block: u64,
        prevrandao: &B256,
        nodes: &[Address],
    ) -> Address {
        let electable: Vec<Address> = nodes
            .iter()
            .copied()
            .filter(|n| self.status(n, block).elected())
            .collect();
        let pool = if electable.is_empty() {
            nodes
        } else {
            &electable
        };
        elect_leader(stream, block, prevrandao, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departing_and_failed_nodes_are_never_elected_from_their_block_on() {
        let nodes: Vec<Address> = (1..=3).map(Address::repeat_byte).collect();
        let stream = StreamId([4; 32]);
        let mut electorate = Electorate::default();
        electorate.set(nodes[0], 100, NodeStatus::Departing);
        electorate.set(nodes[1], 100, NodeStatus::Failed);
        let mut before = std::collections::HashSet::new();
        for block in 0..300u64 {
            let randao = B256::from(alloy_primitives::U256::from(block * 31));
            let leader = electorate.leader(&stream, block, &randao, &nodes);
            if block < 100 {
                before.insert(leader);
            } else {
                assert_eq!(leader, nodes[2], "block {block}");
            }
        }
        assert_eq!(before.len(), 3, "everyone led before block 100");
        assert!(electorate.waited_for(&nodes[0]));
        assert!(!electorate.waited_for(&nodes[1]));
    }
}
