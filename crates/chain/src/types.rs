//! The registry's records as Rill's own types.

use alloy::primitives::{Address, B256};
use rill_protocol::StreamId;

use crate::bindings::RillRegistry;

/// The contract's `FLAG_SEALED`.
const SEALED_FLAG: u64 = 1;

/// The contract's `MAX_STREAM_NODES`: the most nodes a stream's record holds, so the highest
/// replication factor a network can use. An allocation naming more fails with
/// [`AllocationFailure::TooManyNodes`].
pub const MAX_STREAM_NODES: u64 = 11;

/// A node's status in the registry. Only `Operational` nodes take part in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NodeStatus {
    /// Registered, not yet serving.
    NotInitialized,
    /// Serving streams.
    Operational,
    /// Leaving: serves what it holds, takes nothing new.
    Departing,
    /// Out of service.
    Failed,
}

impl NodeStatus {
    /// The contract's enum value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// From the contract's enum value.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => NodeStatus::NotInitialized,
            1 => NodeStatus::Operational,
            2 => NodeStatus::Departing,
            3 => NodeStatus::Failed,
            _ => return None,
        })
    }
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its address (and so its libp2p identity).
    pub address: Address,
    /// Where it listens, as a libp2p multiaddr.
    pub multiaddr: String,
    /// Its status.
    pub status: NodeStatus,
}

/// A stream as registered: its nodes and the head of its miniblock chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its id.
    pub id: StreamId,
    /// The nodes that hold it, in registry order (the order leader election indexes).
    pub nodes: Vec<Address>,
    /// Hash of the last registered miniblock.
    pub last_miniblock_hash: B256,
    /// Number of the last registered miniblock.
    pub last_miniblock_num: u64,
    /// Whether the stream takes no more miniblocks.
    pub sealed: bool,
    /// Hash of its genesis miniblock (the miniblock itself is in the allocation log).
    pub genesis_hash: B256,
}

impl StreamRecord {
    pub(crate) fn from_contract(id: StreamId, stream: RillRegistry::Stream) -> Self {
        Self {
            id,
            nodes: stream.nodes,
            last_miniblock_hash: stream.lastMiniblockHash,
            last_miniblock_num: stream.lastMiniblockNum,
            sealed: stream.flags & SEALED_FLAG != 0,
            genesis_hash: stream.genesisHash,
        }
    }
}

/// One miniblock head to register: the contract applies it if the sender is one of the
/// stream's nodes, `num` is the registered number + 1 and `prev_hash` the registered hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MiniblockRegistration {
    /// The stream.
    pub stream_id: StreamId,
    /// Hash of the miniblock this one builds on.
    pub prev_hash: B256,
    /// Hash of the new miniblock.
    pub hash: B256,
    /// Its number.
    pub num: u64,
    /// Whether to seal the stream with it.
    pub sealed: bool,
}

impl From<MiniblockRegistration> for RillRegistry::SetMiniblock {
    fn from(r: MiniblockRegistration) -> Self {
        Self {
            streamId: r.stream_id.into(),
            prevMiniblockHash: r.prev_hash,
            lastMiniblockHash: r.hash,
            lastMiniblockNum: r.num,
            isSealed: r.sealed,
        }
    }
}

/// The network's configuration, kept in the registry as owner-set key/value pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkConfig {
    /// How many nodes hold each stream.
    pub replication_factor: u64,
    /// A snapshot every this many miniblocks.
    pub snapshot_interval: u64,
    /// At most this many events in one miniblock.
    pub max_events_per_miniblock: u64,
    /// Events larger than this are refused.
    pub max_event_bytes: u64,
    /// At most this many bytes of events in one miniblock.
    pub max_miniblock_bytes: u64,
}

impl NetworkConfig {
    /// Registry key of [`Self::replication_factor`].
    pub const REPLICATION_FACTOR: &'static str = "replicationFactor";
    /// Registry key of [`Self::snapshot_interval`].
    pub const SNAPSHOT_INTERVAL: &'static str = "snapshotInterval";
    /// Registry key of [`Self::max_events_per_miniblock`].
    pub const MAX_EVENTS_PER_MINIBLOCK: &'static str = "maxEventsPerMiniblock";
    /// Registry key of [`Self::max_event_bytes`].
    pub const MAX_EVENT_BYTES: &'static str = "maxEventBytes";
    /// Registry key of [`Self::max_miniblock_bytes`].
    pub const MAX_MINIBLOCK_BYTES: &'static str = "maxMiniblockBytes";

