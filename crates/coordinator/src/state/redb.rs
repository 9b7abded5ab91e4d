//! The state store on redb (`COORDINATOR_STATE_DIR/state.redb`), with group commit and a
//! write-ahead journal (`COORDINATOR_STATE_DIR/journal.log`, see [`super::journal`]).
//!
//! Every mutation goes to one writer thread, which takes all mutations waiting (up to
//! [`MAX_BATCH`]) as one batch: it appends the batch to the journal and syncs it, applies it to
//! the database in one write transaction that does not wait for the disk, then answers each
//! caller. A caller's future thus resolves only once its change is on disk, under load thousands
//! of changes share one sync, and a sync is one small sequential write. At most every second (and
//! on shutdown) a durable commit makes the database whole and the journal is emptied; on start,
//! batches journaled after the last such commit are applied again. Reads use redb's concurrent
//! read transactions directly.

use super::journal::{Batch, Change, Journal};
use super::{StateError, StateStore, TaskRecord, TaskState, now_ms};
use async_trait::async_trait;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// task_id -> JSON-encoded [`TaskRecord`].
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// state name -> number of tasks in it, kept in the same transactions as `TASKS`, so that
/// counting (metrics, probes) does not read every task.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
/// Bookkeeping: [`JOURNAL_SEQ`] -> the number of the last journaled batch applied.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOURNAL_SEQ: &str = "journal_seq";
/// origin -> its read position (a source's opaque cursor), kept with the tasks it yielded.
const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("cursors");

/// Changes to the per-state counts within one batch, indexed like [`TaskState::ALL`].
type Deltas = [i64; 5];

fn slot(state: TaskState) -> usize {
    TaskState::ALL.iter().position(|s| *s == state).unwrap_or(0)
}

/// Most mutations applied in one transaction.
pub const MAX_BATCH: usize = 4096;

/// One change to apply, with who waits for its outcome.
struct Mutation {
    change: Change,
    waiter: Waiter,
}

/// Who to answer once a change is durable.
enum Waiter {
    /// Nobody waits (progress records).
    Nobody,
    /// An admission, answered with the tasks that were new.
    Admit(oneshot::Sender<Result<Vec<TaskSpec>, StateError>>),
    /// Any other change.
    Done(oneshot::Sender<Result<(), StateError>>),
}

/// What applying one change gave.
enum Applied {
    Admitted(Vec<TaskSpec>),
    Done,
}

