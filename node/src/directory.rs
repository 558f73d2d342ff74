//! The registry directory: who is a node and where it listens, which streams exist and on
//! which nodes, and the network config; kept current from the registry's logs. The node's loop
//! writes it; the client service and the router read it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use alloy_primitives::Address;
use rill_chain::{NetworkConfig, NodeRecord, NodeStatus, RegistryEvent};
use rill_p2p::{Multiaddr, NodeEntry, PeerId, Protocol};
use rill_protocol::StreamId;
use rill_protocol::keys::address_of_peer;

/// A registered node that can be reached: its record names a multiaddr ending in its own
/// `/p2p/<peer id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reachable {
    pub(crate) peer: PeerId,
    pub(crate) addr: Multiaddr,
    pub(crate) status: NodeStatus,
}

/// What the registry says, as far as this node needs it.
#[derive(Debug)]
pub(crate) struct Directory {
    me: Address,
    records: HashMap<Address, NodeRecord>,
    reachable: HashMap<Address, Reachable>,
    streams: HashMap<StreamId, Vec<Address>>,
    /// Streams placed on this node.
    mine: BTreeSet<StreamId>,
    network: NetworkConfig,
}

/// The shared directory.
pub(crate) type SharedDirectory = Arc<RwLock<Directory>>;

/// Reads the shared directory (a poisoned lock means a writer panicked: the node is going
/// down anyway, and the data is still the last consistent write).
pub(crate) fn read(directory: &SharedDirectory) -> RwLockReadGuard<'_, Directory> {
    directory
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn reachable(record: &NodeRecord) -> Option<Reachable> {
    let addr: Multiaddr = record.multiaddr.parse().ok()?;
    let peer = addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })?;
    // A multiaddr naming someone else's key is not this node.
    (address_of_peer(&peer) == Some(record.address)).then_some(Reachable {
        peer,
        addr,
        status: record.status,
    })
}

impl Directory {
    pub(crate) fn new(me: Address, nodes: Vec<NodeRecord>, network: NetworkConfig) -> Self {
        let mut directory = Self {
            me,
            records: HashMap::new(),
            reachable: HashMap::new(),
            streams: HashMap::new(),
            mine: BTreeSet::new(),
            network,
        };
        for record in nodes {
            directory.records.insert(record.address, record);
        }
        directory.refresh_nodes();
        directory
    }

    fn refresh_nodes(&mut self) {
        self.reachable = self
            .records
            .values()
            .filter_map(|r| reachable(r).map(|p| (r.address, p)))
            .collect();
    }

    /// Applies a registry log. Returns true if the set of nodes changed.
    pub(crate) fn apply(&mut self, event: &RegistryEvent) -> bool {
        match event {
            RegistryEvent::NodeAdded(record) => {
                self.records.insert(record.address, record.clone());
            }
            RegistryEvent::NodeStatusUpdated { address, status } => {
                if let Some(record) = self.records.get_mut(address) {
                    record.status = *status;
                }
            }
            RegistryEvent::NodeMultiaddrUpdated { address, multiaddr } => {
                if let Some(record) = self.records.get_mut(address) {
                    record.multiaddr = multiaddr.clone();
                }
            }
            RegistryEvent::StreamAllocated {
                stream_id, nodes, ..
            } => {
                self.add_stream(*stream_id, nodes.clone());
                return false;
            }
            RegistryEvent::ConfigUpdated { key, value } => {
                self.network.apply(key, *value);
                return false;
            }
            RegistryEvent::StreamAllocationFailed { .. }
            | RegistryEvent::MiniblockRegistered { .. }
            | RegistryEvent::MiniblockRegistrationFailed { .. } => return false,
        }
        self.refresh_nodes();
        true
    }

    pub(crate) fn add_stream(&mut self, id: StreamId, nodes: Vec<Address>) {
        if nodes.contains(&self.me) {
            self.mine.insert(id);
        }
        self.streams.insert(id, nodes);
    }

    /// The nodes that take part in the network: Operational ones, and Departing ones (they
    /// still serve what they hold). Failed and not yet initialised nodes are shut out.
    pub(crate) fn node_entries(&self) -> Vec<NodeEntry> {
        self.reachable
            .iter()
            .filter(|(_, r)| matches!(r.status, NodeStatus::Operational | NodeStatus::Departing))
            .map(|(address, r)| NodeEntry {
                address: *address,
                peer: r.peer,
                addr: Some(r.addr.clone()),
            })
            .collect()
    }

    /// How to reach a node.
    pub(crate) fn node(&self, address: &Address) -> Option<&Reachable> {
        self.reachable.get(address)
    }

    /// Whether a peer is a registered node.
    pub(crate) fn is_node_peer(&self, peer: &PeerId) -> bool {
        self.reachable.values().any(|r| r.peer == *peer)
    }

    /// A stream's nodes, in registry order.
    pub(crate) fn stream_nodes(&self, id: &StreamId) -> Option<&[Address]> {
        self.streams.get(id).map(Vec::as_slice)
    }

    /// Whether the stream is placed on this node.
    pub(crate) fn holds(&self, id: &StreamId) -> bool {
        self.mine.contains(id)
    }

    /// The streams placed on this node.
    pub(crate) fn mine(&self) -> &BTreeSet<StreamId> {
        &self.mine
    }

    /// The peers this node shares streams with (it stays connected to them).
    pub(crate) fn stream_peers(&self) -> Vec<PeerId> {
        let mut peers = BTreeSet::new();
        for id in &self.mine {
            for node in self.streams.get(id).into_iter().flatten() {
                if *node != self.me
                    && let Some(r) = self.reachable.get(node)
                {
                    peers.insert(r.peer);
                }
            }
        }
        peers.into_iter().collect()
    }

    /// Where a new stream goes: `replicationFactor` of the Operational nodes.
    pub(crate) fn place(&self, id: &StreamId) -> Vec<Address> {
        let operational: Vec<Address> = self
            .reachable
            .iter()
            .filter(|(_, r)| r.status == NodeStatus::Operational)
            .map(|(a, _)| *a)
            .collect();
        let factor = usize::try_from(self.network.replication_factor).unwrap_or(usize::MAX);
        rill_engine::place(id, &operational, factor)
    }

    /// The network config as the registry holds it now.
    pub(crate) fn network(&self) -> &NetworkConfig {
        &self.network
    }
}
