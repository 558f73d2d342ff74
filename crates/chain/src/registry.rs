//! Typed reads and writes of the registry contract.
//!
//! Writes here go through the provider's own nonce filler and are meant for administration
//! (deploy, config, node registration) and tests. A running node sends its transactions through
//! its [`crate::Registrar`], the one owner of its nonce.

use std::collections::HashMap;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use rill_protocol::StreamId;

use crate::bindings::RillRegistry::{self, RillRegistryInstance};
use crate::provider::{RECEIPT_TIMEOUT, receipt_within};
use crate::{
    ChainError, ChainProvider, NetworkConfig, NodeRecord, NodeStatus, RegistryEvent, StreamRecord,
};

/// The registry contract at one address.
#[derive(Clone, Debug)]
pub struct Registry {
    contract: RillRegistryInstance<ChainProvider>,
}

/// Sends a transaction, waits for its receipt (at most [`RECEIPT_TIMEOUT`]), and fails if it
/// reverted.
pub(crate) async fn transact<P: Provider, D: CallDecoder>(
    call: CallBuilder<P, D>,
) -> Result<TransactionReceipt, ChainError> {
    let receipt = receipt_within(call.send().await?, RECEIPT_TIMEOUT).await?;
    if !receipt.status() {
        return Err(ChainError::TxFailed(receipt.transaction_hash));
    }
    Ok(receipt)
}

/// The block a receipt's transaction was mined in.
pub(crate) fn mined_in(receipt: &TransactionReceipt) -> Result<u64, ChainError> {
    receipt
        .block_number
        .ok_or(ChainError::NoBlockNumber(receipt.transaction_hash))
}

impl Registry {
    /// The registry at `address`.
    pub fn new(address: Address, provider: ChainProvider) -> Self {
        Self {
            contract: RillRegistry::new(address, provider),
        }
    }

    /// Deploys a new registry owned by the provider's signer.
    pub async fn deploy(provider: ChainProvider) -> Result<Self, ChainError> {
        let deploy = RillRegistry::deploy_builder(provider.clone());
        let receipt = receipt_within(deploy.send().await?, RECEIPT_TIMEOUT).await?;
        let address = receipt
            .contract_address
            .filter(|_| receipt.status())
            .ok_or(ChainError::TxFailed(receipt.transaction_hash))?;
        Ok(Self::new(address, provider))
    }

    /// The contract's address.
    pub fn address(&self) -> Address {
        *self.contract.address()
    }

