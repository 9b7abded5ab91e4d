//! Poison tasks: a task started again and again without ever finishing (each run ended with the
//! coordinator itself: a crash, an OOM kill) would take the coordinator down at every restart.
//! After [`DEFAULT_QUARANTINE_AFTER`] such starts it is quarantined instead of run again: its
//! state becomes [`TaskState::Quarantined`] and its result an error saying why, reported to its
//! source like any other result.

use super::TaskRecord;
#[cfg(doc)]
use super::TaskState;

/// Starts without a finish after which a resumed task is quarantined (3).
pub const DEFAULT_QUARANTINE_AFTER: u32 = 3;

/// Whether a resumed record is to be quarantined rather than run again: unfinished, and already
/// started `after` times or more (`after` 0 never quarantines).
pub fn is_poisoned(record: &TaskRecord, after: u32) -> bool {
    after > 0 && !record.state.is_finished() && record.attempts >= after
}

/// The records among `resumed` to quarantine, as [`is_poisoned`] decides.
pub fn poisoned(resumed: &[TaskRecord], after: u32) -> Vec<&TaskRecord> {
    resumed.iter().filter(|r| is_poisoned(r, after)).collect()
}

/// The message of a quarantined task's result. Its kind is to be `crashed`, which the task crate's
/// `ErrorKind` does not have yet.
pub fn quarantine_message(record: &TaskRecord) -> String {
    format!(
        "started {} times without finishing: each run ended with the coordinator (a crash or an \
         out-of-memory kill?); quarantined, not run again",
        record.attempts
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::redb::RedbStore;
    use crate::state::{StateStore, TaskState};
    use serde_json::json;
    use wasm_exec_task::{ErrorKind, ResultEnvelope, TaskSpec};

    fn record(state: TaskState, attempts: u32) -> TaskRecord {
        TaskRecord {
            task: TaskSpec::new("t", "fib.wasm", json!([1])),
            origin: "api".into(),
            state,
            attempts,
            reported: false,
            created_at_ms: 0,
            updated_at_ms: 0,
            result: None,
            not_written_back: None,
            timeline: Vec::new(),
            cancelled: None,
            tenant: None,
            callback: None,
        }
    }

    #[test]
    fn only_unfinished_tasks_started_often_enough_are_poisoned() {
        assert!(is_poisoned(&record(TaskState::Running, 3), 3));
        assert!(is_poisoned(&record(TaskState::Pending, 4), 3));
        assert!(!is_poisoned(&record(TaskState::Running, 2), 3));
        assert!(
            !is_poisoned(&record(TaskState::Failed, 9), 3),
            "it has its result"
        );
        assert!(
            !is_poisoned(&record(TaskState::Running, 9), 0),
            "0 disables"
        );
        let resumed = [record(TaskState::Running, 1), record(TaskState::Running, 5)];
        assert_eq!(poisoned(&resumed, 3).len(), 1);
        assert!(quarantine_message(&resumed[1]).contains("started 5 times"));
    }

    #[tokio::test]
    async fn a_task_crashed_three_times_is_quarantined_then_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            // A start each time, then (dropping the store) the coordinator "crashes".
            let store = RedbStore::open(dir.path()).unwrap();
            let task = TaskSpec::new("p", "fib.wasm", json!([1]));
            store.admit(vec![task], "api").await.unwrap();
            store.record_progress("p", TaskState::Running);
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let resumed = store.resumable().unwrap();
        let ids: Vec<&str> = poisoned(&resumed, DEFAULT_QUARANTINE_AFTER)
            .into_iter()
            .map(|r| r.task.task_id.as_str())
            .collect();
        assert_eq!(ids, ["p"]);
        // `Io` stands in for the `crashed` kind the task crate is to add.
        let result = ResultEnvelope::failure(ErrorKind::Crashed, quarantine_message(&resumed[0]));
        store.quarantine("p", &result).await.unwrap();
        drop(store);
        let store = RedbStore::open(dir.path()).unwrap();
        let p = store.get("p").unwrap().unwrap();
        assert_eq!((p.state, p.attempts), (TaskState::Quarantined, 3));
        assert_eq!(p.result.as_ref(), Some(&result));
        assert_eq!(store.counts().unwrap()[&TaskState::Quarantined], 1);
        assert_eq!(store.counts().unwrap()[&TaskState::Running], 0);
        assert_eq!(
            store.resumable().unwrap().len(),
            1,
            "its result is still to report"
        );
        store.mark_reported("p", None).await.unwrap();
        assert!(store.resumable().unwrap().is_empty());
        let other = ResultEnvelope::failure(ErrorKind::Trap, "late");
        store.quarantine("p", &other).await.unwrap();
        assert_eq!(store.get("p").unwrap().unwrap().result, Some(result));
    }
}
