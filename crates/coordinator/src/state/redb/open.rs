//! Opening a state directory, at start and when the writer reopens it after a write failure:
//! refuses a missing or empty database beside a journal, checks the database's integrity (catching
//! a redb panic on a corrupt file), and replays the journal.

use super::super::error::OpenError;
use super::super::journal::frame::{self, Piece};
use super::super::journal::{Batch, JOURNAL_FILE, Journal};
use super::super::{StateError, TaskState, now_ms};
use super::tables::{COUNTS, Deltas, TASKS, applied_seq, apply_deltas, commit, decode, err, slot};
use redb::{Database, DatabaseError, ReadableTable, ReadableTableMetadata, StorageError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// The database's file name in the state directory.
pub const DATABASE_FILE: &str = "state.redb";

/// An opened state directory: a whole database, a journal ready for appending, the last batch.
pub(super) struct Opened {
    /// The database, with every journaled batch applied and durable.
    pub db: Database,
    /// The journal, empty.
    pub journal: Journal,
    /// The number of the last batch applied.
    pub seq: u64,
}

/// Opens `dir` (creating it when new), as the module doc says.
pub(super) fn open_dir(dir: &Path) -> Result<Opened, OpenError> {
    std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
        what: "creating COORDINATOR_STATE_DIR",
        path: dir.to_owned(),
        source,
    })?;
    let db_path = dir.join(DATABASE_FILE);
    let journal_path = dir.join(JOURNAL_FILE);
    refuse_lost_database(&db_path, &journal_path)?;
    let started = std::time::Instant::now();
    let db = open_database(&db_path, &journal_path)?;
    let checked_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        path = %db_path.display(),
        checked_ms,
        "state database opened; integrity checked"
    );
    let seq = guarded(&db_path, &journal_path, "reading", || {
        count_once(&db)?;
        applied_seq(&db)
    })?;
    let (mut journal, batches) = Journal::open(&journal_path, seq)?;
    let seq = guarded(&db_path, &journal_path, "applying the journal to", || {
        replay(&db, &mut journal, seq, batches)
    })?;
    Ok(Opened { db, journal, seq })
}

/// Runs redb reads and writes on the database at `db_path` (`doing` it), turning a panic (redb's
/// answer to some corrupt pages) into [`OpenError::DatabaseCorrupt`] and an error into
/// [`OpenError::Database`].
fn guarded<T>(
    db_path: &Path,
    journal_path: &Path,
    doing: &str,
    f: impl FnOnce() -> Result<T, StateError>,
) -> Result<T, OpenError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(OpenError::Database {
            path: db_path.to_owned(),
            detail: format!("{doing} it: {}", e.0),
        }),
        Err(panic) => {
            let message = super::shared::panic_message(panic.as_ref());
            Err(OpenError::DatabaseCorrupt {
                path: db_path.to_owned(),
                detail: format!("redb panicked {doing} it: {message}"),
                hint: rebuild_hint(journal_path),
            })
        }
    }
}

/// A missing or empty database next to a journal: the directory held state, and opening would
/// silently start without it, unless the journal holds every batch since the first.
fn refuse_lost_database(db_path: &Path, journal_path: &Path) -> Result<(), OpenError> {
    let found = match std::fs::metadata(db_path) {
        Ok(meta) if meta.len() > 0 => return Ok(()),
        Ok(_) => "empty (0 bytes)",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "missing",
        Err(source) => {
            return Err(OpenError::Io {
                what: "reading the state database's metadata",
                path: db_path.to_owned(),
                source,
            });
        }
    };
    if !journal_path.exists() {
        return Ok(());
    }
    if journal_holds_everything(journal_path) {
        tracing::warn!(
            path = %db_path.display(),
            found,
            "state database lost; rebuilding it from the journal, which holds every batch since the first"
        );
        return Ok(());
    }
    Err(OpenError::DatabaseMissing {
        path: db_path.to_owned(),
        found,
        journal: journal_path.to_owned(),
    })
}

