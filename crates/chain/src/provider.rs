//! Building providers.

use std::time::Duration;

use alloy::network::Ethereum;
use alloy::providers::{PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::TransactionReceipt;
use alloy::transports::http::reqwest;
use rill_protocol::NodeKey;

use crate::{ChainError, ChainProvider};

fn parse(url: &str) -> Result<alloy::transports::http::reqwest::Url, ChainError> {
    url.parse().map_err(|_| ChainError::BadUrl(url.to_owned()))
}

/// How often a sent transaction's receipt is polled for. alloy guesses from the URL (250 ms for
/// a loopback address, 7 s for any other), which would make every registration on a chain
/// reached over a network wait at least 7 s: the interval is set, whatever the URL.
const RECEIPT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long one JSON-RPC request may take. Without a limit, a chain node that accepts a
/// connection and never answers would hold the caller (a node's registrar or chain monitor)
/// forever; with it, the call fails as transient and is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an administrative transaction ([`transfer`], the registry's writes) may wait to be
/// mined before it fails with [`ChainError::NotMined`].
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn client(url: &str) -> Result<RpcClient, ChainError> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ChainError::Transport(Box::new(e)))?;
    Ok(
        RpcClient::new_http_with_client(http, parse(url)?)
            .with_poll_interval(RECEIPT_POLL_INTERVAL),
    )
}

/// Waits for `pending`'s receipt at most `timeout`: a transaction that is never mined (dropped
/// from the mempool, priced out) is an error, not a caller waiting forever.
pub async fn receipt_within(
    pending: PendingTransactionBuilder<Ethereum>,
    timeout: Duration,
) -> Result<TransactionReceipt, ChainError> {
    let tx = *pending.tx_hash();
    match tokio::time::timeout(timeout, pending.get_receipt()).await {
        Ok(receipt) => Ok(receipt?),
        Err(_) => Err(ChainError::NotMined {
            tx,
            waited: timeout,
        }),
    }
}

/// A read-only provider for `url`.
pub fn connect(url: &str) -> Result<ChainProvider, ChainError> {
    Ok(ProviderBuilder::new().connect_client(client(url)?).erased())
}

/// A provider that signs transactions with `key` (gas, nonce and chain id filled in).
pub fn connect_with_key(url: &str, key: &NodeKey) -> Result<ChainProvider, ChainError> {
    Ok(ProviderBuilder::new()
        .wallet(key.alloy_signer())
        .connect_client(client(url)?)
        .erased())
}

/// Sends `wei` from the provider's signer to `to` and waits for it to be mined (at most
/// [`RECEIPT_TIMEOUT`]).
pub async fn transfer(
    provider: &ChainProvider,
    to: alloy::primitives::Address,
    wei: alloy::primitives::U256,
) -> Result<(), ChainError> {
    use alloy::network::TransactionBuilder;
    let request = alloy::rpc::types::TransactionRequest::default()
        .with_to(to)
        .with_value(wei);
    let pending = provider.send_transaction(request).await?;
    let receipt = receipt_within(pending, RECEIPT_TIMEOUT).await?;
    if !receipt.status() {
        return Err(ChainError::TxFailed(receipt.transaction_hash));
    }
    Ok(())
}
