//! The local mirror (`COORDINATOR_IPFS_MIRROR`): a directory of modules found by CID or by name.
//!
//! Files are indexed by the CIDs their bytes have under `ipfs add` defaults (CIDv0 and CIDv1,
//! see [`file_cids`](wasm_exec_ipfs::file_cids)), so a task names a mirrored module exactly as it
//! would on IPFS. A name without a path (`fib.wasm`, the seed's old style) is looked up as a file.
//! Bytes are verified against the CID again when served, so a file changed after indexing is
//! never run by mistake.
//!
//! The directory is not trusted: only regular files holding binary Wasm are served, links are
//! never followed, reads stop at the size cap (`file`). The index is built once at open and
//! refreshed by change, at most once per [`REFRESH_EVERY`], hashing only new or changed files
//! (`index`): an unknown CID costs a directory listing, not a re-hash of the mirror.

mod file;
mod index;

use super::{ModuleError, ModuleStore, is_plain_name};
use async_trait::async_trait;
use index::{Index, ScanStats};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::{Duration, Instant};
use wasm_exec_ipfs::{parse_cid, verify_file};

/// The default least time between two re-scans of the mirror for an unknown CID.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A directory of modules indexed by CID.
#[derive(Debug)]
pub struct MirrorStore {
    /// Shared with the blocking threads that read and hash its files.
    mirror: Arc<Mirror>,
}

/// The mirror's state; its methods block (file reads, hashing), so `fetch` runs them on tokio's
/// blocking pool rather than on a worker thread.
#[derive(Debug)]
struct Mirror {
    /// The mirror directory.
    dir: PathBuf,
    /// The size cap of one module, in bytes (`COORDINATOR_MAX_MODULE_MB`).
    max_bytes: u64,
    /// The CIDs of its modules, swapped whole after a re-scan.
    index: RwLock<Index>,
    /// When the last scan started; held while scanning, so one request scans and the others
    /// use the index as it is.
    last_scan: Mutex<Instant>,
    /// The least time between two re-scans, in nanoseconds.
    refresh_every_ns: AtomicU64,
    /// Scans so far, the first at open included.
    scans: AtomicU64,
    /// Bytes read and hashed by scans so far.
    hashed_bytes: AtomicU64,
}

impl MirrorStore {
    /// Indexes `dir` (its regular files holding binary Wasm, up to `max_bytes`; not recursive).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, ModuleError> {
        let mirror = Mirror {
            dir: dir.to_owned(),
            max_bytes,
            index: RwLock::default(),
            last_scan: Mutex::new(Instant::now()),
            refresh_every_ns: AtomicU64::new(0),
            scans: AtomicU64::new(0),
            hashed_bytes: AtomicU64::new(0),
        };
        let stats = mirror.scan()?;
        tracing::info!(
            dir = %mirror.dir.display(),
            listed = stats.listed,
            modules = stats.hashed_files,
            hashed_bytes = stats.hashed_bytes,
            "mirror indexed"
        );
        Ok(Self {
            mirror: Arc::new(mirror),
        }
        .refresh_every(REFRESH_EVERY))
    }

    /// The same store, re-scanning for an unknown CID at most once per `every` (default
    /// [`REFRESH_EVERY`]; zero re-scans on every miss).
    pub fn refresh_every(self, every: Duration) -> Self {
        let ns = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
        self.mirror.refresh_every_ns.store(ns, Ordering::Relaxed);
        self
    }

    /// How many times the directory was scanned, the scan at open included.
    pub fn scans(&self) -> u64 {
        self.mirror.scans.load(Ordering::Relaxed)
    }

    /// How many bytes the scans read and hashed (only new or changed files are).
    pub fn hashed_bytes(&self) -> u64 {
        self.mirror.hashed_bytes.load(Ordering::Relaxed)
    }
}

impl Mirror {
    /// Re-scans the directory and swaps the index in.
    fn scan(&self) -> Result<ScanStats, ModuleError> {
        let current = self.index.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (next, stats) = current.rescan(&self.dir, self.max_bytes)?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.scans.fetch_add(1, Ordering::Relaxed);
        self.hashed_bytes
            .fetch_add(stats.hashed_bytes, Ordering::Relaxed);
        Ok(stats)
    }

    /// Re-scans if the last scan is at least `refresh_every` old and no other request is
    /// scanning now (that one's index will serve the next request).
    fn refresh_if_due(&self) -> Result<(), ModuleError> {
        let mut last = match self.last_scan.try_lock() {
            Ok(last) => last,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        let every = Duration::from_nanos(self.refresh_every_ns.load(Ordering::Relaxed));
        if last.elapsed() < every {
            return Ok(());
        }
        *last = Instant::now();
        let stats = self.scan()?;
        tracing::debug!(
            listed = stats.listed,
            rehashed_files = stats.hashed_files,
            rehashed_bytes = stats.hashed_bytes,
            "mirror rescanned"
        );
        Ok(())
    }

    fn lookup(&self, cid: &wasm_exec_ipfs::Cid) -> Option<String> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index.lookup(cid).map(str::to_owned)
    }

