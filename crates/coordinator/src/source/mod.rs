//! Task sources: where tasks come from and where their results go back (the seed's "write back to
//! the task source"). The [`placeholder`] stands in for an on-chain contract.

pub mod placeholder;
pub mod results_file;

use async_trait::async_trait;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// Yields tasks and takes their results back.
#[async_trait]
pub trait TaskSource: Send + Sync {
    /// The tasks available now; a task is yielded once (a finite source then yields nothing).
    async fn poll(&self) -> Result<Vec<TaskSpec>, SourceError>;

    /// Takes one task's result back. Called once per task; an error means "not accepted, retry".
    async fn report(&self, task_id: &str, result: &ResultEnvelope) -> Result<(), SourceError>;

    /// A short name for logs (`placeholder`, `chain`).
    fn name(&self) -> &'static str;
}

/// A source that cannot yield tasks or take a result.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);