    /// The settings as registry key/value pairs.
    pub fn entries(&self) -> [(&'static str, u64); 5] {
        [
            (Self::REPLICATION_FACTOR, self.replication_factor),
            (Self::SNAPSHOT_INTERVAL, self.snapshot_interval),
            (
                Self::MAX_EVENTS_PER_MINIBLOCK,
                self.max_events_per_miniblock,
            ),
            (Self::MAX_EVENT_BYTES, self.max_event_bytes),
            (Self::MAX_MINIBLOCK_BYTES, self.max_miniblock_bytes),
        ]
    }

    /// Applies one registry key/value; unknown keys are ignored (and reported as `false`).
    pub fn apply(&mut self, key: &str, value: u64) -> bool {
        let slot = match key {
            Self::REPLICATION_FACTOR => &mut self.replication_factor,
            Self::SNAPSHOT_INTERVAL => &mut self.snapshot_interval,
            Self::MAX_EVENTS_PER_MINIBLOCK => &mut self.max_events_per_miniblock,
            Self::MAX_EVENT_BYTES => &mut self.max_event_bytes,
            Self::MAX_MINIBLOCK_BYTES => &mut self.max_miniblock_bytes,
            _ => return false,
        };
        *slot = value;
        true
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            replication_factor: 3,
            snapshot_interval: 16,
            max_events_per_miniblock: 10_000,
            max_event_bytes: 64 * 1024,
            max_miniblock_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Why the registry refused one entry of a registration batch (the contract's reason string).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationFailure {
    /// The stream is not allocated (`NOT_FOUND`).
    #[error("the stream is not allocated")]
    UnknownStream,
    /// The sender is not one of the stream's nodes (`NOT_A_STREAM_NODE`).
    #[error("the sender is not a node of the stream")]
    NotAStreamNode,
    /// The stream is sealed (`STREAM_SEALED`).
    #[error("the stream is sealed")]
    Sealed,
    /// The number is not the registered head's + 1 (`BAD_MINIBLOCK_NUM`): another miniblock
    /// got there first.
    #[error("the miniblock number does not follow the registered head")]
    BadMiniblockNum,
    /// The previous hash is not the registered head's (`BAD_PREV_HASH`).
    #[error("the previous hash is not the registered head")]
    BadPrevHash,
    /// A reason this version does not know (a newer contract).
    #[error("refused: {0}")]
    Other(String),
}

impl RegistrationFailure {
    /// The contract's reason string, parsed.
    pub fn from_contract(reason: &str) -> Self {
        match reason {
            "NOT_FOUND" => RegistrationFailure::UnknownStream,
            "NOT_A_STREAM_NODE" => RegistrationFailure::NotAStreamNode,
            "STREAM_SEALED" => RegistrationFailure::Sealed,
            "BAD_MINIBLOCK_NUM" => RegistrationFailure::BadMiniblockNum,
            "BAD_PREV_HASH" => RegistrationFailure::BadPrevHash,
            other => RegistrationFailure::Other(other.to_owned()),
        }
    }

    /// A short stable name for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RegistrationFailure::UnknownStream => "unknown_stream",
            RegistrationFailure::NotAStreamNode => "not_a_stream_node",
            RegistrationFailure::Sealed => "sealed",
            RegistrationFailure::BadMiniblockNum => "bad_miniblock_num",
            RegistrationFailure::BadPrevHash => "bad_prev_hash",
            RegistrationFailure::Other(_) => "other",
        }
    }
}

/// Why the registry refused one new stream of an allocation batch (the contract's reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationFailure {
    /// A stream with this id exists (`ALREADY_EXISTS`).
    #[error("the stream already exists")]
    AlreadyExists,
    /// The entry names no nodes (`NO_NODES`).
    #[error("the stream names no nodes")]
    NoNodes,
    /// One of the nodes is not registered (`UNKNOWN_NODE`).
    #[error("a node of the stream is not registered")]
    UnknownNode,
    /// A node is named twice (`DUPLICATE_NODE`).
    #[error("a node of the stream is named twice")]
    DuplicateNode,
    /// The entry names more nodes than a stream's record holds (`TOO_MANY_NODES`).
    #[error("the stream names more nodes than the registry allows")]
    TooManyNodes,
    /// A reason this version does not know (a newer contract).
    #[error("refused: {0}")]
    Other(String),
}