    fn fetch_sync(&self, name: &str) -> Result<Vec<u8>, ModuleError> {
        let Ok(cid) = parse_cid(name) else {
            return self.fetch_by_name(name);
        };
        let file = match self.lookup(&cid) {
            Some(file) => file,
            None => {
                // Files may have been added since the last scan.
                self.refresh_if_due()?;
                self.lookup(&cid).ok_or_else(|| ModuleError::NotFound {
                    cid: name.to_owned(),
                    place: format!("the mirror \"{}\"", self.dir.display()),
                })?
            }
        };
        let bytes = match file::read_module(&self.dir, &file, self.max_bytes) {
            // Removed since the last scan: name the CID asked for, not the file.
            Err(ModuleError::NotFound { place, .. }) => {
                return Err(ModuleError::NotFound {
                    cid: name.to_owned(),
                    place,
                });
            }
            read => read?,
        };
        verify_file(&cid, &bytes).map_err(|e| ModuleError::Integrity(e.to_string()))?;
        Ok(bytes)
    }

    fn fetch_by_name(&self, name: &str) -> Result<Vec<u8>, ModuleError> {
        if !is_plain_name(name) {
            return Err(ModuleError::BadCid(format!(
                "\"{name}\" is neither a CID nor a plain file name in the mirror; give a CIDv0 (Qm...) or CIDv1 (bafy.../bafk...), or a name like fib.wasm"
            )));
        }
        file::read_module(&self.dir, name, self.max_bytes)
    }
}

#[async_trait]
impl ModuleStore for MirrorStore {
    async fn fetch(&self, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
        // Reads up to the cap and, on a re-scan, hashing of new files: off the async workers.
        let mirror = Arc::clone(&self.mirror);
        let cid = cid.to_owned();
        tokio::task::spawn_blocking(move || mirror.fetch_sync(&cid))
            .await
            .map_err(|e| ModuleError::Io(format!("reading from the mirror: {e}")))?
            .map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_exec_ipfs::file_cids;
    use wasm_exec_task::ErrorKind;

    /// A module-shaped file (the Wasm magic, then `tail`).
    fn wasm(tail: &[u8]) -> Vec<u8> {
        [b"\0asm".as_slice(), tail].concat()
    }

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
        let (dir, store) = mirror_with(&[("m.wasm", &wasm(b"original"))]);
        let cid = file_cids(&wasm(b"original")).v1.to_string();
        std::fs::write(dir.path().join("m.wasm"), wasm(b"tampered")).unwrap();
        let err = store.fetch(&cid).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    }

    #[tokio::test]
    async fn a_file_removed_after_indexing_is_unavailable_under_its_cid() {
        let (dir, store) = mirror_with(&[("m.wasm", &wasm(b"gone"))]);
        let cid = file_cids(&wasm(b"gone")).v1.to_string();
        std::fs::remove_file(dir.path().join("m.wasm")).unwrap();
        let err = store.fetch(&cid).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModuleUnavailable, "{err}");
        assert!(err.to_string().contains(&cid), "{err}");
    }

    #[tokio::test]
    async fn files_added_later_are_found_and_unknown_cids_are_unavailable() {
        let (dir, store) = mirror_with(&[]);
        let store = store.refresh_every(Duration::ZERO);
        std::fs::write(dir.path().join("late.wasm"), wasm(b"late")).unwrap();
        let late = file_cids(&wasm(b"late")).v0.to_string();
        assert_eq!(store.fetch(&late).await.unwrap().as_slice(), wasm(b"late"));
        let err = store
            .fetch(&file_cids(b"nobody").v1.to_string())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModuleUnavailable);
    }

    #[tokio::test]
    async fn unknown_cids_rescan_by_change_and_at_most_once_per_interval() {
        let big = wasm(&vec![1u8; 512 << 10]);
        let (dir, store) = mirror_with(&[("a.wasm", &big), ("b.wasm", &wasm(b"b"))]);
        let indexed = store.hashed_bytes();
        assert_eq!(indexed, big.len() as u64 + 5);
        let unknown = file_cids(b"nobody").v1.to_string();
        for _ in 0..20 {
            assert!(store.fetch(&unknown).await.is_err());
        }
        assert_eq!(
            store.scans(),
            1,
            "throttled: no re-scan within a second of open"
        );

        let store = store.refresh_every(Duration::ZERO);
        for _ in 0..20 {
            assert!(store.fetch(&unknown).await.is_err());
        }
        assert_eq!(store.scans(), 21);
        assert_eq!(
            store.hashed_bytes(),
            indexed,
            "unchanged files are not re-hashed"
        );
        std::fs::write(dir.path().join("c.wasm"), wasm(b"c")).unwrap();
        assert!(store.fetch(&unknown).await.is_err());
        assert_eq!(
            store.hashed_bytes(),
            indexed + 5,
            "only the new file is hashed"
        );
    }

    #[tokio::test]
    async fn paths_oversize_files_and_text_are_refused() {
        let big = wasm(&vec![0u8; 1 << 20]);
        let (_dir, store) = mirror_with(&[("big.wasm", &big), ("m.wat", b"(module)")]);
        let err = store.fetch("../etc/passwd").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        let err = store.fetch("big.wasm").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModuleTooLarge);
        let err = store.fetch("m.wat").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadModule);
        assert!(!err.to_string().contains("(module)"), "{err}");
    }
}
