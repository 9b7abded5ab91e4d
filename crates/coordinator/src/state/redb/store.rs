//! [`RedbStore`]: opens the database and the journal, reads directly, and sends every mutation
//! to the writer thread.

use super::super::OpenError;
use super::super::disk::{DEFAULT_LOW_WATERMARK_BYTES, DiskSpace};
use super::super::journal::Change;
use super::super::{
    Attempt, CancelOutcome, DeliveryState, StateError, StateStore, TaskEvent, TaskRecord,
    TaskState, WriteFailure,
};
use super::open::open_dir;
use super::shared::Shared;
use super::tables::{COUNTS, CURSORS, TASKS, decode, err};
use super::writer::{Mutation, Waiter, Writer};
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// The redb-backed store.
pub struct RedbStore {
    /// The state directory.
    dir: PathBuf,
    /// Below this many free bytes in `dir`'s filesystem, [`DiskSpace::is_low`].
    low_watermark_bytes: u64,
    /// The database (as the writer last opened it) and the health of writes.
    pub(super) shared: Arc<Shared>,
    /// Sends to the writer thread; dropped first on drop, which ends the thread.
    writer: Option<mpsc::Sender<Mutation>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Ends the writer thread after it applied everything sent, so that the database is closed
    /// (and may be reopened) once the store is dropped.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RedbStore {
    /// Opens (or creates) `dir/state.redb` and starts the writer thread. Refuses, with a typed
    /// error naming the file and the way to recover, a database that is missing or empty beside a
    /// journal, a database that fails redb's integrity check, and a corrupt journal.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let opened = open_dir(dir)?;
        let shared = Arc::new(Shared::default());
        let writer = Writer::new(dir, shared.clone(), opened);
        let (sender, mutations) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(&mutations))
            .map_err(|source| OpenError::Io {
                what: "starting the state writer for",
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_owned(),
            low_watermark_bytes: DEFAULT_LOW_WATERMARK_BYTES,
            shared,
            writer: Some(sender),
            thread: Some(thread),
        })
    }

    /// Sets the low watermark of free bytes under which [`DiskSpace::is_low`] (default
    /// [`DEFAULT_LOW_WATERMARK_BYTES`], 128 MiB).
    #[must_use]
    pub fn with_low_watermark(mut self, bytes: u64) -> Self {
        self.low_watermark_bytes = bytes;
        self
    }

    /// Since when, and why, writes fail (`None` while they work). After a failed database write
    /// the store reopens the database by itself, with backoff; this clears once a write works.
    pub fn last_write_error(&self) -> Option<WriteFailure> {
        self.shared.failure()
    }

    /// Whether writes work (for `/readyz`).
    pub fn healthy(&self) -> bool {
        self.last_write_error().is_none()
    }

    fn send<T>(
        &self,
        change: Change,
        waiter: impl FnOnce(oneshot::Sender<T>) -> Waiter,
    ) -> Result<oneshot::Receiver<T>, StateError> {
        let (tx, rx) = oneshot::channel();
        let mutation = Mutation {
            change,
            waiter: waiter(tx),
        };
        self.writer
            .as_ref()
            .and_then(|w| w.send(mutation).ok())
            .ok_or_else(|| StateError("the state writer has stopped".into()))?;
        Ok(rx)
    }

    fn read_all(&self) -> Result<Vec<TaskRecord>, StateError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TASKS).map_err(err)?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (_, value) = entry.map_err(err)?;
                records.push(decode(value.value())?);
            }
            Ok(records)
        })
    }
}

async fn answer<T>(
    rx: Result<oneshot::Receiver<Result<T, StateError>>, StateError>,
) -> Result<T, StateError> {
    rx?.await
        .map_err(|_| StateError("the state writer has stopped".into()))?
}

#[async_trait]
impl StateStore for RedbStore {
    async fn admit(&self, tasks: Vec<TaskSpec>, origin: &str) -> Result<Vec<TaskSpec>, StateError> {
        let change = Change::Admit {
            tasks,
            origin: origin.to_owned(),
            cursor: None,
        };
        answer(self.send(change, Waiter::Admit)).await
    }

    async fn admit_with_cursor(
        &self,
        tasks: Vec<TaskSpec>,
        origin: &str,
        cursor: String,
    ) -> Result<Vec<TaskSpec>, StateError> {
        let change = Change::Admit {
            tasks,
            origin: origin.to_owned(),
            cursor: Some(cursor),
        };
        answer(self.send(change, Waiter::Admit)).await
    }

