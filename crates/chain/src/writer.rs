//! Writing results back with `submitResult`, exactly once per task and pipelined.
//!
//! Each write first simulates the call (`eth_estimateGas`), which reads the task's state on chain:
//! a task already completed (by an earlier run of ours, before a crash) reverts with
//! `AlreadyCompleted` and counts as done, so nothing is sent twice after a restart. The contract
//! itself refuses a second result, so however a retry races, one `TaskCompleted` is all a task
//! ever gets.
//!
//! Nonces are kept here, not asked of the node per transaction: many writes are in flight at
//! once (one per finished task), each takes the next nonce under a short lock, and a failed send
//! drops the local count so the next send reads it again from the node. A transaction that is not
//! mined in time (dropped from the pool, or priced under the market) is sent again with the same
//! nonce and fees raised by a quarter, which replaces it.

use crate::receipts::{Followed, ReceiptTracker};
use crate::registry::{Registry, TaskRegistry::TaskRegistryErrors};
use alloy::eips::eip1559::Eip1559Estimation;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use std::time::Duration;
use tokio::sync::Mutex;

/// How results are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Blocks that must follow a result's block before it counts as written.
    pub confirmations: u64,
    /// Time a transaction gets to be mined (and confirmed) before it is replaced.
    pub receipt_timeout: Duration,
    /// Most replacements of one transaction before the write fails (and is retried later).
    pub max_replacements: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            confirmations: 2,
            receipt_timeout: Duration::from_secs(60),
            max_replacements: 5,
        }
    }
}

/// One task's result as it goes on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChainResult {
    /// The task's id in the registry.
    pub task_id: U256,
    /// Whether the task succeeded.
    pub ok: bool,
    /// The result value (at most the contract's `MAX_RESULT_BYTES`).
    pub result: String,
    /// keccak-256 of the full result document.
    pub envelope_hash: B256,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Our transaction was mined and confirmed.
    Mined {
        /// Its hash.
        tx: B256,
        /// Its block.
        block: u64,
        /// How many times it was replaced with a higher fee first.
        replacements: u32,
    },
    /// The task already had its result on chain (an earlier write of ours landed).
    AlreadyCompleted,
}

/// Why a write failed; every one is worth retrying later except where noted.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The account is not an authorised executor (the owner must call `setExecutor`).
    #[error(
        "the executor account {0} is not authorised on the TaskRegistry; its owner must authorise it (coordinator chain authorize --executor {0})"
    )]
    NotExecutor(Address),
    /// No such task in the registry (a wrong contract, or its request was reorganised away).
    #[error("the TaskRegistry has no task {0}")]
    UnknownTask(U256),
    /// The account cannot pay for gas.
    #[error("the executor account {address} cannot pay for the transaction (fund it): {detail}")]
    NoFunds {
        /// The account.
        address: Address,
        /// The node's words.
        detail: String,
    },
    /// The contract refused the result for another reason (not worth retrying as is).
    #[error("the TaskRegistry refused the result: {0}")]
    Refused(String),
    /// The node failed, could not be reached, or the transaction was not mined.
    #[error("{0}")]
    Node(String),
}

/// Sends results from one executor account.
pub struct ResultWriter {
    provider: DynProvider,
    registry: Registry<DynProvider>,
    from: Address,
    /// The next nonce to use, if known (unknown after a failed send).
    nonce: Mutex<Option<u64>>,
    /// Follows sent transactions to their depth.
    tracker: ReceiptTracker,
    /// The last fee estimate and when it was made (reused for a second).
    fees: Mutex<Option<(std::time::Instant, Eip1559Estimation)>>,
    options: WriteOptions,
}

impl ResultWriter {
    /// A writer to the registry at `contract`, signing as `from` (the provider's signer),
    /// following the chain every `poll`. Must be called within a Tokio runtime.
    pub fn new(
        provider: DynProvider,
        contract: Address,
        from: Address,
        options: WriteOptions,
        poll: Duration,
    ) -> Self {
        Self {
            registry: Registry::new(contract, provider.clone()),
            tracker: ReceiptTracker::start(provider.clone(), poll),
            provider,
            from,
            nonce: Mutex::new(None),
            fees: Mutex::new(None),
            options,
        }
    }

