//! What a task's record keeps of its life besides its state: the timeline (each state change
//! with its time and attempt, bounded), who cancelled it and when; and the change events the
//! store broadcasts after every commit (for `?wait=` and `GET /v1/events`).

use super::TaskState;
use serde::{Deserialize, Serialize};

/// Most steps a timeline keeps: the first (taken) and the latest ones, so that a task resumed
/// over and over does not grow its record without bound.
pub const MAX_TIMELINE: usize = 32;

/// One state change of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The state it entered.
    pub state: TaskState,
    /// Its attempts so far (starts counted when it entered `running`).
    pub attempt: u32,
}

/// Appends `step`, dropping the oldest step but the first when the timeline is full.
pub fn record(timeline: &mut Vec<Step>, step: Step) {
    if timeline.len() >= MAX_TIMELINE {
        timeline.remove(1.min(timeline.len() - 1));
    }
    timeline.push(step);
}

/// Who cancelled a task, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancellation {
    /// Who asked (the API caller's identity: `token` with `COORDINATOR_API_TOKEN` set, else
    /// `anonymous`).
    pub by: String,
    /// When the cancel was committed, in Unix milliseconds.
    pub at_ms: u64,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The task is now cancelled; it was in `was`.
    Cancelled {
        /// Its state before.
        was: TaskState,
    },
    /// The task had ended already, in this state: nothing changed.
    AlreadyEnded(TaskState),
}

/// A change to one task, as broadcast once committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// The task.
    pub task_id: String,
    /// Its state after the change.
    pub state: TaskState,
    /// Its attempts so far.
    pub attempts: u32,
    /// When the change was committed, in Unix milliseconds.
    pub at_ms: u64,
    /// The task's tenant (for the event stream's filter); not sent.
    #[serde(skip)]
    pub tenant: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;
    use wasm_exec_task::{ResultEnvelope, TaskSpec};

    fn task(id: &str) -> TaskSpec {
        TaskSpec::new(
            id,
            "fib.wasm",
            serde_json::json!({"entry": "fib", "args": [12]}),
        )
    }

    #[tokio::test]
    async fn a_cancel_is_durable_wins_over_a_late_result_and_is_broadcast() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = crate::state::redb::RedbStore::open(dir.path()).unwrap();
            let mut events = store.subscribe().unwrap();
            store
                .admit(vec![task("a"), task("b")], crate::state::API_ORIGIN)
                .await
                .unwrap();
            store.record_start("a").await.unwrap();
            let done = store.cancel("a", "token").await.unwrap();
            assert_eq!(
                done,
                CancelOutcome::Cancelled {
                    was: TaskState::Running
                }
            );
            let late = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Trap, "late");
            store.finish("a", &late, true).await.unwrap();
            store.finish("b", &late, true).await.unwrap();
            let again = store.cancel("b", "token").await.unwrap();
            assert_eq!(again, CancelOutcome::AlreadyEnded(TaskState::Failed));
            let seen: Vec<(String, TaskState)> = (0..6)
                .map(|_| events.try_recv().unwrap())
                .map(|e| (e.task_id, e.state))
                .collect();
            let want = [
                ("a", TaskState::Pending),
                ("b", TaskState::Pending),
                ("a", TaskState::Running),
                ("a", TaskState::Cancelled),
                ("a", TaskState::Cancelled),
                ("b", TaskState::Failed),
            ];
            let want: Vec<(String, TaskState)> =
                want.iter().map(|(id, s)| ((*id).to_owned(), *s)).collect();
            assert_eq!(seen, want);
        }
        let store = crate::state::redb::RedbStore::open(dir.path()).unwrap();
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(a.state, TaskState::Cancelled);
        assert_eq!(a.cancelled.as_ref().unwrap().by, "token");
        let result = a.result.unwrap();
        assert_eq!(
            result.kind(),
            Some(wasm_exec_task::ErrorKind::CancelledByRequest)
        );
        assert!(result.error.unwrap().message.contains("cancelled by token"));
        let steps: Vec<TaskState> = a.timeline.iter().map(|s| s.state).collect();
        assert_eq!(
            steps,
            [TaskState::Pending, TaskState::Running, TaskState::Cancelled]
        );
        assert_eq!(a.timeline[1].attempt, 1);
        assert!(
            store.resumable().unwrap().is_empty(),
            "a cancelled task never runs again"
        );
        assert_eq!(store.counts().unwrap()[&TaskState::Cancelled], 1);
    }

    #[test]
    fn a_full_timeline_keeps_its_first_step_and_the_latest() {
        let mut timeline = Vec::new();
        for n in 0..100u32 {
            let state = if n % 2 == 0 {
                TaskState::Fetching
            } else {
                TaskState::Running
            };
            record(
                &mut timeline,
                Step {
                    at_ms: u64::from(n),
                    state,
                    attempt: n,
                },
            );
        }
        assert_eq!(timeline.len(), MAX_TIMELINE);
        assert_eq!(timeline[0].at_ms, 0);
        assert_eq!(timeline[1].at_ms, 100 - MAX_TIMELINE as u64 + 1);
        assert_eq!(timeline.last().unwrap().at_ms, 99);
    }
}