    async fn submit(
        &self,
        tasks: Vec<TaskSpec>,
        callbacks: BTreeMap<String, String>,
        tenant: Option<String>,
    ) -> Result<Vec<TaskSpec>, StateError> {
        let change = Change::Submit {
            tasks,
            callbacks,
            tenant,
        };
        answer(self.send(change, Waiter::Admit)).await
    }

    async fn record_delivery(&self, task_id: &str, attempt: Attempt) -> Result<(), StateError> {
        let change = Change::Delivery {
            id: task_id.to_owned(),
            attempt,
        };
        answer(self.send(change, Waiter::Done)).await
    }

    fn pending_deliveries(&self) -> Result<Vec<TaskRecord>, StateError> {
        Ok(self
            .read_all()?
            .into_iter()
            .filter(|r| {
                r.state.is_finished()
                    && r.callback
                        .as_ref()
                        .is_some_and(|c| c.state == DeliveryState::Pending)
            })
            .collect())
    }

    fn cursor(&self, origin: &str) -> Result<Option<String>, StateError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = match txn.open_table(CURSORS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(err(e)),
            };
            Ok(table
                .get(origin)
                .map_err(err)?
                .map(|v| v.value().to_owned()))
        })
    }

    fn record_progress(&self, task_id: &str, state: TaskState) {
        if let Some(writer) = &self.writer {
            // Only fails when the writer has stopped (shutdown); the task then reruns on start.
            let _ = writer.send(Mutation {
                change: Change::Progress {
                    id: task_id.to_owned(),
                    state,
                },
                waiter: Waiter::Nobody,
            });
        }
    }

    async fn record_start(&self, task_id: &str) -> Result<(), StateError> {
        let change = Change::Progress {
            id: task_id.to_owned(),
            state: TaskState::Running,
        };
        answer(self.send(change, Waiter::Done)).await
    }

    async fn finish(
        &self,
        task_id: &str,
        result: &ResultEnvelope,
        reported: bool,
    ) -> Result<(), StateError> {
        let change = Change::Finish {
            id: task_id.to_owned(),
            result: Box::new(result.clone()),
            reported,
        };
        answer(self.send(change, Waiter::Done)).await
    }

    async fn quarantine(&self, task_id: &str, result: &ResultEnvelope) -> Result<(), StateError> {
        let change = Change::Quarantine {
            id: task_id.to_owned(),
            result: Box::new(result.clone()),
        };
        answer(self.send(change, Waiter::Done)).await
    }

    async fn mark_reported(
        &self,
        task_id: &str,
        not_written_back: Option<String>,
    ) -> Result<(), StateError> {
        let change = Change::Reported {
            id: task_id.to_owned(),
            note: not_written_back,
        };
        answer(self.send(change, Waiter::Done)).await
    }

    async fn cancel(&self, task_id: &str, by: &str) -> Result<CancelOutcome, StateError> {
        let change = Change::Cancel {
            id: task_id.to_owned(),
            by: by.to_owned(),
        };
        answer(self.send(change, Waiter::Cancel)).await
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<TaskEvent>> {
        Some(self.shared.events.subscribe())
    }

    fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StateError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TASKS).map_err(err)?;
            match table.get(task_id).map_err(err)? {
                Some(value) => decode(value.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    fn resumable(&self) -> Result<Vec<TaskRecord>, StateError> {
        Ok(self
            .read_all()?
            .into_iter()
            .filter(|r| !r.state.is_finished() || !r.reported)
            .collect())
    }

    fn list(
        &self,
        state: Option<TaskState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TaskRecord>, StateError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(TASKS).map_err(err)?;
            let range = match after {
                Some(after) => table.range::<&str>(after..).map_err(err)?,
                None => table.range::<&str>(..).map_err(err)?,
            };
            let mut page = Vec::new();
            for entry in range {
                let (key, value) = entry.map_err(err)?;
                if Some(key.value()) == after {
                    continue;
                }
                let record = decode(value.value())?;
                if state.is_none_or(|s| s == record.state) {
                    page.push(record);
                    if page.len() >= limit {
                        break;
                    }
                }
            }
            Ok(page)
        })
    }

    fn write_failure(&self) -> Option<WriteFailure> {
        self.last_write_error()
    }

    fn disk_space(&self) -> Result<Option<DiskSpace>, StateError> {
        DiskSpace::measure(&self.dir, self.low_watermark_bytes)
            .map(Some)
            .map_err(|e| {
                StateError(format!(
                    "measuring free space of \"{}\": {e}",
                    self.dir.display()
                ))
            })
    }

    fn counts(&self) -> Result<BTreeMap<TaskState, u64>, StateError> {
        self.shared.read(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(COUNTS).map_err(err)?;
            let mut counts = BTreeMap::new();
            for state in TaskState::ALL {
                let n = table
                    .get(state.as_str())
                    .map_err(err)?
                    .map_or(0, |v| v.value());
                counts.insert(state, n);
            }
            Ok(counts)
        })
    }

    async fn corrupted(&self) -> String {
        self.shared.corrupted().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str) -> TaskSpec {
        TaskSpec::new(id, "fib.wasm", json!({"entry": "fib", "args": [12]}))
    }

    #[tokio::test]
    async fn a_cursor_is_kept_with_its_tasks_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            assert_eq!(store.cursor("chain").unwrap(), None);
            store
                .admit_with_cursor(vec![task("a")], "chain", "10".into())
                .await
                .unwrap();
            let again = store
                .admit_with_cursor(vec![task("a")], "chain", "11".into())
                .await
                .unwrap();
            assert!(again.is_empty(), "a known task is not taken twice");
            assert_eq!(store.cursor("chain").unwrap().as_deref(), Some("11"));
            assert_eq!(store.cursor("other").unwrap(), None);
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.cursor("chain").unwrap().as_deref(), Some("11"));
        assert_eq!(store.get("a").unwrap().unwrap().origin, "chain");
    }

    #[tokio::test]
    async fn admits_once_and_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            let fresh = store
                .admit(vec![task("a"), task("b")], "test")
                .await
                .unwrap();
            assert_eq!(fresh.len(), 2);
            let again = store
                .admit(vec![task("a"), task("c")], "test")
                .await
                .unwrap();
            assert_eq!(
                again.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
                ["c"]
            );
            store.record_progress("a", TaskState::Running);
            let mut result = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Io, "");
            result.ok = true;
            result.error = None;
            store.finish("a", &result, false).await.unwrap();
            store.mark_reported("a", None).await.unwrap();
            store
                .finish(
                    "b",
                    &ResultEnvelope::failure(wasm_exec_task::ErrorKind::Trap, "x"),
                    false,
                )
                .await
                .unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.attempts, a.reported),
            (TaskState::Succeeded, 1, true)
        );
        let resumable: Vec<String> = store
            .resumable()
            .unwrap()
            .into_iter()
            .map(|r| r.task.task_id)
            .collect();
        assert_eq!(
            resumable,
            ["b", "c"],
            "b is finished but unreported, c never ran"
        );
        let counts = store.counts().unwrap();
        assert_eq!(counts[&TaskState::Pending], 1);
        assert_eq!(counts[&TaskState::Failed], 1);
    }

    #[tokio::test]
    async fn lists_pages_by_id_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store
            .admit((0..10).map(|i| task(&format!("t{i}"))).collect(), "test")
            .await
            .unwrap();
        store.record_progress("t3", TaskState::Running);
        store.mark_reported("t3", None).await.unwrap();
        let page = store.list(None, None, 4).unwrap();
        assert_eq!(page.len(), 4);
        let next = store.list(None, Some(&page[3].task.task_id), 100).unwrap();
        assert_eq!(page.len() + next.len(), 10);
        let running = store.list(Some(TaskState::Running), None, 100).unwrap();
        assert_eq!(running.len(), 1);
        assert!(store.mark_reported("nope", None).await.is_err());
    }

    #[test]
    fn disk_space_is_low_under_the_configured_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let space = store.disk_space().unwrap().unwrap();
        assert_eq!(space.low_watermark_bytes, DEFAULT_LOW_WATERMARK_BYTES);
        let store = store.with_low_watermark(space.total_bytes + 1);
        assert!(store.disk_space().unwrap().unwrap().is_low());
        let store = store.with_low_watermark(0);
        assert!(!store.disk_space().unwrap().unwrap().is_low());
    }
}
