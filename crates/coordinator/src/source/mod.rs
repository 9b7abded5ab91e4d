//! Task sources: where tasks come from and where their results go back (the seed's "write back to
//! the task source"). The [`placeholder`] stands in for an on-chain contract; [`chain`] reads an
//! EVM contract and writes results back on chain.

pub mod chain;
pub mod placeholder;
pub mod results_file;

use async_trait::async_trait;
use std::time::Duration;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// What one poll of a source gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Polled {
    /// The tasks available now.
    pub tasks: Vec<TaskSpec>,
    /// The source's read position after them, to persist in the same commit as the tasks
    /// (`None`: nothing to persist).
    pub cursor: Option<String>,
    /// True when the source has more to read at once (poll again without waiting).
    pub more: bool,
}

impl Polled {
    /// Just these tasks.
    pub fn tasks(tasks: Vec<TaskSpec>) -> Self {
        Self {
            tasks,
            ..Self::default()
        }
    }
}

/// Yields tasks and takes their results back.
#[async_trait]
pub trait TaskSource: Send + Sync {
    /// The tasks available now; a task is yielded once (a finite source then yields nothing).
    async fn poll(&self) -> Result<Polled, SourceError>;

    /// Whether this source's tasks may name files of the local mirror (`fib.wasm`) rather than
    /// CIDs. A source whose requesters are strangers (a chain) says no. The scheduler checks every
    /// task it takes with [`TaskSpec::check`]; one that fails is persisted and settled as
    /// `bad_input` without running, and its result written back like any other.
    fn mirror_names(&self) -> bool {
        true
    }

    /// How long to wait between polls that found nothing more to read.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(500)
    }

    /// Resolves when the source has news worth a poll before the interval is up (a chain's new
    /// head). Cancel-safe; the default never resolves, leaving the pace to the interval.
    async fn news(&self) {
        std::future::pending::<()>().await;
    }

    /// Takes one task's result back. Called once per task (again after a restart if the first
    /// call's outcome was not recorded); an error means "not accepted, retry".
    async fn report(
        &self,
        task: &TaskSpec,
        result: &ResultEnvelope,
    ) -> Result<Delivery, SourceError>;

    /// A short name for logs (`placeholder`, `chain`).
    fn name(&self) -> &'static str;
}

/// What became of a result handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The source has it (now or from an earlier call).
    Accepted,
    /// The source can never take it (e.g. its request vanished in a reorg); the reason is kept
    /// with the task and shown by the API. Not retried.
    Undeliverable(String),
}

/// A source that cannot yield tasks or take a result.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);
