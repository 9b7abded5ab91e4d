//! The writer thread: takes waiting mutations as one batch, journals it durably, applies it to
//! the database without waiting for the disk, answers each caller, and checkpoints. A failed
//! database write closes the database until [`super::reopen`] brings it back.

use super::super::journal::{Batch, Change, Journal};
use super::super::{CancelOutcome, StateError, now_ms};
use super::open::Opened;
use super::reopen::Retry;
use super::shared::{Fault, Shared};
use super::tables::{Applied, commit};
use redb::Database;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasm_exec_task::TaskSpec;

/// Most mutations applied in one transaction.
pub const MAX_BATCH: usize = 4096;

/// One change to apply, with who waits for its outcome.
pub(super) struct Mutation {
    pub(super) change: Change,
    pub(super) waiter: Waiter,
}

/// Who to answer once a change is durable.
pub(super) enum Waiter {
    /// Nobody waits (progress records).
    Nobody,
    /// An admission, answered with the tasks that were new.
    Admit(oneshot::Sender<Result<Vec<TaskSpec>, StateError>>),
    /// A cancel, answered with what it did.
    Cancel(oneshot::Sender<Result<CancelOutcome, StateError>>),
    /// Any other change.
    Done(oneshot::Sender<Result<(), StateError>>),
}

impl Waiter {
    fn answer(self, outcome: Result<Applied, StateError>) {
        match self {
            Self::Nobody => {}
            Self::Admit(tx) => {
                let _ = tx.send(outcome.map(|a| match a {
                    Applied::Admitted(fresh) => fresh,
                    Applied::Done | Applied::Cancel(_) => Vec::new(),
                }));
            }
            Self::Cancel(tx) => {
                let _ = tx.send(outcome.and_then(|a| match a {
                    Applied::Cancel(done) => Ok(done),
                    _ => Err(StateError("a cancel applied as another change".into())),
                }));
            }
            Self::Done(tx) => {
                let _ = tx.send(outcome.map(|_| ()));
            }
        }
    }
}

/// The writer thread's state: the database, the journal, and the last batch number.
pub(super) struct Writer {
    /// The state directory, to reopen after a failed write.
    pub(super) dir: PathBuf,
    /// The database as the store's reads see it, and the health of writes.
    pub(super) shared: Arc<Shared>,
    /// The database; `None` after a failed write, until [`reopen`](Self::reopen) succeeds.
    pub(super) db: Option<Arc<Database>>,
    pub(super) journal: Journal,
    /// The number of the last batch applied.
    pub(super) seq: u64,
    /// When the database was last made durable.
    pub(super) checkpointed: Instant,
    /// When to try reopening the database (while it is closed), or writing an empty batch (after
    /// a journal append failed).
    pub(super) retry: Option<Retry>,
}

/// How often, at most, the database is made durable and the journal emptied.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A journal this long is emptied at the next batch, whenever the last checkpoint was.
const JOURNAL_MAX_BYTES: u64 = 64 << 20;

impl Writer {
    /// The writer of a freshly opened directory, whose database the store's reads now see.
    pub(super) fn new(dir: &Path, shared: Arc<Shared>, opened: Opened) -> Self {
        let db = Arc::new(opened.db);
        shared.set_db(Some(db.clone()));
        Self {
            dir: dir.to_owned(),
            shared,
            db: Some(db),
            journal: opened.journal,
            seq: opened.seq,
            checkpointed: Instant::now(),
            retry: None,
        }
    }

