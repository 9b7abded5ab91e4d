//! The state store: every task, its state, attempts, timestamps and result, persisted so that a
//! restarted coordinator resumes unfinished tasks and writes each result back exactly once.
//!
//! The order that makes write-back exactly once: persist the result (`finish`), then report it to
//! the source, then `mark_reported`. After a crash between the last two the result is reported
//! again on restart (a source must treat a second report of the same task as done: the chain
//! source reads `AlreadyCompleted`, the placeholder overwrites).
//!
//! Layout:
//! - [`redb`]: the store ([`redb::RedbStore`]): open and integrity check, group-commit writer,
//!   reopen after a failed write, tables;
//! - [`journal`]: the write-ahead journal, its record framing, and how its damage is judged;
//! - [`salvage`]: checking and salvaging a damaged journal by hand;
//! - [`error`]: why a state directory does not open ([`OpenError`]);
//! - [`disk`]: free space against a low watermark;
//! - [`quarantine`]: poison tasks, started too often without finishing;
//! - [`timeline`]: a task's state changes and cancellation, and the change events broadcast;
//! - [`callback`]: a task's webhook and how its deliveries went.

pub mod callback;
pub mod disk;
pub mod error;
pub mod journal;
pub mod quarantine;
pub mod redb;
pub mod salvage;
pub mod timeline;

pub use callback::{Attempt, Callback, DeliveryState};
pub use disk::DiskSpace;
pub use error::OpenError;
pub use timeline::{CancelOutcome, Cancellation, Step, TaskEvent};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// Where a task is in its life.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Taken, not started.
    Pending,
    /// Its module is being fetched.
    Fetching,
    /// Running on the backend.
    Running,
    /// Finished with `ok`.
    Succeeded,
    /// Finished with an error (the result says which kind).
    Failed,
    /// Started too many times without finishing (each run ended with the coordinator): not run
    /// again; its result says so (see [`quarantine`]).
    Quarantined,
    /// Cancelled through the API before it finished: not run (again); its result (kind
    /// `cancelled_by_request`) and its record say who cancelled it and when.
    Cancelled,
}

impl TaskState {
    /// Every state, in life order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Fetching,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Quarantined,
        TaskState::Cancelled,
    ];

    /// The snake_case name (API, logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Fetching => "fetching",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Quarantined => "quarantined",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Whether the task has its result.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::Quarantined
                | TaskState::Cancelled
        )
    }
}

/// The origin of tasks submitted through the HTTP API (their results are served, not reported).
pub const API_ORIGIN: &str = "api";

/// What is persisted for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRecord {
    /// The task as submitted.
    pub task: TaskSpec,
    /// Where it came from: a source's name (its result is written back there) or `api`.
    pub origin: String,
    /// Where it is.
    pub state: TaskState,
    /// How many times it was started (more than 1 after a crash mid-run).
    pub attempts: u32,
    /// Whether its result was accepted by the source.
    pub reported: bool,
    /// When it was taken, in Unix milliseconds.
    pub created_at_ms: u64,
    /// When its state last changed, in Unix milliseconds.
    pub updated_at_ms: u64,
    /// Its result document, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultEnvelope>,
    /// Why its result was not written back, when its source could never take it (e.g. the
    /// on-chain request was reorganised away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_written_back: Option<String>,
    /// Its state changes, each with its time and attempt (at most
    /// [`timeline::MAX_TIMELINE`]); empty for records written before timelines existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Step>,
    /// Who cancelled it and when, if it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancellation>,
    /// The tenant that submitted it (`COORDINATOR_TOKENS_FILE`); `None` for the default caller
    /// and for a source's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Its webhook (`callback_url`) and how the deliveries went, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
}

