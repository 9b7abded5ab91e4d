//! On-disk cache of compiled modules, keyed by the module's SHA-256 and the engine fingerprint.
//!
//! Loading precompiled code means trusting it to be machine code wasmtime produced, so an entry is
//! checked before use: a header names the module digest, the engine fingerprint and the SHA-256 of
//! the payload, and all three must match; wasmtime then checks its own version and settings. An
//! entry that fails any check is logged, ignored and rebuilt. Entries are written atomically
//! (temp file + rename), so concurrent runs never see half a file.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

/// Magic bytes and format version at the start of every entry.
const MAGIC: &[u8; 8] = b"WXCODE01";
/// Header: magic, module digest, engine fingerprint, payload digest.
const HEADER_LEN: usize = 8 + 32 + 32 + 32;

/// A directory of compiled modules for one engine configuration.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    /// `<root>/<first 16 hex digits of the fingerprint>`: one engine's entries.
    dir: PathBuf,
    /// The engine fingerprint every entry must carry.
    fingerprint: [u8; 32],
}

/// Why an entry was not used.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error("shorter than its header")]
    Short,
    #[error("not a wasm-exec cache entry (bad magic)")]
    Magic,
    #[error("made for another module")]
    OtherModule,
    #[error("made by another engine configuration")]
    OtherEngine,
    #[error("payload checksum mismatch (corrupt)")]
    Corrupt,
    #[error("wasmtime refused it: {0}")]
    Wasmtime(String),
}

impl CompiledCache {
    /// A cache under `root` for the engine with this hex fingerprint (see
    /// [`EngineOptions::fingerprint`](crate::EngineOptions::fingerprint)).
    pub fn new(root: impl AsRef<Path>, fingerprint_hex: &str) -> Self {
        let mut fingerprint = [0u8; 32];
        // A fingerprint that is not 32 hex bytes leaves zeros: entries then never match a real
        // engine's, which is safe (always rebuilt).
        if let Ok(bytes) = hex::decode(fingerprint_hex)
            && bytes.len() == 32
        {
            fingerprint.copy_from_slice(&bytes);
        }
        let prefix = fingerprint_hex.get(..16).unwrap_or(fingerprint_hex);
        Self {
            dir: root.as_ref().join(prefix),
            fingerprint,
        }
    }

    /// The entry's path for a module digest.
    pub fn path_for(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(module_sha256)))
    }

    /// Loads the compiled module, or `None` when there is no usable entry (missing, corrupt,
    /// foreign or stale: each logged, then rebuilt by the caller).
    pub fn load(&self, engine: &Engine, module_sha256: &[u8; 32]) -> Option<Module> {
        let path = self.path_for(module_sha256);
        let bytes = std::fs::read(&path).ok()?;
        match self.check_and_deserialize(engine, module_sha256, &bytes) {
            Ok(module) => Some(module),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring compiled-module cache entry; rebuilding it");
                None
            }
        }
    }

    fn check_and_deserialize(
        &self,
        engine: &Engine,
        module_sha256: &[u8; 32],
        bytes: &[u8],
    ) -> Result<Module, Rejected> {
        if bytes.len() < HEADER_LEN {
            return Err(Rejected::Short);
        }
        let (header, payload) = bytes.split_at(HEADER_LEN);
        if &header[..8] != MAGIC {
            return Err(Rejected::Magic);
        }
        if &header[8..40] != module_sha256 {
            return Err(Rejected::OtherModule);
        }
        if header[40..72] != self.fingerprint {
            return Err(Rejected::OtherEngine);
        }
        if header[72..104] != Sha256::digest(payload)[..] {
            return Err(Rejected::Corrupt);
        }
        deserialize(engine, payload).map_err(|e| Rejected::Wasmtime(format!("{e:#}")))
    }

    /// Stores a compiled module. Failures are logged and otherwise ignored: the cache only saves
    /// time, it never decides an outcome.
    pub fn store(&self, module: &Module, module_sha256: &[u8; 32]) {
        if let Err(e) = self.try_store(module, module_sha256) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write compiled-module cache entry");
        }
    }

    fn try_store(&self, module: &Module, module_sha256: &[u8; 32]) -> std::io::Result<()> {
        let payload = module.serialize().map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(MAGIC)?;
        file.write_all(module_sha256)?;
        file.write_all(&self.fingerprint)?;
        file.write_all(&Sha256::digest(&payload))?;
        file.write_all(&payload)?;
        file.persist(self.path_for(module_sha256))
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// Turns verified cache bytes back into a module.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` requires bytes that `Module::serialize` produced for a
    // compatible engine. The caller has checked that the payload's SHA-256 matches the digest this
    // cache wrote next to it, for this module and this engine fingerprint, so these are the bytes
    // `try_store` wrote from `Module::serialize`; wasmtime re-checks version and settings itself.
    // The cache directory must not be writable by untrusted parties (documented in the README).
    unsafe { Module::deserialize(engine, payload) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;

    fn setup() -> (tempfile::TempDir, Engine, CompiledCache, Module, [u8; 32]) {
        let dir = tempfile::tempdir().unwrap();
        let options = EngineOptions::default();
        let engine = options.engine().unwrap();
        let cache = CompiledCache::new(dir.path(), &options.fingerprint(&engine));
        let wat = r#"(module (func (export "f") (result i32) i32.const 7))"#;
        let module = Module::new(&engine, wat).unwrap();
        let sha: [u8; 32] = Sha256::digest(wat.as_bytes()).into();
        (dir, engine, cache, module, sha)
    }

    #[test]
    fn stores_and_loads() {
        let (_dir, engine, cache, module, sha) = setup();
        assert!(cache.load(&engine, &sha).is_none());
        cache.store(&module, &sha);
        assert!(cache.load(&engine, &sha).is_some());
    }

    #[test]
    fn corrupt_or_foreign_entries_are_rejected() {
        let (_dir, engine, cache, module, sha) = setup();
        cache.store(&module, &sha);
        let path = cache.path_for(&sha);
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        assert!(
            cache.load(&engine, &sha).is_none(),
            "corrupt payload must be rejected"
        );

        let other_sha = [7u8; 32];
        std::fs::write(cache.path_for(&other_sha), &good).unwrap();
        assert!(
            cache.load(&engine, &other_sha).is_none(),
            "entry of another module"
        );

        let other_engine = CompiledCache::new(_dir.path(), &"ab".repeat(32));
        std::fs::create_dir_all(other_engine.path_for(&sha).parent().unwrap()).unwrap();
        std::fs::write(other_engine.path_for(&sha), &good).unwrap();
        assert!(
            other_engine.load(&engine, &sha).is_none(),
            "entry of another engine"
        );

        std::fs::write(&path, b"garbage").unwrap();
        assert!(cache.load(&engine, &sha).is_none());
    }
}
