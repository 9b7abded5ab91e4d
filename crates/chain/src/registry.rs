//! The contract's binding, its deployment, and the reverts it defines as typed errors.

use alloy::network::{Ethereum, TransactionBuilder};
use alloy::primitives::{Address, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;

/// The generated types: the contract's calls, events, errors and its instance type. The
/// overloaded `submitTask` is bound as `submitTask_0` (five arguments: a 1-of-1 task) and
/// `submitTask_1` (eight: a k-of-n task with fee and deadline).
mod binding {
    #![allow(missing_docs)]
    #![allow(
        clippy::too_many_arguments,
        reason = "the generated builder of the eight-argument `submitTask` (`submitTask_1`)"
    )]
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
    /// The RPC URL cannot be used as given (the message says why and what to give instead).
    #[error("{0}")]
    Url(String),
    /// TLS cannot be set up (no certificate store to check the node against).
    #[error("{0}")]
    Tls(String),
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

/// Sets how often `provider` polls the node for new blocks (receipts wait on them); alloy's
/// default is 7 s for a remote node, 250 ms for a local one.
pub fn set_poll_interval(provider: &DynProvider, every: std::time::Duration) {
    provider.client().set_poll_interval(every);
}

/// The newest block's timestamp, in unix seconds: the clock the contract's windows and deadlines
/// are read against.
pub async fn block_time(provider: &DynProvider) -> Result<u64, ChainError> {
    let block = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .map_err(|e| ChainError::Other(format!("reading the newest block: {e}")))?
        .ok_or_else(|| ChainError::Other("the node has no newest block".into()))?;
    Ok(block.header.timestamp)
}
