//! Reading: `TaskSubmitted` events to tasks, the cursor persisted with them, and the backoff
//! between reads while the node fails.

use super::progress::Progress;
use super::replica::PENDING;
use super::{ChainSettings, ChainSource, ChainSourceError, MAX_BACKOFF, backoff};
use crate::metrics::BlockLabel;
use crate::source::{Polled, SourceError};
use backon::ExponentialBackoff;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};
use wasm_exec_chain::Address;
use wasm_exec_chain::TaskRegistry::TaskSubmitted;
use wasm_exec_chain::scan::{self, Checkpoint, Found, ScanError, Step};
use wasm_exec_task::protocol::replicated_limits;
use wasm_exec_task::{TaskLimits, TaskSpec};

/// How often the cursor is persisted when no task moves it.
const IDLE_PERSIST: Duration = Duration::from_secs(10);
/// Longest a read (one scan step) may take before it counts as a failure.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Found k-of-n tasks asked about at once (gathered into one `progressOf` call).
const MAX_IDS_READ: usize = 256;

/// The cursor as persisted: the scan's checkpoint, with the registry it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedCursor {
    chain_id: u64,
    contract: Address,
    checkpoint: Checkpoint,
}

/// Where reading stands.
pub(super) struct ReadState {
    /// Where the next read starts.
    pub(super) checkpoint: Checkpoint,
    persisted_at: Instant,
    /// The waits after failed reads: twice the poll interval doubling to [`MAX_BACKOFF`],
    /// started afresh by a read that works.
    backoff: ExponentialBackoff,
    /// No read before this.
    next_read: Instant,
}

impl ReadState {
    /// Reading from `saved` (the cursor the state store kept) when it is this registry's, else
    /// from `COORDINATOR_CHAIN_START_BLOCK`.
    pub(super) fn resume(
        saved: Option<String>,
        settings: &ChainSettings,
    ) -> Result<Self, ChainSourceError> {
        let fresh = || Checkpoint::starting_at(settings.start_block);
        let checkpoint = match saved {
            None => fresh(),
            Some(text) => {
                let saved: SavedCursor = serde_json::from_str(&text).map_err(|e| {
                    ChainSourceError::Settings(format!(
                        "the chain cursor in COORDINATOR_STATE_DIR does not parse ({e}); use a fresh state directory"
                    ))
                })?;
                if saved.chain_id == settings.chain_id && saved.contract == settings.contract {
                    saved.checkpoint
                } else {
                    tracing::warn!(
                        saved_chain = saved.chain_id, saved_contract = %saved.contract,
                        "the state directory read another registry before; scanning this one from COORDINATOR_CHAIN_START_BLOCK"
                    );
                    fresh()
                }
            }
        };
        let now = Instant::now();
        Ok(Self {
            checkpoint,
            persisted_at: now,
            backoff: read_backoff(settings.poll),
            next_read: now,
        })
    }
}

/// The waits between failed reads: twice `poll` doubling to [`MAX_BACKOFF`], with jitter.
fn read_backoff(poll: Duration) -> ExponentialBackoff {
    backoff(poll.saturating_mul(2).min(MAX_BACKOFF))
}

