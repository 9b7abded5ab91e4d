//! The operator's commitments to k-of-n results, durable before a commit is sent: a small redb
//! database (`COORDINATOR_STATE_DIR/chain-commits.redb`), one row per task it committed to
//! (the result value, its `result_hash` and the salt), so that after a crash between commit
//! and reveal it reveals exactly what it committed. Writes are group-committed: one writer
//! thread takes every commitment waiting as one transaction, synced once (one sync per
//! commitment held a thousand-task drain to a few hundred commits a second).

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use wasm_exec_chain::B256;

/// Most commitments written in one transaction.
const MAX_GROUP: usize = 1024;

/// on-chain task id (decimal) -> JSON-encoded [`Committed`].
const COMMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("commits");

/// What this operator committed to for one task: enough to reveal it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Committed {
    /// Whether the result is a success.
    pub(super) ok: bool,
    /// The value revealed on chain.
    pub(super) value: String,
    /// The result's `result_hash`.
    pub(super) result_hash: B256,
    /// The commitment's salt (random, never reused).
    pub(super) salt: B256,
}

/// Why the commitments cannot be read or written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the chain commitments in {path}: {detail}")]
pub struct CommitStoreError {
    /// The database file.
    path: String,
    /// What failed.
    detail: String,
}

/// One commitment waiting to be written, and who waits for it to be durable.
struct Put {
    id: String,
    committed: Committed,
    done: tokio::sync::oneshot::Sender<Result<(), CommitStoreError>>,
}

/// The commitments database.
#[derive(Clone)]
pub(super) struct CommitStore {
    db: Arc<Database>,
    path: String,
    /// To the writer thread, which ends when the last clone is dropped.
    writes: tokio::sync::mpsc::UnboundedSender<Put>,
}

impl CommitStore {
    /// Opens (or creates) the database at `path`.
    pub(super) fn open(path: &Path) -> Result<Self, CommitStoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| CommitStoreError {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let (writes, waiting) = tokio::sync::mpsc::unbounded_channel();
        let store = Self {
            db: Arc::new(db),
            path: shown,
            writes,
        };
        let (db, path) = (store.db.clone(), store.path.clone());
        std::thread::Builder::new()
            .name("chain-commits".into())
            .spawn(move || write_groups(&db, &path, waiting))
            .map_err(|e| store.error(e))?;
        Ok(store)
    }

    fn error(&self, e: impl ToString) -> CommitStoreError {
        CommitStoreError {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    /// What was committed for task `id`, if anything.
    pub(super) async fn get(&self, id: String) -> Result<Option<Committed>, CommitStoreError> {
        let store = self.clone();
        let read = move || -> Result<Option<Committed>, CommitStoreError> {
            let txn = store.db.begin_read().map_err(|e| store.error(e))?;
            let table = match txn.open_table(COMMITS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(store.error(e)),
            };
            let Some(row) = table.get(id.as_str()).map_err(|e| store.error(e))? else {
                return Ok(None);
            };
            serde_json::from_slice(row.value())
                .map(Some)
                .map_err(|e| store.error(e))
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| self.error(e))?
    }

    /// Stores what is committed for task `id`, durably (the transaction is synced to disk before
    /// this returns), so that the commit may be sent; written with every other commitment
    /// waiting.
    pub(super) async fn put(
        &self,
        id: String,
        committed: Committed,
    ) -> Result<(), CommitStoreError> {
        let (done, written) = tokio::sync::oneshot::channel();
        let stopped = || self.error("the writer thread has stopped");
        self.writes
            .send(Put {
                id,
                committed,
                done,
            })
            .map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

/// The writer thread: each group of waiting commitments (at most [`MAX_GROUP`]) in one
/// transaction, every waiter answered once it is synced; ends when every sender is gone.
fn write_groups(db: &Database, path: &str, mut waiting: tokio::sync::mpsc::UnboundedReceiver<Put>) {
    while let Some(first) = waiting.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match waiting.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let outcome = write_group(db, &group).map_err(|detail| CommitStoreError {
            path: path.to_string(),
            detail,
        });
        for put in group {
            let _ = put.done.send(outcome.clone());
        }
    }
}

/// Writes `group` in one synced transaction.
fn write_group(db: &Database, group: &[Put]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(COMMITS).map_err(|e| e.to_string())?;
        for put in group {
            let bytes = serde_json::to_vec(&put.committed).map_err(|e| e.to_string())?;
            table
                .insert(put.id.as_str(), bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn committed(byte: u8) -> Committed {
        Committed {
            ok: true,
            value: "144".into(),
            result_hash: B256::repeat_byte(byte),
            salt: B256::repeat_byte(byte ^ 0xFF),
        }
    }

    /// Opens `path` again once the writer thread of the dropped store has let go of it.
    fn reopen(path: &Path) -> CommitStore {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match CommitStore::open(path) {
                Ok(store) => return store,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("reopening: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_commitment_survives_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain-commits.redb");
        {
            let store = CommitStore::open(&path).unwrap();
            assert_eq!(store.get("7".into()).await.unwrap(), None);
            store.put("7".into(), committed(1)).await.unwrap();
        }
        let store = reopen(&path);
        assert_eq!(store.get("7".into()).await.unwrap(), Some(committed(1)));
        assert_eq!(store.get("8".into()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn commitments_put_at_once_are_each_durable_when_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain-commits.redb");
        {
            let store = CommitStore::open(&path).unwrap();
            let puts = (0..200u8).map(|i| store.put(i.to_string(), committed(i)));
            for outcome in futures_util::future::join_all(puts).await {
                outcome.unwrap();
            }
        }
        let store = reopen(&path);
        for i in 0..200u8 {
            assert_eq!(
                store.get(i.to_string()).await.unwrap(),
                Some(committed(i)),
                "task {i}"
            );
        }
    }
}
