//! The operator's commitments to k-of-n results, durable before a commit is sent: a small redb
//! database (`COORDINATOR_STATE_DIR/chain-commits.redb`), one row per task it committed to
//! (the result value, its `result_hash` and the salt), so that after a crash between commit
//! and reveal it reveals exactly what it committed.

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use wasm_exec_chain::B256;

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
#[derive(Debug, thiserror::Error)]
#[error("the chain commitments in {path}: {detail}")]
pub struct CommitStoreError {
    /// The database file.
    path: String,
    /// What failed.
    detail: String,
}

/// The commitments database.
#[derive(Clone)]
pub(super) struct CommitStore {
    db: Arc<Database>,
    path: String,
}

impl CommitStore {
    /// Opens (or creates) the database at `path`.
    pub(super) fn open(path: &Path) -> Result<Self, CommitStoreError> {
        let shown = path.display().to_string();
        let db = Database::create(path).map_err(|e| CommitStoreError {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            db: Arc::new(db),
            path: shown,
        })
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
    /// this returns), so that the commit may be sent.
    pub(super) async fn put(
        &self,
        id: String,
        committed: Committed,
    ) -> Result<(), CommitStoreError> {
        let store = self.clone();
        let write = move || -> Result<(), CommitStoreError> {
            let bytes = serde_json::to_vec(&committed).map_err(|e| store.error(e))?;
            let txn = store.db.begin_write().map_err(|e| store.error(e))?;
            {
                let mut table = txn.open_table(COMMITS).map_err(|e| store.error(e))?;
                table
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(|e| store.error(e))?;
            }
            txn.commit().map_err(|e| store.error(e))
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| self.error(e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commitment_survives_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain-commits.redb");
        let committed = Committed {
            ok: true,
            value: "144".into(),
            result_hash: B256::repeat_byte(1),
            salt: B256::repeat_byte(2),
        };
        {
            let store = CommitStore::open(&path).unwrap();
            assert_eq!(store.get("7".into()).await.unwrap(), None);
            store.put("7".into(), committed.clone()).await.unwrap();
        }
        let store = CommitStore::open(&path).unwrap();
        assert_eq!(store.get("7".into()).await.unwrap(), Some(committed));
        assert_eq!(store.get("8".into()).await.unwrap(), None);
    }
}
