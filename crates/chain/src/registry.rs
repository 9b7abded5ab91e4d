//! The contract's binding, its deployment, and the reverts it defines as typed errors.

use alloy::network::{Ethereum, TransactionBuilder};
use alloy::primitives::{Address, Bytes};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;

/// The generated types: the contract's calls, events, errors and its instance type.
mod binding {
    #![allow(missing_docs)]
    alloy::sol!(
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        TaskRegistry,
        "../../contracts/out/TaskRegistry.abi.json"
    );
}

pub use binding::TaskRegistry;

/// The contract's creation code, as compiled into `contracts/out/TaskRegistry.bin`.
const BYTECODE_HEX: &str = include_str!("../../../contracts/out/TaskRegistry.bin");

/// A deployed registry, reached through `P`.
pub type Registry<P> = TaskRegistry::TaskRegistryInstance<P>;

/// What can go wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The contract reverted with one of its own errors.
    #[error("the TaskRegistry reverted: {0:?}")]
    Reverted(TaskRegistry::TaskRegistryErrors),
    /// Any other failure: the node, the transport, a revert without a known reason.
    #[error("{0}")]
    Other(String),
}

impl From<alloy::contract::Error> for ChainError {
    fn from(e: alloy::contract::Error) -> Self {
        match e.as_decoded_interface_error::<TaskRegistry::TaskRegistryErrors>() {
            Some(revert) => Self::Reverted(revert),
            None => Self::Other(e.to_string()),
        }
    }
}

/// The creation code to deploy.
pub fn bytecode() -> Result<Bytes, ChainError> {
    BYTECODE_HEX
        .trim()
        .parse()
        .map_err(|e| ChainError::Other(format!("contracts/out/TaskRegistry.bin is not hex: {e}")))
}

/// Deploys a registry from the provider's default signer (who becomes its owner) and returns
/// its address once the deployment is mined.
pub async fn deploy<P: Provider<Ethereum>>(provider: &P) -> Result<Address, ChainError> {
    let tx = TransactionRequest::default().with_deploy_code(bytecode()?);
    let receipt = provider
        .send_transaction(tx)
        .await
        .map_err(|e| ChainError::Other(format!("sending the deployment: {e}")))?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Other(format!("waiting for the deployment: {e}")))?;
    if !receipt.status() {
        return Err(ChainError::Other(format!(
            "the deployment reverted in transaction {}",
            receipt.transaction_hash
        )));
    }
    receipt.contract_address.ok_or_else(|| {
        ChainError::Other("the deployment's receipt names no contract address".into())
    })
}

/// A provider over HTTP or HTTPS that signs with `signer`.
///
/// Nonces are asked of the node for every transaction (alloy's default caches them, and a send
/// that fails after taking one leaves a gap that stalls every later transaction), gas is
/// estimated, and the chain id is read from the node. HTTPS uses rustls with the ring provider
/// and the system's certificate store; WebSocket URLs are not taken yet.
pub fn connect_http(url: &str, signer: PrivateKeySigner) -> Result<DynProvider, ChainError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ChainError::Other(format!(
            "the RPC URL \"{url}\" is not http:// or https://: WebSocket endpoints are not supported yet; use the node's HTTP endpoint"
        )));
    }
    // The process-wide TLS provider: ring (kube uses it too); a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = url
        .parse()
        .map_err(|e| ChainError::Other(format!("the RPC URL \"{url}\" does not parse: {e}")))?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(signer)
        .connect_http(url)
        .erased())
}

/// Sets how often `provider` polls the node for new blocks (receipts wait on them); alloy's
/// default is 7 s for a remote node, 250 ms for a local one.
pub fn set_poll_interval(provider: &DynProvider, every: std::time::Duration) {
    provider.client().set_poll_interval(every);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_taken_and_the_error_says_why() {
        let signer: PrivateKeySigner =
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
                .parse()
                .unwrap();
        for url in ["ws://127.0.0.1:8546", "wss://rpc.example", "127.0.0.1:8545"] {
            let err = connect_http(url, signer.clone()).unwrap_err().to_string();
            assert!(err.contains("not http:// or https://"), "{url}: {err}");
        }
        assert!(connect_http("http://127.0.0.1:8545", signer.clone()).is_ok());
        assert!(connect_http("https://rpc.example", signer).is_ok());
    }
}