    /// EIP-1559 fees from the node, asked at most once a second.
    async fn fees(&self) -> Result<Eip1559Estimation, WriteError> {
        let mut cached = self.fees.lock().await;
        if let Some((at, fees)) = *cached
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(fees);
        }
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| WriteError::Node(format!("estimating fees: {e}")))?;
        *cached = Some((std::time::Instant::now(), fees));
        Ok(fees)
    }

    /// The account results are sent from.
    pub fn address(&self) -> Address {
        self.from
    }

    /// Writes one result and waits until it is confirmed, or finds it already written.
    pub async fn write(&self, result: &OnChainResult) -> Result<Written, WriteError> {
        let call = self
            .registry
            .submitResult(
                result.task_id,
                result.ok,
                result.result.clone(),
                result.envelope_hash,
            )
            .from(self.from);
        let gas = match call.estimate_gas().await {
            Ok(gas) => gas,
            Err(e) => return self.refusal(result.task_id, e),
        };
        let fees = self.fees().await?;
        let mut request = call
            .into_transaction_request()
            .with_gas_limit(gas.saturating_add(gas / 5))
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let mut tx = self.send_next(&mut request).await?;
        let mut replacements = 0;
        loop {
            let followed = self
                .tracker
                .follow(tx, self.options.confirmations, self.options.receipt_timeout)
                .await;
            match followed {
                // Checked once more against the node: a reorg may have dropped it since.
                Followed::Deep { .. } => match self.confirmed_receipt(tx).await? {
                    Receipt::Confirmed { block } => {
                        return Ok(Written::Mined {
                            tx,
                            block,
                            replacements,
                        });
                    }
                    Receipt::Reverted => return self.recheck(result).await,
                    Receipt::Shallow => continue,
                    Receipt::Missing => {}
                },
                // Reverted on chain: another write for this task landed first.
                Followed::Reverted => return self.recheck(result).await,
                // Included, not yet deep: the chain is slow, the fee is not the problem.
                Followed::TimedOut { included: Some(_) } => continue,
                Followed::TimedOut { included: None } => {}
            }
            if replacements >= self.options.max_replacements {
                return Err(WriteError::Node(format!(
                    "result transaction {tx} not mined after {replacements} replacements with higher fees"
                )));
            }
            replacements += 1;
            bump_fees(&mut request);
            tracing::warn!(%tx, replacements, "result transaction not mined in time; replacing it with a higher fee");
            tx = match self.provider.send_transaction(request.clone()).await {
                Ok(pending) => *pending.tx_hash(),
                // The original was mined meanwhile, or the replacement was refused: the state on
                // chain decides.
                Err(e) => {
                    tracing::warn!(error = %e, "the replacement was not accepted; checking the task on chain");
                    return self.recheck(result).await;
                }
            };
        }
    }

    /// Where transaction `tx` stands, read from its receipt and the head.
    async fn confirmed_receipt(&self, tx: B256) -> Result<Receipt, WriteError> {
        let node = |e: &dyn std::fmt::Display| {
            WriteError::Node(format!("reading the receipt of {tx}: {e}"))
        };
        let Some(receipt) = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(|e| node(&e))?
        else {
            return Ok(Receipt::Missing);
        };
        if !receipt.status() {
            return Ok(Receipt::Reverted);
        }
        let block = receipt.block_number.unwrap_or_default();
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| node(&e))?;
        Ok(if head >= block + self.options.confirmations {
            Receipt::Confirmed { block }
        } else {
            Receipt::Shallow
        })
    }

    /// After our transaction reverted or could not be replaced: done if the task has its result,
    /// else the simulated call says why not.
    async fn recheck(&self, result: &OnChainResult) -> Result<Written, WriteError> {
        let call = self
            .registry
            .submitResult(
                result.task_id,
                result.ok,
                result.result.clone(),
                result.envelope_hash,
            )
            .from(self.from);
        match call.estimate_gas().await {
            Ok(_) => Err(WriteError::Node(format!(
                "the result of task {} was not written; retrying",
                result.task_id
            ))),
            Err(e) => self.refusal(result.task_id, e),
        }
    }

    /// Maps a simulated call's failure: `AlreadyCompleted` is success.
    fn refusal(&self, task_id: U256, e: alloy::contract::Error) -> Result<Written, WriteError> {
        match e.as_decoded_interface_error::<TaskRegistryErrors>() {
            Some(TaskRegistryErrors::AlreadyCompleted(_)) => Ok(Written::AlreadyCompleted),
            Some(TaskRegistryErrors::NotExecutor(_)) => Err(WriteError::NotExecutor(self.from)),
            Some(TaskRegistryErrors::UnknownTask(_)) => Err(WriteError::UnknownTask(task_id)),
            Some(other) => Err(WriteError::Refused(format!("{other:?}"))),
            None => Err(self.send_error(&e.to_string())),
        }
    }

    /// Sends `request` with the next local nonce (recorded in it); a failed send forgets the
    /// local count so that the next one asks the node.
    async fn send_next(&self, request: &mut TransactionRequest) -> Result<B256, WriteError> {
        let mut next = self.nonce.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self
                .provider
                .get_transaction_count(self.from)
                .pending()
                .await
                .map_err(|e| WriteError::Node(format!("reading the account's nonce: {e}")))?,
        };
        request.set_nonce(nonce);
        match self.provider.send_transaction(request.clone()).await {
            Ok(pending) => {
                *next = Some(nonce + 1);
                Ok(*pending.tx_hash())
            }
            Err(e) => {
                *next = None;
                Err(self.send_error(&e.to_string()))
            }
        }
    }

    fn send_error(&self, message: &str) -> WriteError {
        if message.contains("insufficient funds") || message.contains("gas required exceeds") {
            WriteError::NoFunds {
                address: self.from,
                detail: message.to_owned(),
            }
        } else {
            WriteError::Node(message.to_owned())
        }
    }
}

/// A result transaction's receipt, as far as it goes.
enum Receipt {
    /// Mined, succeeded, and deep enough.
    Confirmed { block: u64 },
    /// Mined and succeeded, not yet deep enough (a reorg moved it).
    Shallow,
    /// Mined and reverted.
    Reverted,
    /// Not mined (yet, or dropped).
    Missing,
}

/// Raises both fee caps by a quarter (a replacement must pay at least a tenth more).
fn bump_fees(request: &mut TransactionRequest) {
    let bump = |fee: u128| fee.saturating_add(fee / 4).max(fee + 1);
    if let Some(fee) = request.max_fee_per_gas {
        request.set_max_fee_per_gas(bump(fee));
    }
    if let Some(fee) = request.max_priority_fee_per_gas {
        request.set_max_priority_fee_per_gas(bump(fee));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_pays_more_than_a_tenth_extra() {
        let mut request = TransactionRequest::default()
            .with_max_fee_per_gas(1_000)
            .with_max_priority_fee_per_gas(3);
        bump_fees(&mut request);
        assert_eq!(request.max_fee_per_gas, Some(1_250));
        assert_eq!(request.max_priority_fee_per_gas, Some(4));
    }
}
