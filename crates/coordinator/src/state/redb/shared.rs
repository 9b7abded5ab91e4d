//! What the store's handle and its writer thread share: the database (taken away while the
//! writer reopens it after a write failure) and whether writes currently fail.

use super::super::{StateError, TaskEvent, WriteFailure, now_ms};
use redb::Database;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The database handle and the health of writes.
#[derive(Default)]
pub(super) struct Shared {
    /// The open database; `None` while the writer reopens it.
    db: RwLock<Option<Arc<Database>>>,
    /// Since when, and why, writes fail; `None` while they work.
    failure: Mutex<Option<WriteFailure>>,
    /// Set once a read found the database corrupt (redb panicked); never cleared.
    corrupt: Mutex<Option<WriteFailure>>,
    /// Cancelled when `corrupt` is set, so that the process can stop.
    corrupted: CancellationToken,
    /// Where committed changes are broadcast.
    pub(super) events: Events,
    /// Test-only fault hooks: the next journal append, or database commit, fails.
    #[cfg(test)]
    pub(super) faults: Faults,
}

/// Most events a subscriber may fall behind by before it is told it missed some.
pub const EVENTS_CAPACITY: usize = 16_384;

/// The broadcast of committed changes ([`TaskEvent`]s).
pub(super) struct Events(broadcast::Sender<TaskEvent>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(EVENTS_CAPACITY).0)
    }
}

impl Events {
    /// Sends each event to every subscriber (none listening is fine).
    pub(super) fn publish(&self, events: Vec<TaskEvent>) {
        if self.0.receiver_count() == 0 {
            return;
        }
        for event in events {
            let _ = self.0.send(event);
        }
    }

    /// A receiver of every event from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.0.subscribe()
    }
}

/// A write the test-only fault hooks can make fail.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    /// The next journal append.
    Append,
    /// The next database commit.
    Commit,
    /// The next database commit panics.
    Panic,
    /// The next read panics, as redb does on some corrupt pages.
    ReadPanic,
}

/// Test-only fault hooks, each set by a test and taken by the next write of its kind.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Faults {
    /// Fails the next journal append.
    pub append: std::sync::atomic::AtomicBool,
    /// Fails the next database commit.
    pub commit: std::sync::atomic::AtomicBool,
    /// Makes the next database commit panic.
    pub panic: std::sync::atomic::AtomicBool,
    /// Makes the next read panic.
    pub read_panic: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The database, for one read (hold it no longer: a reopen waits for it to be let go).
    pub(super) fn db(&self) -> Result<Arc<Database>, StateError> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        db.clone().ok_or_else(|| {
            let why = self
                .failure()
                .map_or_else(String::new, |f| format!(": {}", f.error));
            StateError(format!(
                "the state database is being reopened after a write failure{why}"
            ))
        })
    }

    /// Runs one read on the database. A redb panic (its answer to some corrupt pages) becomes an
    /// error naming the recovery, and a lasting mark that the database is corrupt: writes count
    /// as failing from then on (`/readyz` says so) and [`Shared::corrupted`] resolves, so that
    /// the process stops and its restart checks the database.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let db = self.db()?;
        let read = catch_unwind(AssertUnwindSafe(|| {
            assert!(!self.injected(Fault::ReadPanic), "injected read panic");
            f(&db)
        }));
        read.unwrap_or_else(|panic| {
            let error = format!(
                "the state database is corrupt (redb panicked reading it: {}); stop the \
                 coordinator and run `coordinator state check`",
                panic_message(panic.as_ref())
            );
            tracing::error!(%error, "state: corrupt database");
            let mut corrupt = self.corrupt.lock().unwrap_or_else(PoisonError::into_inner);
            corrupt.get_or_insert_with(|| WriteFailure {
                since_ms: now_ms(),
                error: error.clone(),
            });
            self.corrupted.cancel();
            Err(StateError(error))
        })
    }

    /// Resolves with what was found once a read has found the database corrupt.
    pub(super) async fn corrupted(&self) -> String {
        self.corrupted.cancelled().await;
        self.corrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|f| f.error.clone())
            .unwrap_or_default()
    }

    /// Puts a (re)opened database in place, or takes it away (`None`).
    pub(super) fn set_db(&self, db: Option<Arc<Database>>) {
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = db;
    }

    /// Records that a write failed (keeping when the failures began).
    pub(super) fn fail(&self, error: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        let since_ms = failure.as_ref().map_or_else(now_ms, |f| f.since_ms);
        *failure = Some(WriteFailure {
            since_ms,
            error: error.to_owned(),
        });
    }

    /// Records that a write worked; logs the recovery if writes had failed.
    pub(super) fn recover(&self) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = failure.take() {
            let failed_ms = now_ms().saturating_sub(f.since_ms);
            tracing::info!(failed_ms, "state: writes work again");
        }
    }

    /// Whether a test made the next write of this kind fail (never outside tests).
    pub(super) fn injected(&self, fault: Fault) -> bool {
        #[cfg(test)]
        {
            let hook = match fault {
                Fault::Append => &self.faults.append,
                Fault::Commit => &self.faults.commit,
                Fault::Panic => &self.faults.panic,
                Fault::ReadPanic => &self.faults.read_panic,
            };
            hook.swap(false, std::sync::atomic::Ordering::SeqCst)
        }
        #[cfg(not(test))]
        {
            let _ = fault;
            false
        }
    }

    /// Since when, and why, writes fail; a corrupt database fails them for good.
    pub(super) fn failure(&self) -> Option<WriteFailure> {
        let corrupt = self.corrupt.lock().unwrap_or_else(PoisonError::into_inner);
        corrupt.clone().or_else(|| {
            self.failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }
}

/// The text of a panic's payload (a `&str` or a `String`; empty otherwise).
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
