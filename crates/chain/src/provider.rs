//! Building providers.

use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use rill_protocol::NodeKey;

use crate::{ChainError, ChainProvider};

fn parse(url: &str) -> Result<alloy::transports::http::reqwest::Url, ChainError> {
    url.parse().map_err(|_| ChainError::BadUrl(url.to_owned()))
}

/// How often a sent transaction's receipt is polled for. alloy guesses from the URL (250 ms for
/// a loopback address, 7 s for any other), which would make every registration on a chain
/// reached over a network wait at least 7 s: the interval is set, whatever the URL.
const RECEIPT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

fn client(url: &str) -> Result<RpcClient, ChainError> {
    Ok(RpcClient::new_http(parse(url)?).with_poll_interval(RECEIPT_POLL_INTERVAL))
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

/// Sends `wei` from the provider's signer to `to` and waits for it to be mined.
pub async fn transfer(
    provider: &ChainProvider,
    to: alloy::primitives::Address,
    wei: alloy::primitives::U256,
) -> Result<(), ChainError> {
    use alloy::network::TransactionBuilder;
    let request = alloy::rpc::types::TransactionRequest::default()
        .with_to(to)
        .with_value(wei);
    let receipt = provider
        .send_transaction(request)
        .await?
        .get_receipt()
        .await?;
    if !receipt.status() {
        return Err(ChainError::TxFailed(receipt.transaction_hash));
    }
    Ok(())
}
