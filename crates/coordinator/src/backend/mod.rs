//! Backends run one task to a result document: in-process ([`local`]) or as a Kubernetes Job
//! (the kube-backend crate); [`cached`] answers a repeated task from the results of earlier ones in
//! front of either. Every backend returns the executor's [`ResultEnvelope`], unchanged, so a task gives the
//! same document wherever it ran.

pub mod cached;
pub mod local;

use async_trait::async_trait;
use std::sync::Arc;
use wasm_exec_task::{CheckedTask, ResultEnvelope};

/// Runs tasks. Failures of the task (traps, limits, bad input) are results, not errors.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Runs `task` (checked at intake: its input parsed, its limits resolved) on `module`
    /// (verified bytes) and returns its result document.
    async fn run(&self, task: &CheckedTask, module: Arc<Vec<u8>>) -> ResultEnvelope;

    /// Stops `task_id`'s run, if one is under way or about to start (it was cancelled): the
    /// run ends soon after with any result, which the scheduler discards. Does nothing by
    /// default.
    async fn cancel(&self, task_id: &str) {
        let _ = task_id;
    }

    /// Called once at start with the ids of the tasks left unfinished (they run again): a
    /// backend that keeps state outside this process removes what belongs to no such task.
    /// Does nothing by default.
    async fn reconcile(&self, unfinished: &[String]) -> anyhow::Result<()> {
        let _ = unfinished;
        Ok(())
    }

    /// A short name for logs and metrics (`local`, `kubernetes`).
    fn name(&self) -> &'static str;
}