impl Waiter {
    fn answer(self, outcome: Result<Applied, StateError>) {
        match self {
            Self::Nobody => {}
            Self::Admit(tx) => {
                let _ = tx.send(outcome.map(|a| match a {
                    Applied::Admitted(fresh) => fresh,
                    Applied::Done => Vec::new(),
                }));
            }
            Self::Done(tx) => {
                let _ = tx.send(outcome.map(|_| ()));
            }
        }
    }
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
        let journal_path = dir.join("journal.log");
        let (journal, batches) = Journal::open(&journal_path).map_err(|e| {
            StateError(format!(
                "opening the state journal \"{}\": {e}",
                journal_path.display()
            ))
        })?;
        let mut writer = Writer {
            seq: applied_seq(&db)?,
            db: Arc::new(db),
            journal,
            checkpointed: Instant::now(),
        };
        writer.replay(batches)?;
        let db = writer.db.clone();
        let (sender, mutations) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(&mutations))
            .map_err(|e| StateError(format!("starting the state writer: {e}")))?;
        Ok(Self {
            db,
            writer: Some(sender),
            thread: Some(thread),
        })
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

    fn cursor(&self, origin: &str) -> Result<Option<String>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = match txn.open_table(CURSORS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        Ok(table
            .get(origin)
            .map_err(err)?
            .map(|v| v.value().to_owned()))
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

/// The writer thread's state: the database, the journal, and the last batch number.
struct Writer {
    db: Arc<Database>,
    journal: Journal,
    /// The number of the last batch applied.
    seq: u64,
    /// When the database was last made durable.
    checkpointed: Instant,
}

/// How often, at most, the database is made durable and the journal emptied.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A journal this long is emptied at the next batch, whenever the last checkpoint was.
const JOURNAL_MAX_BYTES: u64 = 64 << 20;

impl Writer {
    /// Takes all mutations waiting (up to [`MAX_BATCH`]) and applies them as one batch, until
    /// every sender is gone; makes the database durable when idle and at the end.
    fn run(mut self, mutations: &mpsc::Receiver<Mutation>) {
        loop {
            let first = if self.journal.is_empty() {
                match mutations.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                match mutations.recv_timeout(CHECKPOINT_EVERY) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.checkpoint();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let batch = gather(first, mutations);
            self.apply(batch);
        }
        self.checkpoint();
    }

    /// Journals a batch (durably), applies it to the database, then answers each waiter.
    fn apply(&mut self, batch: Vec<Mutation>) {
        let (changes, waiters): (Vec<Change>, Vec<Waiter>) =
            batch.into_iter().map(|m| (m.change, m.waiter)).unzip();
        let batch = Batch {
            at_ms: now_ms(),
            changes,
        };
        if let Err(e) = self.journal.append(self.seq + 1, &batch) {
            let e = StateError(format!(
                "writing the state journal \"{}\": {e}",
                self.journal.path().display()
            ));
            for waiter in waiters {
                waiter.answer(Err(StateError(e.0.clone())));
            }
            return;
        }
        self.seq += 1;
        let durable = self.checkpointed.elapsed() >= CHECKPOINT_EVERY
            || self.journal.len() >= JOURNAL_MAX_BYTES;
        match commit(&self.db, self.seq, &batch, durable) {
            Ok(outcomes) => {
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    waiter.answer(outcome);
                }
                if durable {
                    self.cleared();
                }
            }
            Err(e) => {
                for waiter in waiters {
                    waiter.answer(Err(StateError(e.0.clone())));
                }
            }
        }
    }

    /// Makes everything applied durable in the database, then empties the journal.
    fn checkpoint(&mut self) {
        if self.journal.is_empty() {
            return;
        }
        let empty = Batch {
            at_ms: now_ms(),
            changes: Vec::new(),
        };
        match commit(&self.db, self.seq, &empty, true) {
            Ok(_) => self.cleared(),
            Err(e) => {
                tracing::warn!(error = %e, "could not checkpoint the state; the journal keeps every change")
            }
        }
    }

    /// Empties the journal after a durable commit.
    fn cleared(&mut self) {
        self.checkpointed = Instant::now();
        if let Err(e) = self.journal.clear() {
            tracing::warn!(error = %e, "could not empty the state journal; it is replayed on start");
        }
    }

    /// Applies the journaled batches the database does not have (a crash came before they
    /// were made durable there), then makes them durable.
    fn replay(&mut self, batches: Vec<(u64, Batch)>) -> Result<(), StateError> {
        let mut replayed = 0;
        for (seq, batch) in batches {
            if seq <= self.seq {
                continue;
            }
            for outcome in commit(&self.db, seq, &batch, false)? {
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "a journaled change did not apply again");
                }
            }
            self.seq = seq;
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(
                batches = replayed,
                "state: applied changes journaled before a crash"
            );
        }
        if !self.journal.is_empty() {
            commit(
                &self.db,
                self.seq,
                &Batch {
                    at_ms: now_ms(),
                    changes: Vec::new(),
                },
                true,
            )?;
            self.journal.clear().map_err(err)?;
        }
        Ok(())
    }
}

/// The batch number the database has applied (0 for a new one).
fn applied_seq(db: &Database) -> Result<u64, StateError> {
    let txn = db.begin_read().map_err(err)?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get(JOURNAL_SEQ).map_err(err)?.map_or(0, |v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(err(e)),
    }
}

