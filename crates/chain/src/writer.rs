//! Writing results back, exactly once per task, batched and pipelined.
//!
//! Results waiting to be written are gathered into batches (up to [`WriteOptions::max_batch`]
//! results and [`WriteOptions::max_batch_bytes`] of result text, gathered for at most
//! [`WriteOptions::linger`]) and each batch is one `submitResults` transaction; batches are sent
//! without waiting for the previous one to be mined. One transaction per result would bind the
//! throughput to how many transactions the node takes in a second.
//!
//! Exactly once: each batch is first simulated (`eth_estimateGas`), which reads the tasks' state
//! on chain. `submitResults` skips a task already completed (an earlier write of ours, before a
//! crash), and the receipt's `TaskCompleted` logs say which results this transaction wrote; the
//! others count as already written. The contract never records a second result for a task,
//! however a retry races.
//!
//! Nonces are kept here, not asked of the node per transaction: each batch takes the next nonce
//! under a short lock, and a failed send drops the local count so the next send reads it again
//! from the node. A transaction that is not mined in time (dropped from the pool, or priced under
//! the market) is sent again with the same nonce and fees raised by a quarter, which replaces it.

use crate::heads::Heads;
use crate::receipts::{Followed, ReceiptTracker};
use crate::registry::{Registry, TaskRegistry, TaskRegistry::TaskRegistryErrors};
use alloy::eips::eip1559::Eip1559Estimation;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};

mod rejection;

/// How results are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Blocks that must follow a result's block before it counts as written.
    pub confirmations: u64,
    /// Time a transaction gets to be mined (and confirmed) before it is replaced.
    pub receipt_timeout: Duration,
    /// Most replacements of one transaction before the write fails (and is retried later).
    pub max_replacements: u32,
    /// Most results in one transaction.
    pub max_batch: usize,
    /// Most bytes of result values in one transaction (storage gas grows with them).
    pub max_batch_bytes: usize,
    /// Longest wait for more results once one is waiting.
    pub linger: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            confirmations: 2,
            receipt_timeout: Duration::from_secs(60),
            max_replacements: 5,
            max_batch: 64,
            max_batch_bytes: 16 * 1024,
            linger: Duration::from_millis(10),
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
    /// Our transaction wrote it, and is confirmed.
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
#[derive(Debug, Clone, thiserror::Error)]
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

/// A result waiting to be written, and who waits for the outcome.
struct Queued {
    result: OnChainResult,
    done: oneshot::Sender<Result<Written, WriteError>>,
}

/// Sends results from one executor account.
pub struct ResultWriter {
    queue: mpsc::UnboundedSender<Queued>,
    from: Address,
    batcher: tokio::task::JoinHandle<()>,
}

impl Drop for ResultWriter {
    fn drop(&mut self) {
        self.batcher.abort();
    }
}

impl ResultWriter {
    /// A writer to the registry at `contract`, signing as `from` (the provider's signer),
    /// following confirmations as `heads` announces new blocks. Must be called within a Tokio
    /// runtime.
    pub fn new(
        provider: DynProvider,
        contract: Address,
        from: Address,
        options: WriteOptions,
        heads: Heads,
    ) -> Self {
        let sender = Arc::new(BatchSender {
            registry: Registry::new(contract, provider.clone()),
            tracker: ReceiptTracker::start(provider.clone(), heads),
            provider,
            from,
            nonce: Mutex::new(None),
            fees: Mutex::new(None),
            options,
        });
        let (queue, waiting) = mpsc::unbounded_channel();
        Self {
            queue,
            from,
            batcher: tokio::spawn(gather(sender, waiting)),
        }
    }

    /// The account results are sent from.
    pub fn address(&self) -> Address {
        self.from
    }

