//! The local mirror (`COORDINATOR_IPFS_MIRROR`): a directory of modules found by CID or by name.
//!
//! Files are indexed by the CIDs their bytes have under `ipfs add` defaults (CIDv0 and CIDv1,
//! see [`file_cids`]), so a task names a mirrored module exactly as it would on IPFS. A name
//! without a path (`fib.wasm`, the seed's old style) is looked up as a file. Bytes are verified
//! against the CID again when served, so a file changed after indexing is never run by mistake.

use super::{ModuleError, ModuleStore, is_plain_name};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use wasm_exec_ipfs::Cid;
use wasm_exec_ipfs::{file_cids, parse_cid, verify_file};

/// A directory of modules indexed by CID.
#[derive(Debug)]
pub struct MirrorStore {
    dir: PathBuf,
    max_bytes: u64,
    index: RwLock<HashMap<Cid, PathBuf>>,
}

impl MirrorStore {
    /// Indexes `dir` (its regular files up to `max_bytes`; not recursive).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, ModuleError> {
        let store = Self {
            dir: dir.to_owned(),
            max_bytes,
            index: RwLock::default(),
        };
        store.reindex()?;
        Ok(store)
    }

    /// Rebuilds the index from the directory's current files.
    fn reindex(&self) -> Result<(), ModuleError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            ModuleError::Io(format!(
                "listing the mirror \"{}\": {e}",
                self.dir.display()
            ))
        })?;
        let mut index = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || meta.len() > self.max_bytes {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let cids = file_cids(&bytes);
            index.insert(cids.v0, path.clone());
            index.insert(cids.v1, path);
        }
        tracing::debug!(dir = %self.dir.display(), cids = index.len(), "mirror indexed");
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        Ok(())
    }

    fn lookup(&self, cid: &Cid) -> Option<PathBuf> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(cid)
            .cloned()
    }

    fn read_capped(&self, path: &Path) -> Result<Vec<u8>, ModuleError> {
        let len = std::fs::metadata(path)
            .map_err(|e| ModuleError::Io(format!("reading \"{}\": {e}", path.display())))?
            .len();
        if len > self.max_bytes {
            return Err(ModuleError::TooLarge {
                bytes: len,
                limit: self.max_bytes,
            });
        }
        std::fs::read(path)
            .map_err(|e| ModuleError::Io(format!("reading \"{}\": {e}", path.display())))
    }

    fn fetch_sync(&self, name: &str) -> Result<Vec<u8>, ModuleError> {
        let Ok(cid) = parse_cid(name) else {
            return self.fetch_by_name(name);
        };
        let path = match self.lookup(&cid) {
            Some(path) => path,
            None => {
                // Files may have been added since the last index.
                self.reindex()?;
                self.lookup(&cid).ok_or_else(|| ModuleError::NotFound {
                    cid: name.to_owned(),
                    place: format!("the mirror \"{}\"", self.dir.display()),
                })?
            }
        };
        let bytes = self.read_capped(&path)?;
        verify_file(&cid, &bytes).map_err(|e| ModuleError::Integrity(e.to_string()))?;
        Ok(bytes)
    }

    fn fetch_by_name(&self, name: &str) -> Result<Vec<u8>, ModuleError> {
        if !is_plain_name(name) {
            return Err(ModuleError::BadCid(format!(
                "\"{name}\" is neither a CID nor a plain file name in the mirror; give a CIDv0 (Qm...) or CIDv1 (bafy.../bafk...), or a name like fib.wasm"
            )));
        }
        let path = self.dir.join(name);
        if !path.is_file() {
            return Err(ModuleError::NotFound {
                cid: name.to_owned(),
                place: format!("the mirror \"{}\"", self.dir.display()),
            });
        }
        self.read_capped(&path)
    }
}

#[async_trait]
impl ModuleStore for MirrorStore {
    async fn fetch(&self, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
        // Small local reads; hashing a module is fast next to compiling it.
        self.fetch_sync(cid).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_exec_ipfs::file_cids;

    fn mirror_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, MirrorStore) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let store = MirrorStore::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn finds_modules_by_cidv0_cidv1_and_name() {
        let bytes = b"\0asm\x01\0\0\0";
        let (_dir, store) = mirror_with(&[("m.wasm", bytes)]);
        let cids = file_cids(bytes);
        for name in [
            cids.v0.to_string(),
            cids.v1.to_string(),
            "m.wasm".to_string(),
        ] {
            assert_eq!(
                store.fetch(&name).await.unwrap().as_slice(),
                bytes,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_file_changed_after_indexing_is_an_integrity_error() {
        let (dir, store) = mirror_with(&[("m.wasm", b"original")]);
        let cid = file_cids(b"original").v1.to_string();
        std::fs::write(dir.path().join("m.wasm"), b"tampered").unwrap();
        let err = store.fetch(&cid).await.unwrap_err();
        assert_eq!(err.kind(), wasm_exec_task::ErrorKind::Integrity, "{err}");
    }

    #[tokio::test]
    async fn files_added_later_are_found_and_unknown_cids_are_unavailable() {
        let (dir, store) = mirror_with(&[]);
        std::fs::write(dir.path().join("late.wasm"), b"late").unwrap();
        assert!(
            store
                .fetch(&file_cids(b"late").v0.to_string())
                .await
                .is_ok()
        );
        let err = store
            .fetch(&file_cids(b"nobody").v1.to_string())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), wasm_exec_task::ErrorKind::ModuleUnavailable);
    }

    #[tokio::test]
    async fn paths_and_oversize_files_are_refused() {
        let big = vec![0u8; (1 << 20) + 1];
        let (_dir, store) = mirror_with(&[("big.wasm", &big)]);
        let err = store.fetch("../etc/passwd").await.unwrap_err();
        assert_eq!(err.kind(), wasm_exec_task::ErrorKind::BadInput);
        let err = store.fetch("big.wasm").await.unwrap_err();
        assert_eq!(err.kind(), wasm_exec_task::ErrorKind::ModuleTooLarge);
    }
}
