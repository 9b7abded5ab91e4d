//! The checks a coordinator makes before it takes tasks from a registry: the node is on the
//! chain it was told, a registry is deployed at the address, and its key may write results.

use crate::registry::Registry;
use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider};

/// Why the coordinator cannot use this registry; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The node could not be reached or failed (worth waiting for).
    #[error("the node at COORDINATOR_CHAIN_RPC_URL failed: {0}")]
    Node(String),
    /// The node is on another chain.
    #[error(
        "the node is on chain {actual}, not COORDINATOR_CHAIN_ID {expected}; point COORDINATOR_CHAIN_RPC_URL at a node of chain {expected}, or set COORDINATOR_CHAIN_ID={actual} if that chain is meant"
    )]
    WrongChain {
        /// The chain id set.
        expected: u64,
        /// The node's chain id.
        actual: u64,
    },
    /// No contract at the address.
    #[error(
        "no contract at COORDINATOR_CONTRACT_ADDRESS {0} on this chain; deploy one with `coordinator chain deploy` and set the address it prints"
    )]
    NoContract(Address),
    /// The key's account may not write results.
    #[error(
        "the executor account {executor} is not authorised on the TaskRegistry at {contract}; its owner {owner} must authorise it: `coordinator chain authorize --executor {executor}` with the owner's key file, or call setExecutor({executor}, true)"
    )]
    NotAuthorised {
        /// The key's account.
        executor: Address,
        /// The registry.
        contract: Address,
        /// The registry's owner.
        owner: Address,
    },
}

/// Checks the chain id, the contract, and that `executor` is authorised.
pub async fn check_registry(
    provider: &DynProvider,
    contract: Address,
    chain_id: u64,
    executor: Address,
) -> Result<(), SetupError> {
    let node = |what: &str, e: &dyn std::fmt::Display| SetupError::Node(format!("{what}: {e}"));
    let actual = provider
        .get_chain_id()
        .await
        .map_err(|e| node("eth_chainId", &e))?;
    if actual != chain_id {
        return Err(SetupError::WrongChain {
            expected: chain_id,
            actual,
        });
    }
    let code = provider
        .get_code_at(contract)
        .await
        .map_err(|e| node("eth_getCode", &e))?;
    if code.is_empty() {
        return Err(SetupError::NoContract(contract));
    }
    let registry = Registry::new(contract, provider.clone());
    let allowed = registry
        .executors(executor)
        .call()
        .await
        .map_err(|e| node("reading executors()", &e))?;
    if !allowed {
        let owner = registry
            .owner()
            .call()
            .await
            .map_err(|e| node("reading owner()", &e))?;
        return Err(SetupError::NotAuthorised {
            executor,
            contract,
            owner,
        });
    }
    Ok(())
}
