//! The mirror's index: each file's CIDs, keyed by the file's name and version ([`FileKey`]).
//!
//! A scan lists the directory and `lstat`s every entry; only a file that is new or whose key
//! changed is read and hashed, so re-scanning an unchanged mirror costs one `stat` per file.
//! Entries that are not modules (links, FIFOs, text, oversize files) are remembered too, so each is
//! logged once, by name, when it appears or changes.

use super::super::ModuleError;
use super::file::{FileKey, read_module, refuse_unless_regular};
use std::collections::HashMap;
use std::path::Path;
use wasm_exec_ipfs::{Cid, file_cids};

/// One directory entry as last seen.
#[derive(Debug, Clone)]
struct Entry {
    /// Its version when it was last looked at.
    key: FileKey,
    /// Its CIDs (v0, v1) if it is a module; `None` if it was skipped.
    cids: Option<[Cid; 2]>,
}

/// The CIDs of the mirror's modules, by file name.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    entries: HashMap<String, Entry>,
    by_cid: HashMap<Cid, String>,
}

/// What one scan did (for the log and the tests' counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ScanStats {
    /// Directory entries `lstat`ed.
    pub(super) listed: u64,
    /// Files read and hashed because they were new or changed.
    pub(super) hashed_files: u64,
    /// The bytes those files held.
    pub(super) hashed_bytes: u64,
}

impl Index {
    /// The file name holding the module with this CID, if indexed.
    pub(super) fn lookup(&self, cid: &Cid) -> Option<&str> {
        self.by_cid.get(cid).map(String::as_str)
    }

    /// The index of `dir` as it is now, re-using what `self` knows of unchanged files. A file
    /// that cannot be read for want of descriptors or memory fails the whole scan (transient),
    /// rather than being remembered as no module.
    pub(super) fn rescan(
        &self,
        dir: &Path,
        max_bytes: u64,
    ) -> Result<(Index, ScanStats), ModuleError> {
        let listing = || format!("listing the mirror \"{}\"", dir.display());
        let mut stats = ScanStats::default();
        let mut entries = HashMap::new();
        let list = std::fs::read_dir(dir).map_err(|e| ModuleError::from_io(&listing(), &e))?;
        for entry in list {
            let entry = entry.map_err(|e| ModuleError::from_io(&listing(), &e))?;
            let Ok(name) = entry.file_name().into_string() else {
                // Debug, not info: it is seen again on every re-scan, and no task can name it.
                tracing::debug!(name = ?entry.file_name(), "mirror: skipped a file whose name is not UTF-8");
                continue;
            };
            // `DirEntry::metadata` does not follow links: this is the entry itself.
            let Ok(meta) = entry.metadata() else { continue };
            stats.listed += 1;
            let key = FileKey::of(&meta);
            let known = self.entries.get(&name).filter(|e| e.key == key).cloned();
            let entry = match known {
                Some(entry) => entry,
                None => {
                    let cids = index_file(dir, &name, &meta, max_bytes, &mut stats)?;
                    Entry { key, cids }
                }
            };
            entries.insert(name, entry);
        }
        let mut by_cid = HashMap::new();
        for (name, entry) in &entries {
            for cid in entry.cids.iter().flatten() {
                by_cid.insert(*cid, name.clone());
            }
        }
        Ok((Index { entries, by_cid }, stats))
    }
}

/// Reads and hashes one new or changed file; `None` (logged by name, never by content) if it is
/// not a module the mirror serves; an error only if the host is short of resources for now.
fn index_file(
    dir: &Path,
    name: &str,
    meta: &std::fs::Metadata,
    max_bytes: u64,
    stats: &mut ScanStats,
) -> Result<Option<[Cid; 2]>, ModuleError> {
    let read = refuse_unless_regular(name, meta.file_type())
        .and_then(|()| read_module(dir, name, max_bytes));
    match read {
        Ok(module) => {
            stats.hashed_files += 1;
            stats.hashed_bytes += module.len() as u64;
            let cids = file_cids(&module);
            Ok(Some([cids.v0, cids.v1]))
        }
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::info!(name = ?name, kind = e.kind().as_str(), reason = %e, "mirror: skipped a file that is not a module");
            Ok(None)
        }
    }
}
