//! Modules uploaded through the API (`POST /v1/modules`), kept durably in the state directory
//! and served by CID before any other store is asked ([`super::layered::Layered`]).
//!
//! An upload is checked by the runtime's [`Inspector`] (WAT text becomes binary, then shape and
//! validation, as the engine would), its CIDs computed as `ipfs add` gives them (the mirror's
//! code: [`file_cids`]), and written atomically: the bytes under their CIDv1, then one metadata
//! file per CID (v1 and v0). The metadata is written last, so a crash mid-upload leaves at most
//! bytes nobody names, and the same upload again completes it. Served bytes are verified against
//! the CID asked for, like every other store's.
//!
//! Layout of the directory: `blobs/<cidv1>.wasm`, `meta/<cid>.json` (for both CIDs).

use super::{ModuleError, ModuleStore};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasm_exec_ipfs::{file_cids, parse_cid, verify_file};
use wasm_exec_runtime::{Inspector, RuntimeError};

/// What is kept, and answered, for one uploaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModuleInfo {
    /// `ipfs add --cid-version 1` (raw leaves): the CID tasks should name (`bafkrei...`).
    pub cid_v1: String,
    /// `ipfs add` (CIDv0, `Qm...`).
    pub cid_v0: String,
    /// Size of the binary module, in bytes.
    pub size_bytes: u64,
    /// Hex SHA-256 of the binary module (the result document's `module_sha256`).
    pub sha256: String,
    /// Its exported functions with their signatures.
    pub exports: Vec<Export>,
    /// When it was first uploaded, in Unix milliseconds.
    pub uploaded_at_ms: u64,
}

/// One exported function of an uploaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Export {
    /// Export name (a task's `entry`).
    pub name: String,
    /// Parameter types.
    pub params: Vec<String>,
    /// Result types.
    pub results: Vec<String>,
    /// `name(params) -> results`.
    pub signature: String,
}

/// Why an upload was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body is not a module the runtime would run (kind `bad_module`).
    #[error("{0}")]
    BadModule(String),
    /// The body is over the cap.
    #[error("the module is {bytes} bytes, over the {limit}-byte limit (COORDINATOR_MAX_MODULE_MB)")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The cap.
        limit: u64,
    },
    /// Writing or reading the directory failed.
    #[error("{0}")]
    Io(String),
}

/// The uploaded modules' directory.
pub struct UploadStore {
    dir: PathBuf,
    max_bytes: u64,
    inspector: Inspector,
}

impl std::fmt::Debug for UploadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStore")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl UploadStore {
    /// Opens (or creates) the directory `dir`; uploads are capped at `max_bytes` and checked by
    /// `inspector`.
    pub fn open(dir: &Path, max_bytes: u64, inspector: Inspector) -> Result<Self, UploadError> {
        for sub in ["blobs", "meta"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                UploadError::Io(format!("creating \"{}\": {e}", dir.join(sub).display()))
            })?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            inspector,
        })
    }

    /// The largest upload, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Checks and keeps `bytes` (binary Wasm or WAT text); returns its metadata and whether it
    /// was new. Blocks (hashing, fsync): call it off the async workers.
    pub fn put(&self, bytes: &[u8], now_ms: u64) -> Result<(ModuleInfo, bool), UploadError> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(UploadError::TooLarge {
                bytes: bytes.len() as u64,
                limit: self.max_bytes,
            });
        }
        let inspected = self.inspector.inspect(bytes).map_err(|e| match e {
            RuntimeError::BadModule(m) => UploadError::BadModule(m),
            other => UploadError::BadModule(other.to_string()),
        })?;
        let cids = file_cids(&inspected.wasm);
        let (v1, v0) = (cids.v1.to_string(), cids.v0.to_string());
        if let Some(known) = self.info(&v1)?
            && self.meta_path(&v0).exists()
            && self.blob_path(&v1).exists()
        {
            return Ok((known, false));
        }
        let info = ModuleInfo {
            cid_v1: v1.clone(),
            cid_v0: v0.clone(),
            size_bytes: inspected.wasm.len() as u64,
            sha256: wasm_exec_runtime::module_sha256_hex(&inspected.wasm),
            exports: inspected
                .exports
                .into_iter()
                .map(|e| Export {
                    name: e.name,
                    params: e.params,
                    results: e.results,
                    signature: e.signature,
                })
                .collect(),
            uploaded_at_ms: now_ms,
        };
        let meta = serde_json::to_vec(&info).map_err(|e| UploadError::Io(e.to_string()))?;
        self.write_atomically(&self.blob_path(&v1), &inspected.wasm)?;
        self.write_atomically(&self.meta_path(&v1), &meta)?;
        self.write_atomically(&self.meta_path(&v0), &meta)?;
        Ok((info, true))
    }

    /// The metadata of the module named by `cid` (either of its CIDs), if it was uploaded.
    pub fn info(&self, cid: &str) -> Result<Option<ModuleInfo>, UploadError> {
        read_info(&self.dir, cid)
    }

    fn blob_path(&self, cid_v1: &str) -> PathBuf {
        blob_path(&self.dir, cid_v1)
    }

    fn meta_path(&self, cid: &str) -> PathBuf {
        meta_path(&self.dir, cid)
    }

    /// Writes `bytes` to `path` by a synced temporary file renamed over it, then syncs the
    /// directory, so the file is whole or absent after a crash.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), UploadError> {
        let io =
            |e: std::io::Error| UploadError::Io(format!("writing \"{}\": {e}", path.display()));
        let parent = path.parent().unwrap_or(&self.dir);
        let mut file = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        file.persist(path).map_err(|e| io(e.error))?;
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