    /// The chain's current block number.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        Ok(self.contract.provider().get_block_number().await?)
    }

    /// The provider this handle uses.
    pub fn provider(&self) -> &ChainProvider {
        self.contract.provider()
    }

    pub(crate) fn contract(&self) -> &RillRegistryInstance<ChainProvider> {
        &self.contract
    }

    /// Sets one configuration value (owner only).
    pub async fn set_config(&self, key: &str, value: u64) -> Result<(), ChainError> {
        transact(self.contract.setConfig(key.to_owned(), U256::from(value))).await?;
        Ok(())
    }

    /// Writes every value of `config` (owner only).
    pub async fn apply_config(&self, config: &NetworkConfig) -> Result<(), ChainError> {
        for (key, value) in config.entries() {
            self.set_config(key, value).await?;
        }
        Ok(())
    }

    /// The network configuration; keys never set keep their defaults.
    pub async fn config(&self) -> Result<NetworkConfig, ChainError> {
        let all = self.contract.getAllConfig().call().await?;
        let mut config = NetworkConfig::default();
        for (key, value) in all.keys.iter().zip(all.values) {
            config.apply(key, value.saturating_to());
        }
        Ok(config)
    }

    /// The changes of the network's rules and of node statuses (`ConfigUpdated`, `NodeAdded`,
    /// `NodeStatusUpdated`) in blocks `from ..= to`, with the block of each, in order. A node
    /// reads them at start so that it judges old miniblocks by the rules and electorate of
    /// their time.
    pub async fn rule_history(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, RegistryEvent)>, ChainError> {
        use alloy::sol_types::SolEvent;
        const RANGE: u64 = 10_000;
        let signatures = vec![
            RillRegistry::ConfigUpdated::SIGNATURE_HASH,
            RillRegistry::NodeAdded::SIGNATURE_HASH,
            RillRegistry::NodeStatusUpdated::SIGNATURE_HASH,
        ];
        let mut history = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(RANGE - 1));
            let filter = alloy::rpc::types::Filter::new()
                .address(self.address())
                .event_signature(signatures.clone())
                .from_block(start)
                .to_block(end);
            let mut logs = self.provider().get_logs(&filter).await?;
            logs.sort_by_key(|log| (log.block_number, log.log_index));
            for log in logs {
                if let (Some(block), Some(event)) =
                    (log.block_number, RegistryEvent::decode(&log.inner))
                {
                    history.push((block, event));
                }
            }
            start = end + 1;
        }
        Ok(history)
    }

    /// Registers a node (owner only).
    pub async fn register_node(
        &self,
        address: Address,
        multiaddr: &str,
        status: NodeStatus,
    ) -> Result<(), ChainError> {
        let call = self
            .contract
            .registerNode(address, multiaddr.to_owned(), status.as_u8());
        transact(call).await?;
        Ok(())
    }

    /// Changes a node's status (owner only).
    pub async fn update_node_status(
        &self,
        address: Address,
        status: NodeStatus,
    ) -> Result<(), ChainError> {
        transact(self.contract.updateNodeStatus(address, status.as_u8())).await?;
        Ok(())
    }

    /// Changes a node's multiaddr (owner or the node itself).
    pub async fn update_node_multiaddr(
        &self,
        address: Address,
        multiaddr: &str,
    ) -> Result<(), ChainError> {
        transact(
            self.contract
                .updateNodeMultiaddr(address, multiaddr.to_owned()),
        )
        .await?;
        Ok(())
    }

    /// Every registered node.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ChainError> {
        let nodes = self.contract.getAllNodes().call().await?;
        nodes
            .into_iter()
            .map(|node| {
                Ok(NodeRecord {
                    address: node.nodeAddress,
                    multiaddr: node.multiaddr,
                    status: NodeStatus::from_u8(node.status)
                        .ok_or(ChainError::UnknownNodeStatus(node.status))?,
                })
            })
            .collect()
    }

    /// Allocates a stream on `nodes` with its genesis miniblock (the signer must be an
    /// Operational node). Returns the block it was mined in.
    pub async fn allocate_stream(
        &self,
        id: StreamId,
        nodes: Vec<Address>,
        genesis_hash: B256,
        genesis: Vec<u8>,
    ) -> Result<u64, ChainError> {
        let call =
            self.contract
                .allocateStream(id.into(), nodes, genesis_hash, Bytes::from(genesis));
        mined_in(&transact(call).await?)
    }

    /// One stream, or `None` if it was never allocated.
    pub async fn stream(&self, id: StreamId) -> Result<Option<StreamRecord>, ChainError> {
        match self.contract.getStream(id.into()).call().await {
            Ok(stream) => Ok(Some(StreamRecord::from_contract(id, stream))),
            Err(e) => match ChainError::from(e) {
                ChainError::Reverted(RillRegistry::RillRegistryErrors::UnknownStream(_)) => {
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }

    /// The encoded genesis miniblocks of `ids`, read from their `StreamAllocated` logs in
    /// blocks `0 ..= to` (the registry keeps only their hashes). Streams not allocated by then
    /// are missing from the answer.
    pub async fn genesis_of(
        &self,
        ids: &[StreamId],
        to: u64,
    ) -> Result<HashMap<StreamId, Vec<u8>>, ChainError> {
        use alloy::sol_types::SolEvent;
        const RANGE: u64 = 10_000;
        const IDS_PER_FILTER: usize = 256;
        let mut found = HashMap::new();
        for chunk in ids.chunks(IDS_PER_FILTER) {
            let topics: Vec<B256> = chunk.iter().map(|id| B256::from(*id)).collect();
            let mut start = 0;
            while start <= to && !chunk.iter().all(|id| found.contains_key(id)) {
                let end = to.min(start.saturating_add(RANGE - 1));
                let filter = alloy::rpc::types::Filter::new()
                    .address(self.address())
                    .event_signature(RillRegistry::StreamAllocated::SIGNATURE_HASH)
                    .topic1(topics.clone())
                    .from_block(start)
                    .to_block(end);
                for log in self.provider().get_logs(&filter).await? {
                    if let Some(RegistryEvent::StreamAllocated {
                        stream_id, genesis, ..
                    }) = RegistryEvent::decode(&log.inner)
                    {
                        found.insert(stream_id, genesis);
                    }
                }
                start = end + 1;
            }
        }
        Ok(found)
    }

    /// How many streams exist.
    pub async fn stream_count(&self) -> Result<u64, ChainError> {
        Ok(self.contract.getStreamCount().call().await?.saturating_to())
    }

    /// Every stream, read `page_size` at a time.
    pub async fn streams(&self, page_size: u64) -> Result<Vec<StreamRecord>, ChainError> {
        let page_size = page_size.max(1);
        let mut all = Vec::new();
        let mut start = 0u64;
        loop {
            let page = self
                .contract
                .getPaginatedStreams(U256::from(start), U256::from(start + page_size))
                .call()
                .await?;
            all.extend(
                page.page
                    .into_iter()
                    .map(|s| StreamRecord::from_contract(s.id.into(), s.stream)),
            );
            if page.lastPage {
                return Ok(all);
            }
            start += page_size;
        }
    }
}
