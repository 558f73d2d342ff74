//! Building providers.

use alloy::providers::{Provider, ProviderBuilder};
use rill_protocol::NodeKey;

use crate::{ChainError, ChainProvider};

fn parse(url: &str) -> Result<alloy::transports::http::reqwest::Url, ChainError> {
    url.parse().map_err(|_| ChainError::BadUrl(url.to_owned()))
}

/// A read-only provider for `url`.
pub fn connect(url: &str) -> Result<ChainProvider, ChainError> {
    Ok(ProviderBuilder::new().connect_http(parse(url)?).erased())
}

/// A provider that signs transactions with `key` (gas, nonce and chain id filled in).
pub fn connect_with_key(url: &str, key: &NodeKey) -> Result<ChainProvider, ChainError> {
    Ok(ProviderBuilder::new()
        .wallet(key.alloy_signer())
        .connect_http(parse(url)?)
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