    /// Takes all mutations waiting (up to [`MAX_BATCH`]) and applies them as one batch, until
    /// every sender is gone; makes the database durable when idle and at the end, and reopens it
    /// when due after a failed write.
    pub(super) fn run(mut self, mutations: &mpsc::Receiver<Mutation>) {
        loop {
            let received = match self.idle_for() {
                None => mutations
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(wait) => mutations.recv_timeout(wait),
            };
            let first = match received {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.retry.is_some() {
                        self.reopen();
                    } else {
                        self.checkpoint();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let batch = gather(first, mutations);
            if self.retry.as_ref().is_some_and(|r| r.at <= Instant::now()) {
                self.reopen();
            }
            self.apply(batch);
        }
        self.checkpoint();
    }

    /// How long to wait for a mutation before something else is due (a reopen, a checkpoint).
    fn idle_for(&self) -> Option<Duration> {
        match &self.retry {
            Some(retry) => Some(retry.at.saturating_duration_since(Instant::now())),
            None if self.journal.is_empty() => None,
            None => Some(CHECKPOINT_EVERY),
        }
    }

    /// Journals a batch (durably), applies it to the database, then answers each waiter.
    pub(super) fn apply(&mut self, batch: Vec<Mutation>) {
        let (changes, waiters): (Vec<Change>, Vec<Waiter>) =
            batch.into_iter().map(|m| (m.change, m.waiter)).unzip();
        let fail_all = |waiters: Vec<Waiter>, e: &str| {
            for waiter in waiters {
                waiter.answer(Err(StateError(e.to_owned())));
            }
        };
        let Some(db) = self.db.clone() else {
            return fail_all(waiters, &self.closed_error());
        };
        let batch = Batch {
            at_ms: now_ms(),
            changes,
        };
        let before = match self.journal(&batch) {
            Ok(before) => before,
            Err(e) => return fail_all(waiters, &e),
        };
        let durable = self.checkpointed.elapsed() >= CHECKPOINT_EVERY
            || self.journal.len() >= JOURNAL_MAX_BYTES;
        let committed = if self.shared.injected(Fault::Commit) {
            Err(StateError("injected I/O error".into()))
        } else {
            unpanicked(|| {
                // The test-only fault hook (never true outside tests).
                if self.shared.injected(Fault::Panic) {
                    panic!("injected panic");
                }
                commit(&db, self.seq + 1, &batch, durable)
            })
        };
        match committed {
            Ok((outcomes, events)) => {
                self.seq += 1;
                self.retry = None;
                self.shared.recover();
                self.shared.events.publish(events);
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    waiter.answer(outcome);
                }
                if durable {
                    self.cleared();
                }
            }
            Err(e) => {
                // Its callers are told it failed, so it must not come back on replay.
                if let Err(cut) = self.journal.truncate_to(before) {
                    tracing::warn!(error = %cut, "could not cut an unapplied batch from the state journal; it applies when the database reopens");
                }
                drop(db);
                self.close(&e.0);
                fail_all(waiters, &e.0);
            }
        }
    }

    /// Appends batch `seq + 1` to the journal; returns the journal's length before it. On failure,
    /// records it and schedules a probe (an empty batch) so that health recovers without traffic.
    fn journal(&mut self, batch: &Batch) -> Result<u64, String> {
        let before = self.journal.len();
        let appended = if self.shared.injected(Fault::Append) {
            Err(std::io::Error::other("injected I/O error"))
        } else {
            self.journal.append(self.seq + 1, batch)
        };
        appended.map(|()| before).map_err(|e| {
            let e = format!(
                "writing the state journal \"{}\": {e}",
                self.journal.path().display()
            );
            self.shared.fail(&e);
            if self.retry.is_none() {
                self.retry = Some(Retry::probe());
            }
            e
        })
    }

    /// Makes everything applied durable in the database, then empties the journal.
    fn checkpoint(&mut self) {
        if self.journal.is_empty() {
            return;
        }
        let Some(db) = self.db.clone() else {
            return;
        };
        let empty = Batch {
            at_ms: now_ms(),
            changes: Vec::new(),
        };
        match unpanicked(|| commit(&db, self.seq, &empty, true)) {
            Ok(_) => self.cleared(),
            Err(e) => {
                tracing::warn!(error = %e, "could not checkpoint the state; the journal keeps every change");
                drop(db);
                self.close(&e.0);
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
}

/// Runs a commit, turning a redb panic (its answer to some corrupt pages) into an error, so that
/// the writer closes the database and reopens it (whose integrity check then names the damage)
/// rather than dying and leaving every later write unanswered.
fn unpanicked<T>(commit: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(commit))
        .unwrap_or_else(|_| Err(StateError("redb panicked committing a batch".into())))
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

#[cfg(test)]
mod tests {
    use super::super::RedbStore;
    use super::super::tables::applied_seq;
    use super::*;
    use crate::state::{StateStore, TaskState};
    use serde_json::json;
    use wasm_exec_task::ResultEnvelope;

    fn task(id: &str) -> TaskSpec {
        TaskSpec::new(id, "fib.wasm", json!({"entry": "fib", "args": [12]}))
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
        let (mut journal, found) = Journal::open(&dir.path().join("journal.log"), seq).unwrap();
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
