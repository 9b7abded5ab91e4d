//! The state store on redb (`COORDINATOR_STATE_DIR/state.redb`), with group commit.
//!
//! Every mutation goes to one writer thread, which takes all mutations waiting (up to
//! [`MAX_BATCH`]) and applies them in one durable write transaction, then answers each caller. A
//! caller's future thus resolves only once its change is on disk, yet under load thousands of
//! changes share one fsync. Reads use redb's concurrent read transactions directly.

use super::{StateError, StateStore, TaskRecord, TaskState, now_ms};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// task_id -> JSON-encoded [`TaskRecord`].
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// state name -> number of tasks in it, kept in the same transactions as `TASKS`, so that
/// counting (metrics, probes) does not read every task.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");

/// Changes to the per-state counts within one batch, indexed like [`TaskState::ALL`].
type Deltas = [i64; 5];

fn slot(state: TaskState) -> usize {
    TaskState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

/// Most mutations applied in one transaction.
pub const MAX_BATCH: usize = 4096;

/// One change to apply, with where to send its outcome.
enum Mutation {
    Admit(
        Vec<TaskSpec>,
        String,
        oneshot::Sender<Result<Vec<TaskSpec>, StateError>>,
    ),
    Progress(String, TaskState),
    Finish(
        String,
        Box<ResultEnvelope>,
        bool,
        oneshot::Sender<Result<(), StateError>>,
    ),
    Reported(String, oneshot::Sender<Result<(), StateError>>),
}

/// The redb-backed store.
pub struct RedbStore {
    db: Arc<Database>,
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

fn err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) `dir/state.redb` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StateError(format!(
                "creating COORDINATOR_STATE_DIR \"{}\": {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("state.redb");
        let db = Database::create(&path)
            .map_err(|e| StateError(format!("opening \"{}\": {e}", path.display())))?;
        let txn = db.begin_write().map_err(err)?;
        {
            let tasks = txn.open_table(TASKS).map_err(err)?;
            let mut counts = txn.open_table(COUNTS).map_err(err)?;
            // A database written before counts were kept: count once now.
            if counts.is_empty().map_err(err)? && !tasks.is_empty().map_err(err)? {
                let mut deltas: Deltas = [0; 5];
                for entry in tasks.iter().map_err(err)? {
                    let (_, value) = entry.map_err(err)?;
                    deltas[slot(decode(value.value())?.state)] += 1;
                }
                apply_deltas(&mut counts, &deltas)?;
            }
        }
        txn.commit().map_err(err)?;
        let db = Arc::new(db);
        let (writer, mutations) = mpsc::channel();
        let for_writer = db.clone();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || write_loop(&for_writer, &mutations))
            .map_err(|e| StateError(format!("starting the state writer: {e}")))?;
        Ok(Self {
            db,
            writer: Some(writer),
            thread: Some(thread),
        })
    }

    fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Mutation,
    ) -> Result<oneshot::Receiver<T>, StateError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .as_ref()
            .and_then(|w| w.send(make(tx)).ok())
            .ok_or_else(|| StateError("the state writer has stopped".into()))?;
        Ok(rx)
    }

    fn read_all(&self) -> Result<Vec<TaskRecord>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TASKS).map_err(err)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (_, value) = entry.map_err(err)?;
            records.push(decode(value.value())?);
        }
        Ok(records)
    }
}

fn decode(bytes: &[u8]) -> Result<TaskRecord, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError(format!("corrupt task record: {e}")))
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
        answer(self.send(|tx| Mutation::Admit(tasks, origin.to_owned(), tx))).await
    }

    fn record_progress(&self, task_id: &str, state: TaskState) {
        if let Some(writer) = &self.writer {
            // Only fails when the writer has stopped (shutdown); the task then reruns on start.
            let _ = writer.send(Mutation::Progress(task_id.to_owned(), state));
        }
    }

    async fn finish(
        &self,
        task_id: &str,
        result: &ResultEnvelope,
        reported: bool,
    ) -> Result<(), StateError> {
        answer(self.send(|tx| {
            Mutation::Finish(task_id.to_owned(), Box::new(result.clone()), reported, tx)
        }))
        .await
    }

    async fn mark_reported(&self, task_id: &str) -> Result<(), StateError> {
        answer(self.send(|tx| Mutation::Reported(task_id.to_owned(), tx))).await
    }

    fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TASKS).map_err(err)?;
        match table.get(task_id).map_err(err)? {
            Some(value) => decode(value.value()).map(Some),
            None => Ok(None),
        }
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
        let txn = self.db.begin_read().map_err(err)?;
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
    }

    fn counts(&self) -> Result<BTreeMap<TaskState, u64>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
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
    }
}