impl ChainSource {
    fn read_state(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.reading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One read: the tasks of the blocks newly at confirmation depth, and the cursor to persist
    /// with them. Nothing while backing off after a failure.
    pub(super) async fn read_tasks(&self) -> Result<Polled, SourceError> {
        let checkpoint = {
            let state = self.read_state();
            if Instant::now() < state.next_read {
                return Ok(Polled::default());
            }
            state.checkpoint.clone()
        };
        let step = match self.step(&checkpoint).await {
            Ok(step) => step,
            Err(e) => return Err(self.read_failed(&e)),
        };
        self.health.source_worked("read");
        self.show_progress(&step);
        let tasks = match self.takeable(&step.found).await {
            Ok(tasks) => tasks,
            Err(e) => return Err(self.read_failed(&e)),
        };
        let cursor = self.advance(&step, !tasks.is_empty())?;
        if !tasks.is_empty() {
            tracing::info!(
                tasks = tasks.len(),
                through_block = step.checkpoint.next_block - 1,
                "tasks read from the chain"
            );
        }
        Ok(Polled {
            tasks,
            cursor,
            more: !step.caught_up,
        })
    }

    /// The tasks of `found` this operator takes: every 1-of-1 task, and a k-of-n task only while
    /// it still takes commits and only when this operator can run it under its limits (asked of
    /// the registry, many tasks in one call).
    async fn takeable(&self, found: &[Found]) -> Result<Vec<TaskSpec>, ScanError> {
        use futures_util::{StreamExt, TryStreamExt};
        let taken: Vec<Option<TaskSpec>> = futures_util::stream::iter(found.iter().cloned())
            .map(|found| self.take(found))
            .buffered(MAX_IDS_READ)
            .try_collect()
            .await?;
        Ok(taken.into_iter().flatten().collect())
    }

    /// One found task as [`ChainSource::takeable`] takes it (`None`: left to others).
    async fn take(&self, found: Found) -> Result<Option<TaskSpec>, ScanError> {
        let event = &found.event;
        let mut task = to_task(self.task_id(event.taskId), event);
        if found.terms.is_none() {
            return Ok(Some(task));
        }
        task.limits = replicated_limits(event.fuel, event.timeoutSec);
        if let Err(why) = task.limits.resolve(&self.settings.intake) {
            // Committing `bad_input` would disagree with every operator that can run it.
            tracing::warn!(task = %event.taskId, %why, "a k-of-n task over this operator's maxima; refused, left to others");
            self.metrics.chain_refused.inc();
            return Ok(None);
        }
        let Progress {
            task: on_chain,
            time,
        } = self
            .progress
            .read(event.taskId)
            .await
            .map_err(|e| ScanError::Node(format!("task {}: {e}", event.taskId)))?;
        let open = on_chain.status == PENDING
            && on_chain.deadline.to::<u64>() != 0
            && on_chain.commits < on_chain.replicas
            && time < on_chain.commitEnd.to::<u64>();
        if !open {
            tracing::info!(task = %event.taskId, "a k-of-n task that takes no more commits; left to others");
            return Ok(None);
        }
        Ok(Some(task))
    }

    /// One scan step from `checkpoint`, failing after [`READ_TIMEOUT`].
    async fn step(&self, checkpoint: &Checkpoint) -> Result<Step, ScanError> {
        let step = scan::step(&self.view, checkpoint, self.options);
        tokio::time::timeout(READ_TIMEOUT, step)
            .await
            .unwrap_or_else(|_| {
                Err(ScanError::Node(format!(
                    "the node did not answer within {} s",
                    READ_TIMEOUT.as_secs()
                )))
            })
    }

    /// Counts a failed read and puts the next one off by the next backoff wait.
    fn read_failed(&self, error: &ScanError) -> SourceError {
        let wait = {
            let mut state = self.read_state();
            let wait = state.backoff.next().unwrap_or(MAX_BACKOFF);
            state.next_read = Instant::now() + wait;
            wait
        };
        self.health.source_failed("read", error.to_string());
        SourceError(format!(
            "reading tasks from the chain (next try in {} ms): {error}",
            wait.as_millis()
        ))
    }

    /// The head and the last block scanned in `/metrics`; a rewind in the log.
    fn show_progress(&self, step: &Step) {
        let gauge = |block| {
            self.metrics
                .chain_block
                .get_or_create(&BlockLabel { block })
        };
        gauge("head").set(i64::try_from(step.head).unwrap_or(i64::MAX));
        gauge("scanned").set(i64::try_from(step.checkpoint.next_block).unwrap_or(i64::MAX) - 1);
        if let Some(block) = step.rewound_to {
            tracing::warn!(
                block,
                "the chain was reorganised under blocks already read; reading again from this block"
            );
        }
    }

    /// Moves the cursor to `step`'s checkpoint and ends any backoff; returns the cursor to
    /// persist when tasks were found, the scan rewound, or [`IDLE_PERSIST`] has passed.
    fn advance(&self, step: &Step, found: bool) -> Result<Option<String>, SourceError> {
        let mut state = self.read_state();
        state.backoff = read_backoff(self.settings.poll);
        state.next_read = Instant::now();
        state.checkpoint = step.checkpoint.clone();
        let idle = state.persisted_at.elapsed() >= IDLE_PERSIST;
        if !(found || step.rewound_to.is_some() || idle) {
            return Ok(None);
        }
        state.persisted_at = Instant::now();
        let saved = SavedCursor {
            chain_id: self.settings.chain_id,
            contract: self.settings.contract,
            checkpoint: step.checkpoint.clone(),
        };
        serde_json::to_string(&saved)
            .map(Some)
            .map_err(|e| SourceError(e.to_string()))
    }
}

/// A `TaskSubmitted` event as a task. An input that is not JSON is kept as a string, for the
/// intake check to refuse with its reason. Public so the fuzz targets drive it.
pub fn to_task(task_id: String, event: &TaskSubmitted) -> TaskSpec {
    let input = if event.input.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&event.input).unwrap_or_else(|_| Value::String(event.input.clone()))
    };
    TaskSpec {
        task_id,
        wasm_cid: event.wasmCid.clone(),
        entry: Some(event.entry.clone()),
        input,
        limits: TaskLimits {
            timeout_sec: (event.timeoutSec > 0).then(|| f64::from(event.timeoutSec)),
            max_memory_mb: None,
            fuel: (event.fuel > 0).then_some(event.fuel),
            max_output_bytes: None,
        },
        // A cached result is the same bits a run would give, so it may be committed too.
        cache: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_exec_chain::U256;

    fn event(cid: &str, entry: &str, input: &str) -> TaskSubmitted {
        TaskSubmitted {
            taskId: U256::from(7),
            requester: Address::ZERO,
            wasmCid: cid.into(),
            entry: entry.into(),
            input: input.into(),
            fuel: 0,
            timeoutSec: 3,
        }
    }

    const FIB: &str = crate::source::placeholder::FIB_CID;

    #[test]
    fn an_event_becomes_a_task_with_its_limits() {
        let task = to_task("t".into(), &event(FIB, "fib", "[12]"));
        assert_eq!(task.input, json!([12]));
        assert_eq!(task.entry.as_deref(), Some("fib"));
        assert_eq!(task.limits.timeout_sec, Some(3.0));
        assert_eq!(task.limits.fuel, None, "0 means the default");
        let rules = wasm_exec_task::IntakeRules::default().cids_only();
        assert!(task.check(&rules).is_ok());
    }

    #[test]
    fn malformed_requests_fail_the_cids_only_intake_check_naming_why() {
        let rules = wasm_exec_task::IntakeRules::default().cids_only();
        let cases = [
            (event("not a cid!", "fib", "[1]"), "not a CID"),
            (event("fib.wasm", "fib", "[1]"), "not a CID"),
            (event(FIB, "fib", "{oops"), "not JSON"),
            (event(FIB, "fib", r#"{"args": 5}"#), "input"),
            (event(&"b".repeat(300), "fib", "[1]"), "300 bytes"),
            (
                event(FIB, &"e".repeat(300), "[1]"),
                "entry: must be 1-256 bytes, got 300",
            ),
        ];
        for (event, expected) in cases {
            let why = to_task("t".into(), &event)
                .check(&rules)
                .expect_err("malformed")
                .to_string();
            assert!(why.contains(expected), "{why} should say {expected}");
        }
    }
}
