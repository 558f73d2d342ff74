//! Errors talking to the chain.

use alloy::contract::Error as ContractError;
use alloy::primitives::TxHash;
use alloy::transports::{RpcError, TransportError};

use crate::bindings::RillRegistry::RillRegistryErrors;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC URL does not parse.
    #[error("{0:?} is not an RPC URL (expected e.g. http://127.0.0.1:8545)")]
    BadUrl(String),
    /// The node is unreachable or answered garbage; worth retrying.
    #[error("chain RPC unavailable: {0}")]
    Transport(#[source] Source),
    /// The chain does not have this block yet (a node behind a load balancer); worth retrying.
    #[error("block {0} is not available yet")]
    BlockNotFound(u64),
    /// The contract reverted with one of its own errors.
    #[error("registry reverted: {0:?}")]
    Reverted(RillRegistryErrors),
    /// The RPC node refused the call or transaction (an unknown revert, a bad nonce, no funds).
    #[error("chain refused the call (code {code}): {message}")]
    Rejected {
        /// The JSON-RPC error code.
        code: i64,
        /// The node's message.
        message: String,
    },
    /// A mined transaction failed.
    #[error("transaction {0} reverted")]
    TxFailed(TxHash),
    /// A sent transaction was not mined in time (dropped from the mempool or priced out); it
    /// may still be mined later.
    #[error("transaction {tx} not mined within {waited:?}")]
    NotMined {
        /// The transaction.
        tx: TxHash,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// A receipt has no block number (the RPC node is not following the spec).
    #[error("receipt of {0} has no block number")]
    NoBlockNumber(TxHash),
    /// A batch transaction's logs do not give one outcome per entry.
    #[error("a batch of {entries} entries produced {outcomes} outcome logs")]
    OutcomeCount {
        /// Entries sent.
        entries: usize,
        /// Outcome logs found.
        outcomes: usize,
    },
    /// The registry returned a node status this version does not know.
    #[error("the registry returned node status {0}, which this version does not know")]
    UnknownNodeStatus(u8),
    /// The contract call could not be encoded or its answer decoded (an ABI mismatch).
    #[error("registry ABI mismatch: {0}")]
    Abi(#[source] Source),
}

impl ChainError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChainError::Transport(_) | ChainError::BlockNotFound(_) | ChainError::NotMined { .. }
        )
    }
}

impl From<TransportError> for ChainError {
    fn from(error: TransportError) -> Self {
        match &error {
            RpcError::ErrorResp(payload) => {
                match payload.as_decoded_interface_error::<RillRegistryErrors>() {
                    Some(decoded) => ChainError::Reverted(decoded),
                    None => ChainError::Rejected {
                        code: payload.code,
                        message: payload.message.to_string(),
                    },
                }
            }
            _ => ChainError::Transport(Box::new(error)),
        }
    }
}

impl From<ContractError> for ChainError {
    fn from(error: ContractError) -> Self {
        match error {
            ContractError::TransportError(e) => e.into(),
            ContractError::PendingTransactionError(e) => ChainError::Transport(Box::new(e)),
            other => match other.as_decoded_interface_error::<RillRegistryErrors>() {
                Some(decoded) => ChainError::Reverted(decoded),
                None => ChainError::Abi(Box::new(other)),
            },
        }
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(error: alloy::providers::PendingTransactionError) -> Self {
        ChainError::Transport(Box::new(error))
    }
}
