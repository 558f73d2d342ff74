//! Errors talking to the chain.

use alloy::contract::Error as ContractError;
use alloy::transports::{RpcError, TransportError};

use crate::bindings::RillRegistry::RillRegistryErrors;

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC URL does not parse.
    #[error("{0:?} is not an RPC URL (expected e.g. http://127.0.0.1:8545)")]
    BadUrl(String),
    /// The node is unreachable or answered garbage; worth retrying.
    #[error("chain RPC unavailable: {0}")]
    Transport(String),
    /// The contract reverted with one of its own errors.
    #[error("registry reverted: {0:?}")]
    Reverted(RillRegistryErrors),
    /// The RPC node refused the call or transaction (e.g. an unknown revert, bad nonce).
    #[error("chain refused the call: {0}")]
    Rejected(String),
    /// A mined transaction failed.
    #[error("transaction {0} reverted")]
    TxFailed(alloy::primitives::TxHash),
    /// Something the registry returned does not make sense.
    #[error("unexpected registry data: {0}")]
    Unexpected(String),
}

impl ChainError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Transport(_))
    }
}

impl From<TransportError> for ChainError {
    fn from(error: TransportError) -> Self {
        match &error {
            RpcError::ErrorResp(payload) => {
                match payload.as_decoded_interface_error::<RillRegistryErrors>() {
                    Some(decoded) => ChainError::Reverted(decoded),
                    None => ChainError::Rejected(payload.to_string()),
                }
            }
            _ => ChainError::Transport(error.to_string()),
        }
    }
}

impl From<ContractError> for ChainError {
    fn from(error: ContractError) -> Self {
        match error {
            ContractError::TransportError(e) => e.into(),
            ContractError::PendingTransactionError(e) => ChainError::Transport(e.to_string()),
            other => match other.as_decoded_interface_error::<RillRegistryErrors>() {
                Some(decoded) => ChainError::Reverted(decoded),
                None => ChainError::Unexpected(other.to_string()),
            },
        }
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(error: alloy::providers::PendingTransactionError) -> Self {
        ChainError::Transport(error.to_string())
    }
}
