//! What a requester and the owner do: submit a task and wait for its result, authorise an
//! executor. Used by `coordinator chain ...`, the tests and the benchmarks.

use crate::registry::{ChainError, Registry, TaskRegistry};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use std::time::{Duration, Instant};

/// A task as a requester asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// The module's CID.
    pub wasm_cid: String,
    /// The entry function.
    pub entry: String,
    /// The input document (JSON text, e.g. `[12]`).
    pub input: String,
    /// Instruction budget; 0 for the coordinator's default.
    pub fuel: u64,
    /// Wall-clock limit in seconds; 0 for the coordinator's default.
    pub timeout_sec: u32,
}

/// A submitted task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// Its id in the registry.
    pub task_id: U256,
    /// The transaction.
    pub tx: B256,
    /// Its block.
    pub block: u64,
}

/// A task's result as the registry recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The task's id.
    pub task_id: U256,
    /// Whether the task succeeded.
    pub ok: bool,
    /// The result value.
    pub result: String,
    /// The result's `result_hash` as written (the contract's `envelopeHash`).
    pub result_hash: B256,
    /// The executor that wrote it.
    pub executor: Address,
    /// The block it was written in.
    pub block: u64,
}

/// Submits `request` from the provider's signer and waits for it to be mined.
pub async fn submit_task(
    registry: &Registry<DynProvider>,
    request: &TaskRequest,
) -> Result<Submitted, ChainError> {
    let receipt = registry
        .submitTask_0(
            request.wasm_cid.clone(),
            request.entry.clone(),
            request.input.clone(),
            request.fuel,
            request.timeout_sec,
        )
        .send()
        .await?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Other(format!("waiting for the submission: {e}")))?;
    let event = receipt
        .inner
        .logs()
        .iter()
        .find_map(|log| log.log_decode::<TaskRegistry::TaskSubmitted>().ok())
        .ok_or_else(|| ChainError::Other("the submission emitted no TaskSubmitted".into()))?;
    Ok(Submitted {
        task_id: event.inner.data.taskId,
        tx: receipt.transaction_hash,
        block: receipt.block_number.unwrap_or_default(),
    })
}

/// Every `TaskCompleted` event from block `from` on, of task `task_id` or of all tasks.
pub async fn completions(
    provider: &DynProvider,
    contract: Address,
    task_id: Option<U256>,
    from: u64,
) -> Result<Vec<Completion>, ChainError> {
    let mut filter = Filter::new()
        .address(contract)
        .event_signature(TaskRegistry::TaskCompleted::SIGNATURE_HASH)
        .from_block(from);
    if let Some(id) = task_id {
        filter = filter.topic1(B256::from(id));
    }
    let logs = provider
        .get_logs(&filter)
        .await
        .map_err(|e| ChainError::Other(format!("eth_getLogs: {e}")))?;
    logs.iter()
        .map(|log| {
            let decoded = log
                .log_decode::<TaskRegistry::TaskCompleted>()
                .map_err(|e| {
                    ChainError::Other(format!("a TaskCompleted that does not decode: {e}"))
                })?;
            let event = decoded.inner.data;
            Ok(Completion {
                task_id: event.taskId,
                ok: event.ok,
                result: event.result,
                result_hash: event.envelopeHash,
                executor: event.executor,
                block: log.block_number.unwrap_or_default(),
            })
        })
        .collect()
}

/// Waits until task `task_id` has its `TaskCompleted` (looking from block `from`), polling
/// every `every`, for at most `timeout`.
pub async fn wait_completed(
    provider: &DynProvider,
    contract: Address,
    task_id: U256,
    from: u64,
    every: Duration,
    timeout: Duration,
) -> Result<Completion, ChainError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(done) = completions(provider, contract, Some(task_id), from)
            .await?
            .pop()
        {
            return Ok(done);
        }
        if Instant::now() >= deadline {
            return Err(ChainError::Other(format!(
                "task {task_id} has no result after {} s; is a coordinator with COORDINATOR_TASK_SOURCE=chain running, with an authorised key?",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(every).await;
    }
}

/// Allows (or forbids) `executor` to write results; the provider's signer must be the owner.
pub async fn set_executor(
    registry: &Registry<DynProvider>,
    executor: Address,
    allowed: bool,
) -> Result<B256, ChainError> {
    let receipt = registry
        .setExecutor(executor, allowed)
        .send()
        .await?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Other(format!("waiting for setExecutor: {e}")))?;
    Ok(receipt.transaction_hash)
}
