//! The chain follower: each chain block's registry logs, in order, into the directory and the
//! engine (allocations, registrations, refused registrations, rule and node status changes),
//! then the block itself. Rules and statuses change from the block whose logs change them, on
//! every node alike, so every node judges a miniblock by the rules of its electing block.

use alloy_primitives::B256;
use prost::Message as _;
use rill_chain::{ChainBlock, NetworkConfig, NodeStatus, RegistryEvent};
use rill_engine::{Input, NetworkParams};
use rill_protocol::{ParsedMiniblock, StreamId, pb};
use tracing::{info, warn};

use crate::event_loop::{NodeLoop, now_ms};

/// The engine's rules from the registry's config.
pub(crate) fn params(config: &NetworkConfig) -> NetworkParams {
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    NetworkParams {
        max_event_bytes: size(config.max_event_bytes),
        max_events_per_miniblock: size(config.max_events_per_miniblock),
        max_miniblock_bytes: size(config.max_miniblock_bytes),
        snapshot_interval: config.snapshot_interval,
    }
}

/// The engine's view of a registry status.
pub(crate) fn status(status: NodeStatus) -> rill_engine::NodeStatus {
    match status {
        NodeStatus::Operational => rill_engine::NodeStatus::Operational,
        NodeStatus::Departing => rill_engine::NodeStatus::Departing,
        NodeStatus::NotInitialized | NodeStatus::Failed => rill_engine::NodeStatus::Failed,
    }
}

impl NodeLoop {
    /// A chain block: the registry's logs in it, in order, then the block itself.
    pub(crate) fn on_block(&mut self, block: ChainBlock) {
        let now = now_ms();
        let number = block.block.number;
        let _span = tracing::debug_span!("block", number).entered();
        self.blocks_seen.record(number, block.block.prevrandao);
        let effects = self.streams.handle(now, Input::ChainHead(block.head));
        self.executor.run(effects);
        self.executor.logs_of(number);
        for event in block.events {
            self.on_registry_event(number, event);
        }
        let effects = self.streams.handle(
            now,
            Input::ChainBlock {
                number,
                prevrandao: block.block.prevrandao,
            },
        );
        self.executor.run(effects);
        self.executor.last_block(number);
        self.metrics.chain_head.set(number as i64);
        self.status.send_modify(|s| s.chain_head = number);
    }

    /// One registry log of block `number`.
    pub(crate) fn on_registry_event(&mut self, number: u64, event: RegistryEvent) {
        let nodes_changed = self
            .directory
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&event);
        if nodes_changed {
            self.update_peers();
        }
        let input = match event {
            RegistryEvent::StreamAllocated {
                stream_id,
                nodes,
                genesis_hash,
                genesis,
            } => {
                if nodes.contains(&self.me) {
                    self.allocated(stream_id, nodes, genesis_hash, &genesis);
                }
                return;
            }
            RegistryEvent::MiniblockRegistered {
                stream_id,
                hash,
                num,
                ..
            } => Input::MiniblockRegistered {
                stream: stream_id,
                num,
                hash,
            },
            RegistryEvent::MiniblockRegistrationFailed {
                stream_id,
                hash,
                num,
                ..
            } => {
                self.executor.candidate_rejected(&hash);
                Input::RegistrationRejected {
                    stream: stream_id,
                    num,
                    hash,
                }
            }
            event => match self.rule_change(number, &event) {
                Some(input) => input,
                None => return,
            },
        };
        let effects = self.streams.handle(now_ms(), input);
        self.executor.run(effects);
    }

    /// A change of the network's rules or of a node's status, in force from block `number`
    /// (the directory has already applied it).
    pub(crate) fn rule_change(&self, number: u64, event: &RegistryEvent) -> Option<Input> {
        match event {
            RegistryEvent::ConfigUpdated { key, value } => {
                info!(%key, value, from_block = number, "registry config changed");
                let params = params(crate::directory::read(&self.directory).network());
                Some(Input::Params {
                    from_block: number,
                    params,
                })
            }
            RegistryEvent::NodeAdded(record) => Some(Input::NodeStatus {
                node: record.address,
                from_block: number,
                status: status(record.status),
            }),
            RegistryEvent::NodeStatusUpdated { address, status: s } => {
                info!(node = %address, status = ?s, from_block = number, "node status changed");
                Some(Input::NodeStatus {
                    node: *address,
                    from_block: number,
                    status: status(*s),
                })
            }
            _ => None,
        }
    }

    /// The registry allocated a stream on this node: its genesis, which must hash to what the
    /// registry recorded, goes to the engine, which checks it before anything is stored.
    pub(crate) fn allocated(
        &mut self,
        stream: StreamId,
        nodes: Vec<alloy_primitives::Address>,
        genesis_hash: B256,
        genesis: &[u8],
    ) {
        let opened = pb::Miniblock::decode(genesis)
            .ok()
            .and_then(|m| ParsedMiniblock::open(m, &self.limits).ok());
        let Some(genesis) = opened else {
            warn!(%stream, "allocated with a genesis that does not open; not taken");
            self.metrics.reject("bad_genesis");
            return;
        };
        if genesis.hash() != genesis_hash {
            warn!(%stream, registered = %genesis_hash, actual = %genesis.hash(), "allocated with a genesis that is not the registered one; not taken");
            self.metrics.reject("bad_genesis");
            return;
        }
        let effects = self.streams.handle(
            now_ms(),
            Input::StreamAllocated {
                stream,
                nodes,
                genesis,
            },
        );
        self.executor.run(effects);
        if self.streams.holds(&stream) {
            info!(%stream, "holding a new stream");
            self.update_peers();
        } else {
            warn!(%stream, "allocated with a genesis the engine refused; not taken");
        }
    }
}