fn blob_path(dir: &Path, cid_v1: &str) -> PathBuf {
    dir.join("blobs").join(format!("{cid_v1}.wasm"))
}

fn meta_path(dir: &Path, cid: &str) -> PathBuf {
    dir.join("meta").join(format!("{cid}.json"))
}

/// The metadata kept in `dir` for `cid`, if there is any.
fn read_info(dir: &Path, cid: &str) -> Result<Option<ModuleInfo>, UploadError> {
    let Ok(parsed) = parse_cid(cid) else {
        return Ok(None);
    };
    let path = meta_path(dir, &parsed.to_string());
    let io =
        |e: &dyn std::fmt::Display| UploadError::Io(format!("reading \"{}\": {e}", path.display()));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| io(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&e)),
    }
}

/// The verified bytes of the module named `cid` in `dir`, or `NotFound`.
fn read_verified(dir: &Path, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
    let not_found = || ModuleError::NotFound {
        cid: cid.to_owned(),
        place: "the uploaded modules".into(),
    };
    let parsed = parse_cid(cid).map_err(|_| not_found())?;
    let info = read_info(dir, cid)
        .map_err(|e| ModuleError::Io(e.to_string()))?
        .ok_or_else(not_found)?;
    let path = blob_path(dir, &info.cid_v1);
    let bytes = std::fs::read(&path)
        .map_err(|e| ModuleError::from_io(&format!("reading \"{}\"", path.display()), &e))?;
    verify_file(&parsed, &bytes).map_err(|e| ModuleError::Integrity(e.to_string()))?;
    Ok(Arc::new(bytes))
}

#[async_trait]
impl ModuleStore for UploadStore {
    async fn fetch(&self, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
        // File reads and hashing block: on tokio's blocking pool, as the mirror's.
        let (dir, cid) = (self.dir.clone(), cid.to_owned());
        tokio::task::spawn_blocking(move || read_verified(&dir, &cid))
            .await
            .map_err(|e| ModuleError::Io(format!("reading an uploaded module: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_exec_runtime::{EngineOptions, ModuleLimits};

    fn store(dir: &Path) -> UploadStore {
        let inspector = Inspector::new(&EngineOptions::default(), ModuleLimits::default()).unwrap();
        UploadStore::open(dir, 1 << 20, inspector).unwrap()
    }

    #[tokio::test]
    async fn an_upload_is_kept_under_both_cids_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let fib = std::fs::read(wasm_exec_test_peers::repo("host/wasm/fib.wasm")).unwrap();
        let (info, fresh) = store(dir.path()).put(&fib, 7).unwrap();
        assert!(fresh);
        let cids = file_cids(&fib);
        assert_eq!(info.cid_v1, cids.v1.to_string());
        assert_eq!(info.cid_v0, cids.v0.to_string());
        assert!(
            info.exports
                .iter()
                .any(|e| e.signature == "fib(i64) -> i64"),
            "{info:?}"
        );
        let (again, fresh) = store(dir.path()).put(&fib, 9).unwrap();
        assert!(!fresh, "a second upload is the same module");
        assert_eq!(again.uploaded_at_ms, 7);
        let reopened = store(dir.path());
        for cid in [&info.cid_v1, &info.cid_v0] {
            assert_eq!(*reopened.fetch(cid).await.unwrap(), fib);
        }
        let e = reopened.fetch("fib.wasm").await.unwrap_err();
        assert!(matches!(e, ModuleError::NotFound { .. }), "{e}");
    }

    #[tokio::test]
    async fn changed_bytes_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (info, _) = store
            .put(
                br#"(module (func (export "one") (result i32) i32.const 1))"#,
                1,
            )
            .unwrap();
        let blob = dir
            .path()
            .join("blobs")
            .join(format!("{}.wasm", info.cid_v1));
        let mut bytes = std::fs::read(&blob).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&blob, bytes).unwrap();
        let e = store.fetch(&info.cid_v1).await.unwrap_err();
        assert_eq!(e.kind(), wasm_exec_task::ErrorKind::Integrity, "{e}");
    }

    #[test]
    fn uploads_over_the_cap_or_not_wasm_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let e = store.put(&vec![0u8; (1 << 20) + 1], 1).unwrap_err();
        assert!(matches!(e, UploadError::TooLarge { .. }), "{e}");
        let e = store.put(b"#!/bin/sh\necho hi\n", 1).unwrap_err();
        assert!(matches!(e, UploadError::BadModule(_)), "{e}");
    }
}