impl AllocationFailure {
    /// The contract's reason string, parsed.
    pub fn from_contract(reason: &str) -> Self {
        match reason {
            "ALREADY_EXISTS" => AllocationFailure::AlreadyExists,
            "NO_NODES" => AllocationFailure::NoNodes,
            "UNKNOWN_NODE" => AllocationFailure::UnknownNode,
            "DUPLICATE_NODE" => AllocationFailure::DuplicateNode,
            "TOO_MANY_NODES" => AllocationFailure::TooManyNodes,
            other => AllocationFailure::Other(other.to_owned()),
        }
    }

    /// A short stable name for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AllocationFailure::AlreadyExists => "already_exists",
            AllocationFailure::NoNodes => "no_nodes",
            AllocationFailure::UnknownNode => "unknown_node",
            AllocationFailure::DuplicateNode => "duplicate_node",
            AllocationFailure::TooManyNodes => "too_many_nodes",
            AllocationFailure::Other(_) => "other",
        }
    }
}

/// A registry log, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A node joined the registry.
    NodeAdded(NodeRecord),
    /// A node's status changed.
    NodeStatusUpdated {
        /// The node.
        address: Address,
        /// Its new status.
        status: NodeStatus,
    },
    /// A node moved.
    NodeMultiaddrUpdated {
        /// The node.
        address: Address,
        /// Its new multiaddr.
        multiaddr: String,
    },
    /// A configuration value changed.
    ConfigUpdated {
        /// The key.
        key: String,
        /// The new value.
        value: u64,
    },
    /// A stream was allocated with its genesis miniblock.
    StreamAllocated {
        /// The stream.
        stream_id: StreamId,
        /// Its nodes, in registry order.
        nodes: Vec<Address>,
        /// The genesis miniblock hash.
        genesis_hash: B256,
        /// The genesis miniblock, encoded.
        genesis: Vec<u8>,
    },
    /// A new stream was refused.
    StreamAllocationFailed {
        /// The stream.
        stream_id: StreamId,
        /// The contract's reason.
        reason: AllocationFailure,
    },
    /// A miniblock head was registered.
    MiniblockRegistered {
        /// The stream.
        stream_id: StreamId,
        /// The miniblock hash.
        hash: B256,
        /// Its number.
        num: u64,
        /// Whether the stream is now sealed.
        sealed: bool,
    },
    /// A registration entry was refused.
    MiniblockRegistrationFailed {
        /// The stream.
        stream_id: StreamId,
        /// The refused miniblock hash.
        hash: B256,
        /// Its number.
        num: u64,
        /// The contract's reason.
        reason: RegistrationFailure,
    },
}

impl RegistryEvent {
    /// Decodes a registry log; `None` for logs of other contracts or unknown events.
    pub fn decode(log: &alloy::primitives::Log) -> Option<Self> {
        use RillRegistry::RillRegistryEvents as E;
        use alloy::sol_types::SolEventInterface;
        let event = E::decode_log(log).ok()?.data;
        Some(match event {
            E::NodeAdded(e) => RegistryEvent::NodeAdded(NodeRecord {
                address: e.nodeAddress,
                multiaddr: e.multiaddr,
                status: NodeStatus::from_u8(e.status)?,
            }),
            E::NodeStatusUpdated(e) => RegistryEvent::NodeStatusUpdated {
                address: e.nodeAddress,
                status: NodeStatus::from_u8(e.status)?,
            },
            E::NodeMultiaddrUpdated(e) => RegistryEvent::NodeMultiaddrUpdated {
                address: e.nodeAddress,
                multiaddr: e.multiaddr,
            },
            E::ConfigUpdated(e) => RegistryEvent::ConfigUpdated {
                key: e.key,
                value: e.value.saturating_to(),
            },
            E::StreamAllocated(e) => RegistryEvent::StreamAllocated {
                stream_id: e.streamId.into(),
                nodes: e.nodes,
                genesis_hash: e.genesisHash,
                genesis: e.genesis.to_vec(),
            },
            E::StreamAllocationFailed(e) => RegistryEvent::StreamAllocationFailed {
                stream_id: e.streamId.into(),
                reason: AllocationFailure::from_contract(&e.reason),
            },
            E::StreamLastMiniblockUpdated(e) => RegistryEvent::MiniblockRegistered {
                stream_id: e.streamId.into(),
                hash: e.lastMiniblockHash,
                num: e.lastMiniblockNum,
                sealed: e.isSealed,
            },
            E::StreamLastMiniblockUpdateFailed(e) => RegistryEvent::MiniblockRegistrationFailed {
                stream_id: e.streamId.into(),
                hash: e.lastMiniblockHash,
                num: e.lastMiniblockNum,
                reason: RegistrationFailure::from_contract(&e.reason),
            },
            E::OwnershipTransferred(_) => return None,
        })
    }
}