/// The writer thread: batches waiting mutations into one durable transaction each.
fn write_loop(db: &Database, mutations: &mpsc::Receiver<Mutation>) {
    while let Ok(first) = mutations.recv() {
        let mut batch = vec![first];
        loop {
            while batch.len() < MAX_BATCH {
                match mutations.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Nobody waits on progress records: rather than spend a commit (and delay the next
            // caller who does wait) on them alone, hold them until a waited-for change comes,
            // or PROGRESS_HOLD passes.
            let only_progress = batch.iter().all(|m| matches!(m, Mutation::Progress(..)));
            if !only_progress || batch.len() >= MAX_BATCH {
                break;
            }
            match mutations.recv_timeout(PROGRESS_HOLD) {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        apply_batch(db, batch);
    }
}

/// Longest time progress records wait for a commit they can share.
const PROGRESS_HOLD: std::time::Duration = std::time::Duration::from_millis(20);

/// Answers one caller once the commit's outcome is known (`Some` = the commit failed).
type Reply = Box<dyn FnOnce(Option<&StateError>)>;

/// Applies a batch in one transaction; every caller gets its own outcome, or the commit's error.
fn apply_batch(db: &Database, batch: Vec<Mutation>) {
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return fail_all(batch, &err(e)),
    };
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    {
        let mut table = match txn.open_table(TASKS) {
            Ok(table) => table,
            Err(e) => return fail_all(batch, &err(e)),
        };
        let now = now_ms();
        let mut deltas: Deltas = [0; 5];
        for mutation in batch {
            match mutation {
                Mutation::Admit(tasks, origin, tx) => {
                    let outcome = admit(&mut table, tasks, &origin, now, &mut deltas);
                    replies.push(Box::new(move |failed| {
                        let _ = tx.send(match failed {
                            Some(e) => Err(StateError(e.0.clone())),
                            None => outcome,
                        });
                    }));
                }
                Mutation::Progress(id, state) => {
                    let outcome = update(&mut table, &id, now, &mut deltas, |r| {
                        if state == TaskState::Running {
                            r.attempts += 1;
                        }
                        if !r.state.is_finished() {
                            r.state = state;
                        }
                    });
                    if let Err(e) = outcome {
                        tracing::warn!(task_id = %id, error = %e, "could not record a task's progress");
                    }
                }
                Mutation::Finish(id, result, reported, tx) => {
                    let outcome = update(&mut table, &id, now, &mut deltas, |r| {
                        r.reported |= reported;
                        r.state = if result.ok {
                            TaskState::Succeeded
                        } else {
                            TaskState::Failed
                        };
                        r.result = Some(*result);
                    });
                    replies.push(reply_unit(tx, outcome));
                }
                Mutation::Reported(id, tx) => {
                    let outcome = update(&mut table, &id, now, &mut deltas, |r| r.reported = true);
                    replies.push(reply_unit(tx, outcome));
                }
            }
        }
        let counted = txn
            .open_table(COUNTS)
            .map_err(err)
            .and_then(|mut counts| apply_deltas(&mut counts, &deltas));
        if let Err(e) = counted {
            drop(table);
            return fail_replies(replies, &e);
        }
    }
    let committed = txn.commit().map_err(err).err();
    for reply in replies {
        reply(committed.as_ref());
    }
}

type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// Adds a batch's count changes to the counts table.
fn apply_deltas(
    counts: &mut redb::Table<'_, &'static str, u64>,
    deltas: &Deltas,
) -> Result<(), StateError> {
    for (state, delta) in TaskState::ALL.iter().zip(deltas) {
        if *delta == 0 {
            continue;
        }
        let current = counts
            .get(state.as_str())
            .map_err(err)?
            .map_or(0, |v| v.value());
        let next = current.saturating_add_signed(*delta);
        counts.insert(state.as_str(), next).map_err(err)?;
    }
    Ok(())
}

fn admit(
    table: &mut Table<'_>,
    tasks: Vec<TaskSpec>,
    origin: &str,
    now: u64,
    deltas: &mut Deltas,
) -> Result<Vec<TaskSpec>, StateError> {
    let mut fresh = Vec::new();
    for task in tasks {
        if table.get(task.task_id.as_str()).map_err(err)?.is_some() {
            continue;
        }
        let record = TaskRecord {
            task: task.clone(),
            origin: origin.to_owned(),
            state: TaskState::Pending,
            attempts: 0,
            reported: false,
            created_at_ms: now,
            updated_at_ms: now,
            result: None,
        };
        let bytes = serde_json::to_vec(&record).map_err(err)?;
        table
            .insert(task.task_id.as_str(), bytes.as_slice())
            .map_err(err)?;
        deltas[slot(TaskState::Pending)] += 1;
        fresh.push(task);
    }
    Ok(fresh)
}

fn update(
    table: &mut Table<'_>,
    task_id: &str,
    now: u64,
    deltas: &mut Deltas,
    change: impl FnOnce(&mut TaskRecord),
) -> Result<(), StateError> {
    let mut record = match table.get(task_id).map_err(err)? {
        Some(value) => decode(value.value())?,
        None => return Err(StateError(format!("unknown task \"{task_id}\""))),
    };
    let before = record.state;
    change(&mut record);
    deltas[slot(before)] -= 1;
    deltas[slot(record.state)] += 1;
    record.updated_at_ms = now;
    let bytes = serde_json::to_vec(&record).map_err(err)?;
    table.insert(task_id, bytes.as_slice()).map_err(err)?;
    Ok(())
}

fn reply_unit(
    tx: oneshot::Sender<Result<(), StateError>>,
    outcome: Result<(), StateError>,
) -> Reply {
    Box::new(move |failed| {
        let _ = tx.send(match failed {
            Some(e) => Err(StateError(e.0.clone())),
            None => outcome,
        });
    })
}

/// Answers every caller of a batch that could not be committed.
fn fail_replies(replies: Vec<Reply>, e: &StateError) {
    for reply in replies {
        reply(Some(e));
    }
}

fn fail_all(batch: Vec<Mutation>, e: &StateError) {
    for mutation in batch {
        let failure = || StateError(e.0.clone());
        let _ = match mutation {
            Mutation::Admit(_, _, tx) => tx.send(Err(failure())).map_err(|_| ()),
            Mutation::Progress(..) => Ok(()),
            Mutation::Finish(_, _, _, tx) | Mutation::Reported(_, tx) => {
                tx.send(Err(failure())).map_err(|_| ())
            }
        };
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
            store.mark_reported("a").await.unwrap();
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
        store.mark_reported("t3").await.unwrap();
        let page = store.list(None, None, 4).unwrap();
        assert_eq!(page.len(), 4);
        let next = store.list(None, Some(&page[3].task.task_id), 100).unwrap();
        assert_eq!(page.len() + next.len(), 10);
        let running = store.list(Some(TaskState::Running), None, 100).unwrap();
        assert_eq!(running.len(), 1);
        assert!(store.mark_reported("nope").await.is_err());
    }

    #[tokio::test]
    async fn concurrent_mutations_share_commits_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        store
            .admit(
                (0..500).map(|i| task(&format!("t{i:03}"))).collect(),
                "test",
            )
            .await
            .unwrap();
        let mut joins = Vec::new();
        for i in 0..500 {
            let store = store.clone();
            joins.push(tokio::spawn(async move {
                store.record_progress(&format!("t{i:03}"), TaskState::Running);
                store.mark_reported(&format!("t{i:03}")).await
            }));
        }
        for j in joins {
            j.await.unwrap().unwrap();
        }
        assert_eq!(store.counts().unwrap()[&TaskState::Running], 500);
    }
}