/// Persists tasks. Every mutation is durable when its future resolves.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Records tasks from `origin` as pending; returns the ones that were new (a known
    /// `task_id` is never taken twice, so a duplicate submission does not run again).
    async fn admit(&self, tasks: Vec<TaskSpec>, origin: &str) -> Result<Vec<TaskSpec>, StateError>;

    /// Like [`admit`](Self::admit), and records `cursor` as `origin`'s read position in the same
    /// commit: a source that restarts from its cursor neither misses nor re-reads a task.
    async fn admit_with_cursor(
        &self,
        tasks: Vec<TaskSpec>,
        origin: &str,
        cursor: String,
    ) -> Result<Vec<TaskSpec>, StateError>;

    /// Records tasks submitted through the API (origin [`API_ORIGIN`]) by `tenant` as pending,
    /// each with its callback URL if `callbacks` (task id -> URL) names one, in one durable
    /// write; returns the ones that were new. The default refuses callbacks and tenants and
    /// admits the rest.
    async fn submit(
        &self,
        tasks: Vec<TaskSpec>,
        callbacks: BTreeMap<String, String>,
        tenant: Option<String>,
    ) -> Result<Vec<TaskSpec>, StateError> {
        if !callbacks.is_empty() || tenant.is_some() {
            return Err(StateError(
                "this state store keeps no callbacks or tenants".into(),
            ));
        }
        self.admit(tasks, API_ORIGIN).await
    }

    /// Records one attempt to deliver a task's webhook and waits until that is durable. The
    /// default refuses.
    async fn record_delivery(&self, task_id: &str, attempt: Attempt) -> Result<(), StateError> {
        let _ = (task_id, attempt);
        Err(StateError("this state store keeps no callbacks".into()))
    }

    /// Finished tasks whose webhook is still to be delivered (after a restart: what to resume).
    /// The default has none.
    fn pending_deliveries(&self) -> Result<Vec<TaskRecord>, StateError> {
        Ok(Vec::new())
    }

    /// The read position last recorded for `origin`.
    fn cursor(&self, origin: &str) -> Result<Option<String>, StateError>;

    /// Records that a task moved to `state` (fetching or running; `running` counts an attempt)
    /// without waiting for it to be durable: it lands with the next commit, and a crash before
    /// that only means the task runs again, as it would anyway.
    fn record_progress(&self, task_id: &str, state: TaskState);

    /// Records that a task starts running (an attempt) and waits until that is durable. Used
    /// for tasks resumed after a restart, so that a task that crashes the process is counted on
    /// every start and quarantined after a few ([`quarantine`]) instead of making a crash loop.
    /// The default records it without waiting.
    async fn record_start(&self, task_id: &str) -> Result<(), StateError> {
        self.record_progress(task_id, TaskState::Running);
        Ok(())
    }

    /// Persists a task's result and its final state; `reported` also records its write-back in
    /// the same commit (for tasks whose result needs no write-back: the API serves it).
    async fn finish(
        &self,
        task_id: &str,
        result: &ResultEnvelope,
        reported: bool,
    ) -> Result<(), StateError>;

    /// Quarantines an unfinished task with its `result` (an error saying why), so that it is not
    /// run again; a finished task is left as it is. Its result is then reported like any other.
    async fn quarantine(&self, task_id: &str, result: &ResultEnvelope) -> Result<(), StateError>;

    /// Records that the source accepted the result, or (`not_written_back`) why it never can.
    async fn mark_reported(
        &self,
        task_id: &str,
        not_written_back: Option<String>,
    ) -> Result<(), StateError>;

    /// Cancels an unfinished task on behalf of `by` and waits until that is durable: its state
    /// becomes `cancelled`, its result a `cancelled_by_request` failure, and no later result
    /// replaces it. A task that has ended is left as it is. The default refuses.
    async fn cancel(&self, task_id: &str, by: &str) -> Result<CancelOutcome, StateError> {
        let _ = (task_id, by);
        Err(StateError("this state store cannot cancel tasks".into()))
    }

    /// Every committed change from now on, as [`TaskEvent`]s (a receiver that falls behind by
    /// more than the channel holds is told how many it missed). `None` (the default) for a store
    /// that broadcasts nothing.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<TaskEvent>> {
        None
    }

    /// One task's record.
    fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StateError>;

    /// Tasks to pick up after a restart: not finished, or finished but not reported.
    fn resumable(&self) -> Result<Vec<TaskRecord>, StateError>;

    /// A page of tasks ordered by id, after `after`, optionally in one state.
    fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StateError>;

    /// How many tasks are in each state.
    fn counts(&self) -> Result<BTreeMap<TaskState, u64>, StateError>;

    /// Resolves, with what was found, once the store has found its database corrupt while
    /// serving. The process should then stop: its restart checks the database and refuses to
    /// start on a corrupt one, saying how to recover. Never resolves by default.
    async fn corrupted(&self) -> String {
        std::future::pending().await
    }

    /// Since when, and why, writes fail; `None` while they work (the default, for stores that
    /// cannot fail). A readiness probe reports it.
    fn write_failure(&self) -> Option<WriteFailure> {
        None
    }

    /// Space left where the store writes, against its low watermark; `None` (the default) for a
    /// store that writes no files. While [`DiskSpace::is_low`], the API should answer 503.
    fn disk_space(&self) -> Result<Option<DiskSpace>, StateError> {
        Ok(None)
    }
}

/// Writes to the store fail: since when, and the latest error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// When the first of the failing writes failed, in Unix milliseconds.
    pub since_ms: u64,
    /// The latest failure.
    pub error: String,
}

/// The store failed (disk, corruption, or it was shut down).
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StateError(pub String);

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
