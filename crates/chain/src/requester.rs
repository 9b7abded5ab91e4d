//! What a requester and the owner do: submit a task (1-of-1, or k-of-n with a fee and a
//! deadline) and wait for its result, read where a task stands, authorise an executor. Used by `coordinator chain ...`, the tests and the benchmarks.

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
    /// Every executor whose result agreed (the one writer of a 1-of-1 task).
    pub agreeing: Vec<Address>,
}

/// How a k-of-n task is replicated and paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Executors that may take part (n), 1 to 16.
    pub replicas: u8,
    /// Agreeing reveals that complete it (k), 1 to n.
    pub quorum: u8,
    /// Unix seconds by which it must have its quorum (after that it may be expired).
    pub deadline: u64,
    /// Wei held in escrow and shared by the agreeing executors.
    pub fee: U256,
}

/// One executor's part in a task, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The executor.
    pub executor: Address,
    /// `committed`, `revealed`, `agreed`, `disagreed` or `missed`.
    pub part: &'static str,
}

/// What the registry holds of a task: its terms, who committed and revealed, its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// `pending`, `completed`, `expired` (`none` for an id never given).
    pub status: &'static str,
    /// n.
    pub replicas: u8,
    /// k.
    pub quorum: u8,
    /// Commits taken.
    pub commits: u8,
    /// Unix seconds; 0 for a 1-of-1 task without one.
    pub deadline: u64,
    /// End of the commit window, unix seconds.
    pub commit_end: u64,
    /// The fee in escrow, wei.
    pub fee: U256,
    /// Each committer's part, in commit order.
    pub parts: Vec<Part>,
    /// The result, once completed.
    pub completion: Option<Completion>,
}

/// The words for `TaskRegistry.Status`.
const STATUSES: [&str; 4] = ["none", "pending", "completed", "expired"];
/// The words for `TaskRegistry.Part`.
const PARTS: [&str; 6] = [
    "none",
    "committed",
    "revealed",
    "agreed",
    "disagreed",
    "missed",
];

/// Submits a k-of-n `request` with `replication` (the fee sent along) and waits for it to be
/// mined.
pub async fn submit_replicated(
    registry: &Registry<DynProvider>,
    request: &TaskRequest,
    replication: &Replication,
) -> Result<Submitted, ChainError> {
    let deadline = alloy::primitives::aliases::U40::saturating_from(replication.deadline);
    let receipt = registry
        .submitTask_1(
            request.wasm_cid.clone(),
            request.entry.clone(),
            request.input.clone(),
            request.fuel,
            request.timeout_sec,
            replication.replicas,
            replication.quorum,
            deadline,
        )
        .value(replication.fee)
        .send()
        .await?
        .get_receipt()
        .await
        .map_err(|e| ChainError::Other(format!("waiting for the submission: {e}")))?;
    submitted(&receipt)
}

/// The task a mined submission's receipt names.
fn submitted(receipt: &alloy::rpc::types::TransactionReceipt) -> Result<Submitted, ChainError> {
    if !receipt.status() {
        return Err(ChainError::Other(format!(
            "the submission reverted in transaction {}",
            receipt.transaction_hash
        )));
    }
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

/// What the registry holds of task `id`: its terms, each committer's part and its outcome.
pub async fn task_status(
    registry: &Registry<DynProvider>,
    id: U256,
) -> Result<TaskStatus, ChainError> {
    let task = registry.getTask(id).call().await?;
    let committers = registry.committersOf(id).call().await?;
    let mut parts = Vec::with_capacity(committers.len());
    for executor in committers {
        let entry = registry.entryOf(id, executor).call().await?;
        parts.push(Part {
            executor,
            part: PARTS
                .get(usize::from(entry.part))
                .copied()
                .unwrap_or("unknown"),
        });
    }
    let completion = if task.status == 2 {
        completions(registry.provider(), *registry.address(), Some(id), 0)
            .await?
            .pop()
    } else {
        None
    };
    Ok(TaskStatus {
        status: STATUSES
            .get(usize::from(task.status))
            .copied()
            .unwrap_or("unknown"),
        replicas: task.replicas,
        quorum: task.quorum,
        commits: task.commits,
        deadline: task.deadline.to::<u64>(),
        commit_end: task.commitEnd.to::<u64>(),
        fee: U256::from(task.fee),
        parts,
        completion,
    })
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
    submitted(&receipt)
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
                agreeing: event.agreeing,
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