/// Takes `first` and the mutations waiting behind it, up to [`MAX_BATCH`].
fn gather(first: Mutation, mutations: &mpsc::Receiver<Mutation>) -> Vec<Mutation> {
    let mut batch = vec![first];
    loop {
        while batch.len() < MAX_BATCH {
            match mutations.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        // Nobody waits on progress records: rather than spend a sync (and delay the next caller
        // who does wait) on them alone, hold them until a waited-for change comes, or
        // PROGRESS_HOLD passes.
        let only_progress = batch
            .iter()
            .all(|m| matches!(m.change, Change::Progress { .. }));
        if !only_progress || batch.len() >= MAX_BATCH {
            return batch;
        }
        match mutations.recv_timeout(PROGRESS_HOLD) {
            Ok(m) => batch.push(m),
            Err(_) => return batch,
        }
    }
}

/// Longest time progress records wait for a sync they can share.
const PROGRESS_HOLD: Duration = Duration::from_millis(20);

/// Applies batch `seq` in one transaction, durable or not, and returns each change's outcome
/// (an error for all if the commit failed).
fn commit(
    db: &Database,
    seq: u64,
    batch: &Batch,
    durable: bool,
) -> Result<Vec<Result<Applied, StateError>>, StateError> {
    let mut txn = db.begin_write().map_err(err)?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(err)?;
    let mut outcomes = Vec::with_capacity(batch.changes.len());
    {
        let mut table = txn.open_table(TASKS).map_err(err)?;
        let mut deltas: Deltas = [0; 5];
        for change in &batch.changes {
            outcomes.push(apply(&mut table, change, batch.at_ms, &mut deltas));
        }
        let cursors = batch.changes.iter().filter_map(|c| match c {
            Change::Admit {
                origin,
                cursor: Some(cursor),
                ..
            } => Some((origin, cursor)),
            _ => None,
        });
        let mut cursor_table = None;
        for (origin, cursor) in cursors {
            let table = match &mut cursor_table {
                Some(table) => table,
                None => cursor_table.insert(txn.open_table(CURSORS).map_err(err)?),
            };
            table
                .insert(origin.as_str(), cursor.as_str())
                .map_err(err)?;
        }
        drop(cursor_table);
        let mut counts = txn.open_table(COUNTS).map_err(err)?;
        apply_deltas(&mut counts, &deltas)?;
        let mut meta = txn.open_table(META).map_err(err)?;
        meta.insert(JOURNAL_SEQ, seq).map_err(err)?;
    }
    txn.commit().map_err(err)?;
    Ok(outcomes)
}

/// Applies one change to the tasks table.
fn apply(
    table: &mut Table<'_>,
    change: &Change,
    now: u64,
    deltas: &mut Deltas,
) -> Result<Applied, StateError> {
    match change {
        Change::Admit { tasks, origin, .. } => {
            admit(table, tasks, origin, now, deltas).map(Applied::Admitted)
        }
        Change::Progress { id, state } => {
            let outcome = update(table, id, now, deltas, |r| {
                if *state == TaskState::Running {
                    r.attempts += 1;
                }
                if !r.state.is_finished() {
                    r.state = *state;
                }
            });
            if let Err(e) = &outcome {
                tracing::warn!(task_id = %id, error = %e, "could not record a task's progress");
            }
            outcome.map(|()| Applied::Done)
        }
        Change::Finish {
            id,
            result,
            reported,
        } => update(table, id, now, deltas, |r| {
            r.reported |= *reported;
            r.state = if result.ok {
                TaskState::Succeeded
            } else {
                TaskState::Failed
            };
            r.result = Some((**result).clone());
        })
        .map(|()| Applied::Done),
        Change::Reported { id, note } => update(table, id, now, deltas, |r| {
            r.reported = true;
            r.not_written_back.clone_from(note);
        })
        .map(|()| Applied::Done),
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
    tasks: &[TaskSpec],
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
            not_written_back: None,
        };
        let bytes = serde_json::to_vec(&record).map_err(err)?;
        table
            .insert(task.task_id.as_str(), bytes.as_slice())
            .map_err(err)?;
        deltas[slot(TaskState::Pending)] += 1;
        fresh.push(task.clone());
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
    async fn replays_what_was_journaled_after_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        RedbStore::open(dir.path())
            .unwrap()
            .admit(vec![task("a")], "test")
            .await
            .unwrap();
        let seq = {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            applied_seq(&db).unwrap()
        };
        assert!(seq > 0, "every batch is numbered");
        // A crash after journaling (and answering) batches the database did not yet hold
        // durably; the first one is older than the checkpoint, so it is not applied again.
        let (mut journal, found) = Journal::open(&dir.path().join("journal.log")).unwrap();
        assert!(found.is_empty(), "a clean close empties the journal");
        let batch = |change| Batch {
            at_ms: 5,
            changes: vec![change],
        };
        let stale = Change::Admit {
            tasks: vec![task("stale")],
            origin: "test".into(),
            cursor: None,
        };
        journal.append(seq, &batch(stale)).unwrap();
        let finish = Change::Finish {
            id: "a".into(),
            result: Box::new(ResultEnvelope::failure(
                wasm_exec_task::ErrorKind::Trap,
                "x",
            )),
            reported: false,
        };
        journal.append(seq + 1, &batch(finish)).unwrap();
        let admit = Change::Admit {
            tasks: vec![task("b")],
            origin: "test".into(),
            cursor: Some("after-b".into()),
        };
        journal.append(seq + 2, &batch(admit)).unwrap();
        drop(journal);

        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap().state, TaskState::Failed);
        assert_eq!(store.get("b").unwrap().unwrap().updated_at_ms, 5);
        assert!(store.get("stale").unwrap().is_none());
        assert_eq!(store.cursor("test").unwrap().as_deref(), Some("after-b"));
        let counts = store.counts().unwrap();
        assert_eq!(
            (counts[&TaskState::Pending], counts[&TaskState::Failed]),
            (1, 1)
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("journal.log"))
                .unwrap()
                .len(),
            0,
            "replayed batches are checkpointed"
        );
        // New batches are numbered after the replayed ones.
        store.mark_reported("a", None).await.unwrap();
        drop(store);
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        assert_eq!(applied_seq(&db).unwrap(), seq + 3);
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
                store.mark_reported(&format!("t{i:03}"), None).await
            }));
        }
        for j in joins {
            j.await.unwrap().unwrap();
        }
        assert_eq!(store.counts().unwrap()[&TaskState::Running], 500);
    }
}