    /// Writes one result (in a batch with others waiting) and waits until it is confirmed, or
    /// finds it already written.
    pub async fn write(&self, result: &OnChainResult) -> Result<Written, WriteError> {
        let stopped = || WriteError::Node("the result writer has stopped".into());
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Queued {
                result: result.clone(),
                done,
            })
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Gathers waiting results into batches and sends each batch on its own task.
async fn gather(sender: Arc<BatchSender>, mut waiting: mpsc::UnboundedReceiver<Queued>) {
    let options = sender.options;
    while let Some(first) = waiting.recv().await {
        let mut bytes = first.result.result.len();
        let mut batch = vec![first];
        let linger = tokio::time::sleep(options.linger);
        tokio::pin!(linger);
        while batch.len() < options.max_batch.max(1) && bytes < options.max_batch_bytes {
            tokio::select! {
                next = waiting.recv() => match next {
                    Some(next) => {
                        bytes += next.result.result.len();
                        batch.push(next);
                    }
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        tokio::spawn(sender.clone().send(batch));
    }
}

/// What sends batches: the account, its nonces, fees, and the receipt poller.
struct BatchSender {
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

impl BatchSender {
    /// Sends one batch and answers each of its results.
    async fn send(self: Arc<Self>, mut batch: Vec<Queued>) {
        loop {
            if batch.is_empty() {
                return;
            }
            let call = self.call(&batch);
            let gas = match call.estimate_gas().await {
                Ok(gas) => gas,
                Err(e) => match e.as_decoded_interface_error::<TaskRegistryErrors>() {
                    // One task is gone (its request reorganised away): answer it, send the rest.
                    Some(TaskRegistryErrors::UnknownTask(unknown)) => {
                        let (gone, rest): (Vec<_>, Vec<_>) = batch
                            .into_iter()
                            .partition(|q| q.result.task_id == unknown.taskId);
                        answer(gone, |_| Err(WriteError::UnknownTask(unknown.taskId)));
                        if rest.is_empty() {
                            return;
                        }
                        batch = rest;
                        continue;
                    }
                    Some(TaskRegistryErrors::NotExecutor(_)) => {
                        return answer(batch, |_| Err(WriteError::NotExecutor(self.from)));
                    }
                    Some(other) => {
                        let why = format!("{other:?}");
                        return answer(batch, |_| Err(WriteError::Refused(why.clone())));
                    }
                    None => {
                        let error = rejection::classify_call(&e, self.from);
                        return answer(batch, |_| Err(error.clone()));
                    }
                },
            };
            let outcome = match self.fees().await {
                Ok(fees) => {
                    let request = call
                        .into_transaction_request()
                        .with_gas_limit(gas.saturating_add(gas / 5))
                        .with_max_fee_per_gas(fees.max_fee_per_gas)
                        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
                    self.send_and_follow(request).await
                }
                Err(e) => Err(e),
            };
            return match outcome {
                Ok(mined) => answer(batch, |result| {
                    Ok(if mined.wrote.contains(&result.task_id) {
                        Written::Mined {
                            tx: mined.tx,
                            block: mined.block,
                            replacements: mined.replacements,
                        }
                    } else {
                        Written::AlreadyCompleted
                    })
                }),
                Err(e) => answer(batch, |_| Err(e.clone())),
            };
        }
    }

    fn call(
        &self,
        batch: &[Queued],
    ) -> alloy::contract::SolCallBuilder<&DynProvider, TaskRegistry::submitResultsCall> {
        self.registry
            .submitResults(
                batch.iter().map(|q| q.result.task_id).collect(),
                batch.iter().map(|q| q.result.ok).collect(),
                batch.iter().map(|q| q.result.result.clone()).collect(),
                batch.iter().map(|q| q.result.envelope_hash).collect(),
            )
            .from(self.from)
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

    /// Sends `request` and follows it to its depth, replacing it with higher fees while it is
    /// not mined.
    async fn send_and_follow(&self, mut request: TransactionRequest) -> Result<Mined, WriteError> {
        let mut tx = self.send_next(&mut request).await?;
        let mut replacements = 0;
        loop {
            let followed = self
                .tracker
                .follow(tx, self.options.confirmations, self.options.receipt_timeout)
                .await;
            match followed {
                // Checked once more against the node: a reorg may have dropped it since.
                Followed::Deep { .. } => match self.receipt(tx).await? {
                    Receipt::Confirmed { block, wrote } => {
                        return Ok(Mined {
                            tx,
                            block,
                            wrote,
                            replacements,
                        });
                    }
                    Receipt::Reverted => return Err(reverted(tx)),
                    Receipt::Shallow => continue,
                    Receipt::Missing => {}
                },
                Followed::Reverted => return Err(reverted(tx)),
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
                // The original was mined meanwhile, or the replacement was refused: the results
                // are retried, and the state on chain decides what is left to write.
                Err(e) => {
                    return Err(WriteError::Node(format!(
                        "replacing result transaction {tx}: {e}"
                    )));
                }
            };
        }
    }

    /// Where transaction `tx` stands, read from its receipt and the head.
    async fn receipt(&self, tx: B256) -> Result<Receipt, WriteError> {
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
        if head < block + self.options.confirmations {
            return Ok(Receipt::Shallow);
        }
        let wrote = receipt
            .inner
            .logs()
            .iter()
            .filter_map(|log| log.log_decode::<TaskRegistry::TaskCompleted>().ok())
            .map(|log| log.inner.data.taskId)
            .collect();
        Ok(Receipt::Confirmed { block, wrote })
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
                Err(rejection::classify(&e, self.from))
            }
        }
    }
}

/// Answers each queued result with `outcome` of it.
fn answer(batch: Vec<Queued>, outcome: impl Fn(&OnChainResult) -> Result<Written, WriteError>) {
    for queued in batch {
        let _ = queued.done.send(outcome(&queued.result));
    }
}

fn reverted(tx: B256) -> WriteError {
    WriteError::Node(format!(
        "result transaction {tx} reverted on chain; retrying what is left to write"
    ))
}

/// A confirmed batch transaction.
struct Mined {
    tx: B256,
    block: u64,
    /// The tasks whose `TaskCompleted` it emitted.
    wrote: HashSet<U256>,
    replacements: u32,
}

/// A result transaction's receipt, as far as it goes.
enum Receipt {
    /// Mined, succeeded, and deep enough; the tasks it wrote.
    Confirmed { block: u64, wrote: HashSet<U256> },
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
