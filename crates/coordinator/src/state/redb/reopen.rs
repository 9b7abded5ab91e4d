//! Recovering from a failed database write without a restart. After an I/O error (ENOSPC, say)
//! redb refuses every later write ("Previous I/O error occurred. Please close and re-open the
//! database"), so the writer closes the database and reopens the directory as at start (integrity
//! check, journal replay), with backoff, until it works: once disk space returns, writes do too.
//! Meanwhile changes are refused, reads fail, and [`Shared::failure`] says why.

use super::open::open_dir;
use super::writer::Writer;
use redb::Database;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The first wait before reopening; each failed reopen doubles it, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two reopens.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a reopen waits for reads of the closed database to end (redb locks the file).
const READS_END_WITHIN: Duration = Duration::from_secs(2);

/// A scheduled reopen of a closed database, or probe of a journal that failed an append.
pub(super) struct Retry {
    /// When to try.
    pub at: Instant,
    /// The wait after that, if it fails.
    delay: Duration,
    /// The closed database, alive until the last read of it ends (dangling for a probe).
    old: Weak<Database>,
}

impl Retry {
    /// A first probe of the journal, after a failed append.
    pub(super) fn probe() -> Self {
        Self {
            at: Instant::now() + RETRY_FIRST,
            delay: RETRY_FIRST,
            old: Weak::new(),
        }
    }

    /// The next try after this one failed: twice the wait, up to [`RETRY_MAX`].
    fn later(self) -> Self {
        Self {
            at: Instant::now() + self.delay,
            delay: (self.delay * 2).min(RETRY_MAX),
            old: self.old,
        }
    }
}

impl Writer {
    /// Closes the database after a failed write (`error`), so that it can be reopened, and
    /// schedules the reopen.
    pub(super) fn close(&mut self, error: &str) {
        self.shared.fail(error);
        self.shared.set_db(None);
        if let Some(db) = self.db.take() {
            tracing::warn!(
                error,
                "state: a database write failed; reopening the database"
            );
            self.retry = Some(Retry {
                at: Instant::now() + RETRY_FIRST,
                delay: RETRY_FIRST,
                old: Arc::downgrade(&db),
            });
        }
    }