/// Whether the journal is undamaged and holds batches 1, 2, 3... without a gap: replaying it
/// rebuilds the database.
fn journal_holds_everything(journal_path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(journal_path) else {
        return false;
    };
    let pieces = frame::walk(&bytes);
    !pieces.is_empty()
        && pieces
            .iter()
            .zip(1..)
            .all(|(p, n)| matches!(p, Piece::Record(f) if f.seq == n))
}

fn rebuild_hint(journal_path: &Path) -> String {
    if journal_holds_everything(journal_path) {
        "; or move it away and start again: the journal holds every batch since the first and \
         rebuilds it"
            .into()
    } else {
        String::new()
    }
}

/// The most memory redb's page cache (reads and unsynced writes together) may hold. redb's
/// default, 1 GiB, let the coordinator's resident memory grow with the database: 430 MiB after
/// 222,000 tasks (docs/PERFORMANCE.md, "Coordinator"). The pages a busy coordinator touches are
/// the recent tasks' leaves and the tree above them; older tasks are read from the kernel's page
/// cache.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the database with redb's integrity check, which verifies the checksum of
/// every page of its trees: a file damaged outside redb is refused here rather than trusted until
/// a read meets the damage (where redb may panic). Its page cache holds at most [`CACHE_BYTES`].
fn open_database(path: &Path, journal_path: &Path) -> Result<Database, OpenError> {
    let opened = catch_unwind(|| {
        Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(path)
    });
    let corrupt = |detail: String| OpenError::DatabaseCorrupt {
        path: path.to_owned(),
        detail,
        hint: rebuild_hint(journal_path),
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(DatabaseError::Storage(StorageError::Corrupted(detail)))) => Err(corrupt(detail)),
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(corrupt(format!("not a redb database: {e}")))
        }
        Ok(Err(e)) => Err(OpenError::Database {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
        Err(_) => Err(corrupt("redb panicked reading it".into())),
    }
}

/// A database written before counts were kept: count once now.
fn count_once(db: &Database) -> Result<(), StateError> {
    let txn = db.begin_write().map_err(err)?;
    {
        let tasks = txn.open_table(TASKS).map_err(err)?;
        let mut counts = txn.open_table(COUNTS).map_err(err)?;
        if counts.is_empty().map_err(err)? && !tasks.is_empty().map_err(err)? {
            let mut deltas: Deltas = [0; TaskState::ALL.len()];
            for entry in tasks.iter().map_err(err)? {
                let (_, value) = entry.map_err(err)?;
                deltas[slot(decode(value.value())?.state)] += 1;
            }
            apply_deltas(&mut counts, &deltas)?;
        }
    }
    txn.commit().map_err(err)
}

