//! Writing back a k-of-n task: this operator's commit, then its reveal, each batched with other
//! tasks' and written exactly once.
//!
//! 1. The commitment (`keccak256(resultHash, executor, salt)`, a fresh random salt) is stored in
//!    the [`CommitStore`] before the commit is sent; a task this operator committed to before is
//!    revealed with what it stored, whatever the run gave this time.
//! 2. The commit goes in a `commitResults` batch; one the contract skipped (the task took no
//!    more commits) leaves the task to the others, noted as undeliverable.
//! 3. The reveal waits (following new heads) until every replica committed or the commit window
//!    closed, then goes in a `revealResults` batch. A task that was settled meanwhile (completed
//!    or expired) needs nothing more.
//!
//! What the registry holds for this executor (its part, from `progressOf`) is read first each
//! time, so a report made again after a restart sends only what is missing.

use super::ChainSource;
use super::commits::Committed;
use super::progress::Progress;
use crate::source::Delivery;
use wasm_exec_chain::writer::{Commit, Reveal, WriteError, Written, commitment, fresh_salt};
use wasm_exec_chain::{B256, U256};
use wasm_exec_task::ResultEnvelope;

/// `TaskRegistry.Part`: what an executor has done for a task.
const PART_NONE: u8 = 0;
const PART_COMMITTED: u8 = 1;
/// `TaskRegistry.Status::Pending`.
pub(super) const PENDING: u8 = 1;

/// The value of a k-of-n result on chain: the result's JSON, or only the error's kind for a
/// failure, since a failure's message may carry host details that differ between honest
/// operators (and the value is part of what reveals must agree on).
pub fn replicated_value(result: &ResultEnvelope) -> String {
    match &result.error {
        None => super::result_value(result),
        Some(e) => e.kind.to_string(),
    }
}

impl ChainSource {
    /// Commits to `result` for task `id` (unless done before), then reveals it when the registry
    /// lets it; `record` is where the task stood when this write began.
    pub(super) async fn replicate(
        &self,
        id: U256,
        result: &ResultEnvelope,
        record: Progress,
    ) -> Result<Delivery, WriteError> {
        let stored = self
            .commits
            .get(id.to_string())
            .await
            .map_err(|e| WriteError::Node(e.to_string()))?;
        let committed = match (record.task.part, stored) {
            (PART_NONE, stored) => match self.commit(id, result, stored).await? {
                Some(committed) => committed,
                None => {
                    return Ok(Delivery::Undeliverable(format!(
                        "task {id} took no more commits (all its replicas committed, or its commit window closed); other operators run it"
                    )));
                }
            },
            (PART_COMMITTED, Some(stored)) => stored,
            (PART_COMMITTED, None) => {
                return Ok(Delivery::Undeliverable(format!(
                    "task {id} has our commit on chain but COORDINATOR_STATE_DIR has no record of it (another state directory with the same key?); it cannot be revealed"
                )));
            }
            // Revealed, or recorded as agreed, disagreed or missed: nothing left to send.
            _ => return Ok(Delivery::Accepted),
        };
        self.reveal_when_open(id, committed).await
    }

    /// Stores the commitment (reusing a stored one) and sends it; `None` when the contract
    /// skipped it because the task takes no more commits.
    async fn commit(
        &self,
        id: U256,
        result: &ResultEnvelope,
        stored: Option<Committed>,
    ) -> Result<Option<Committed>, WriteError> {
        let me = self.writer.address();
        let committed = match stored {
            Some(stored) => stored,
            None => {
                let fresh = Committed {
                    ok: result.ok,
                    value: replicated_value(result),
                    result_hash: B256::from(result.result_hash().0),
                    salt: fresh_salt(),
                };
                self.commits
                    .put(id.to_string(), fresh.clone())
                    .await
                    .map_err(|e| WriteError::Node(e.to_string()))?;
                fresh
            }
        };
        let commit = Commit {
            task_id: id,
            commitment: commitment(committed.result_hash, me, committed.salt),
        };
        // Written by this batch (its receipt carries our `ResultCommitted`), or skipped: then
        // what the registry holds decides.
        if self.writer.commit(&commit).await? == Written::AlreadyCompleted
            && self.progress_of(id).await?.task.part == PART_NONE
        {
            return Ok(None);
        }
        tracing::info!(task = %id, "committed to the result on chain");
        Ok(Some(committed))
    }

    /// Waits until task `id` takes reveals, then reveals `committed`. Each new head reads the
    /// task again, in one call with every other reveal waiting ([`super::progress`]).
    async fn reveal_when_open(
        &self,
        id: U256,
        committed: Committed,
    ) -> Result<Delivery, WriteError> {
        let mut heads = self.heads.watch();
        let replicas = loop {
            let Progress { task, time } = self.progress_of(id).await?;
            if task.status != PENDING {
                tracing::info!(task = %id, status = task.status, "the task was settled before our reveal");
                return Ok(Delivery::Accepted);
            }
            if time >= task.deadline.to::<u64>() {
                tracing::warn!(task = %id, "the task's deadline passed before our reveal");
                return Ok(Delivery::Accepted);
            }
            if task.commits >= task.replicas || time >= task.commitEnd.to::<u64>() {
                break task.replicas;
            }
            if heads.changed().await.is_err() {
                return Err(WriteError::Node("the head follower stopped".into()));
            }
        };
        let reveal = Reveal {
            task_id: id,
            ok: committed.ok,
            result: committed.value,
            result_hash: committed.result_hash,
            salt: committed.salt,
            replicas,
        };
        let written = self.writer.reveal(&reveal).await?;
        tracing::info!(task = %id, ?written, "revealed the result on chain");
        Ok(Delivery::Accepted)
    }
}