    /// Reopens the state directory (see the module doc), or, when only the journal failed, writes
    /// an empty batch to see whether it works again; on failure, schedules the next try after
    /// twice the last wait, from 100 ms up to 30 s.
    pub(super) fn reopen(&mut self) {
        let Some(retry) = self.retry.take() else {
            return;
        };
        if self.db.is_some() {
            // Only the journal failed: an empty batch shows whether it takes writes again.
            self.apply(Vec::new());
            // Still only the journal failing: back off. (A failed commit closed the database and
            // scheduled its reopen instead.)
            if self.retry.is_some() && self.db.is_some() {
                self.retry = Some(retry.later());
            }
            return;
        }
        let deadline = Instant::now() + READS_END_WITHIN;
        while retry.old.strong_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        match open_dir(&self.dir) {
            Ok(opened) => {
                let db = Arc::new(opened.db);
                self.shared.set_db(Some(db.clone()));
                self.db = Some(db);
                self.journal = opened.journal;
                self.seq = opened.seq;
                self.checkpointed = Instant::now();
                self.shared.recover();
                tracing::info!("state: database reopened after a failed write");
            }
            Err(e) => {
                let retry_in_ms = u64::try_from(retry.delay.as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(error = %e, retry_in_ms, "state: reopening the database failed");
                self.shared.fail(&e.to_string());
                self.retry = Some(retry.later());
            }
        }
    }

    /// Why a change is refused while the database is closed.
    pub(super) fn closed_error(&self) -> String {
        let why = self
            .shared
            .failure()
            .map_or_else(String::new, |f| format!(": {}", f.error));
        format!("state writes fail; the database is being reopened{why}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::RedbStore;
    use crate::state::StateStore;
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    use wasm_exec_task::TaskSpec;

    fn task(id: &str, args: serde_json::Value) -> TaskSpec {
        TaskSpec::new(id, "fib.wasm", args)
    }

    /// Admits `id` until it works, polling every 10 ms for up to 30 s.
    async fn admit_once_writes_work(store: &RedbStore, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = store.admit(vec![task(id, json!([1]))], "test").await {
            assert!(Instant::now() < deadline, "writes still fail: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_failed_commit_closes_the_database_until_a_reopen_brings_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store
            .admit(vec![task("a", json!([1]))], "test")
            .await
            .unwrap();
        store.shared.faults.commit.store(true, Ordering::SeqCst);
        let err = store
            .admit(vec![task("b", json!([1]))], "test")
            .await
            .unwrap_err();
        assert!(err.0.contains("injected"), "{err}");
        let failure = store.last_write_error().unwrap();
        assert!(failure.error.contains("injected") && !store.healthy());
        admit_once_writes_work(&store, "c").await;
        assert!(store.healthy() && store.write_failure().is_none());
        assert!(store.get("a").unwrap().is_some(), "the journal replayed a");
        drop(store);
        let store = RedbStore::open(dir.path()).unwrap();
        assert!(
            store.get("b").unwrap().is_none(),
            "a refused change never comes back"
        );
        assert!(store.get("c").unwrap().is_some());
    }

    #[tokio::test]
    async fn a_panicking_commit_is_a_failed_write_not_a_dead_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store.shared.faults.panic.store(true, Ordering::SeqCst);
        let err = store
            .admit(vec![task("a", json!([1]))], "test")
            .await
            .unwrap_err();
        assert!(err.0.contains("panicked"), "{err}");
        admit_once_writes_work(&store, "b").await;
        assert!(store.get("b").unwrap().is_some() && store.healthy());
    }

    #[tokio::test]
    async fn a_read_that_meets_corruption_is_an_error_and_stops_the_process_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        admit_once_writes_work(&store, "a").await;
        store.shared.faults.read_panic.store(true, Ordering::SeqCst);
        let err = store.get("a").unwrap_err();
        assert!(
            err.0.contains("corrupt") && err.0.contains("coordinator state check"),
            "{err}"
        );
        let found = tokio::time::timeout(Duration::from_secs(1), store.corrupted())
            .await
            .expect("corrupted() resolves once a read found corruption");
        assert!(found.contains("injected read panic"), "{found}");
        // Later reads work, but writes count as failing for good: readiness stays down until
        // the restart checks the database.
        admit_once_writes_work(&store, "b").await;
        assert!(store.get("b").unwrap().is_some());
        let failure = store.write_failure().expect("still reported");
        assert!(failure.error.contains("corrupt") && !store.healthy());
    }

    #[tokio::test]
    async fn health_returns_without_traffic_once_the_journal_takes_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store.shared.faults.append.store(true, Ordering::SeqCst);
        let err = store
            .admit(vec![task("a", json!([1]))], "test")
            .await
            .unwrap_err();
        assert!(err.0.contains("state journal") && !store.healthy(), "{err}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !store.healthy() {
            assert!(Instant::now() < deadline, "{:?}", store.last_write_error());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            store.get("a").unwrap().is_none(),
            "the refused admission is not kept"
        );
    }

    use wasm_exec_test_peers::Tmpfs;

    #[tokio::test]
    async fn writes_work_again_without_a_restart_once_a_full_disk_has_room() {
        let Some(fs) = Tmpfs::mount("3m") else {
            return;
        };
        let store = RedbStore::open(fs.path()).unwrap();
        let space = store.disk_space().unwrap().unwrap();
        assert!(space.total_bytes <= 3 << 20 && space.is_low(), "{space:?}");
        let big = "x".repeat(16 << 10);
        let mut acked = Vec::new();
        let mut refused = None;
        for i in 0..1000 {
            let id = format!("t{i:04}");
            match store.admit(vec![task(&id, json!([big]))], "test").await {
                Ok(_) => acked.push(id),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("3 MiB fill up");
        assert!(!store.healthy(), "{refused}");
        // The journal fills first (a probe's small batch may still fit); the checkpoint that
        // follows (after a second idle) cannot write the database, and redb refuses every write
        // from then on.
        let deadline = Instant::now() + Duration::from_secs(20);
        let database_failure = loop {
            let failure = store.last_write_error();
            if let Some(error) = failure.as_ref().map(|f| &f.error)
                && !error.contains("state journal")
            {
                break error.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no database failure: {failure:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        eprintln!(
            "full after {} tasks: {refused}; then {database_failure}",
            acked.len()
        );
        fs.resize("64m");
        admit_once_writes_work(&store, "after").await;
        assert!(store.healthy());
        drop(store);
        let store = RedbStore::open(fs.path()).unwrap();
        for id in acked.iter().chain([&"after".to_owned()]) {
            assert!(store.get(id).unwrap().is_some(), "acknowledged {id} lost");
        }
    }
}