/// Applies the journaled batches the database does not have (a crash came before they were made
/// durable there), makes them durable, and empties the journal; returns the last batch number.
fn replay(
    db: &Database,
    journal: &mut Journal,
    mut seq: u64,
    batches: Vec<(u64, Batch)>,
) -> Result<u64, StateError> {
    let mut replayed = 0;
    for (batch_seq, batch) in batches {
        if batch_seq <= seq {
            continue;
        }
        for outcome in commit(db, batch_seq, &batch, false)?.0 {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "a journaled change did not apply again");
            }
        }
        seq = batch_seq;
        replayed += 1;
    }
    if replayed > 0 {
        tracing::info!(
            batches = replayed,
            "state: applied changes journaled before a crash"
        );
    }
    if !journal.is_empty() {
        let empty = Batch {
            at_ms: now_ms(),
            changes: Vec::new(),
        };
        commit(db, seq, &empty, true)?;
        journal.clear().map_err(err)?;
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::super::RedbStore;
    use super::*;
    use crate::state::StateStore;
    use serde_json::json;
    use std::time::Instant;
    use wasm_exec_task::TaskSpec;

    fn task(id: &str) -> TaskSpec {
        TaskSpec::new(id, "fib.wasm", json!({"entry": "fib", "args": [12]}))
    }

    async fn store_with(dir: &Path, n: usize) {
        let store = RedbStore::open(dir).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let tasks = chunk.iter().map(|i| task(&format!("t{i:06}"))).collect();
            store.admit(tasks, "test").await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_empty_or_missing_database_beside_a_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        store_with(dir.path(), 3).await;
        let db = dir.path().join(DATABASE_FILE);
        std::fs::write(&db, b"").unwrap();
        let err = RedbStore::open(dir.path()).err().unwrap();
        assert_eq!(err.label(), "database_missing", "{err}");
        let message = err.to_string();
        for words in [
            "empty (0 bytes)",
            "journal.log",
            "Restore state.redb",
            "move the whole",
        ] {
            assert!(message.contains(words), "{words:?} missing from: {message}");
        }
        std::fs::remove_file(&db).unwrap();
        let err = RedbStore::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("is missing"), "{err}");
        assert!(!db.exists(), "a refusal creates no database");
    }

    #[tokio::test]
    async fn a_lost_database_is_rebuilt_when_the_journal_holds_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path()).unwrap());
        std::fs::remove_file(dir.path().join(DATABASE_FILE)).unwrap();
        let (mut journal, _) = Journal::open(&dir.path().join(JOURNAL_FILE), 0).unwrap();
        for (seq, id) in [(1, "a"), (2, "b")] {
            let changes = vec![crate::state::journal::Change::Admit {
                tasks: vec![task(id)],
                origin: "test".into(),
                cursor: None,
            }];
            journal.append(seq, &Batch { at_ms: 1, changes }).unwrap();
        }
        drop(journal);
        let store = RedbStore::open(dir.path()).unwrap();
        assert!(store.get("a").unwrap().is_some() && store.get("b").unwrap().is_some());
    }

    #[test]
    fn a_fresh_directory_opens_with_no_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("new")).unwrap();
        assert!(store.resumable().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_database_with_overwritten_pages_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        store_with(dir.path(), 2000).await;
        let path = dir.path().join(DATABASE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // Four pages that hold tasks (found by a task's id), overwritten with noise.
        let mut noise = 0x2545_F491_4F6C_DD1Du64;
        for id in ["t000100", "t000700", "t001300", "t001900"] {
            let at = bytes
                .windows(id.len())
                .position(|w| w == id.as_bytes())
                .unwrap();
            let page = at / 4096 * 4096;
            for b in &mut bytes[page..page + 4096] {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                *b = noise as u8;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = RedbStore::open(dir.path()).err().unwrap();
        assert_eq!(err.label(), "database_corrupt", "{err}");
        let message = err.to_string();
        assert!(
            message.contains("state.redb") && message.contains("Restore"),
            "{message}"
        );
    }

    #[tokio::test]
    #[ignore = "a measurement (a few seconds); run: cargo test --profile ci --target \
                x86_64-unknown-linux-musl -p coordinator --lib integrity_check_cost -- \
                --ignored --nocapture"]
    async fn integrity_check_cost_on_100k_tasks() {
        let dir = tempfile::tempdir().unwrap();
        store_with(dir.path(), 100_000).await;
        let path = dir.path().join(DATABASE_FILE);
        let size = std::fs::metadata(&path).unwrap().len();
        let plain = Instant::now();
        drop(Database::create(&path).unwrap());
        let plain = plain.elapsed();
        let checked = Instant::now();
        drop(open_database(&path, &dir.path().join(JOURNAL_FILE)).unwrap());
        let checked = checked.elapsed();
        let whole = Instant::now();
        drop(RedbStore::open(dir.path()).unwrap());
        let whole = whole.elapsed();
        eprintln!(
            "100k tasks, {size} bytes: plain open {plain:?}, open with integrity check \
             {checked:?}, whole store open {whole:?}"
        );
    }
}
