//! On-disk cache of compiled modules, keyed by the module's SHA-256 and the engine fingerprint.
//!
//! Loading precompiled code means running it, so an entry must prove it was written by a holder
//! of the cache key ([`cache_key`](crate::cache_key), kept outside the directory): its header
//! names the module digest and the engine fingerprint, and an HMAC-SHA256 under the key covers
//! the header and the payload. An entry whose MAC does not verify (corrupt, relabelled for another
//! module, code patched with its checksum recomputed, written under another key) is logged,
//! ignored and rebuilt, never loaded; wasmtime then checks its own version and settings. Entries
//! are written atomically (temp file + rename), so concurrent runs never see half a file.

use crate::cache_key::{self, CacheLocation};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::PathBuf;
use wasmtime::{Engine, Module};

/// Magic bytes and format version at the start of every entry (02: authenticated by HMAC).
const MAGIC: &[u8; 8] = b"WXCODE02";
/// Header: magic, module digest, engine fingerprint, MAC.
const HEADER_LEN: usize = 8 + 32 + 32 + 32;

/// A directory of compiled modules for one engine configuration.
#[derive(Clone)]
pub struct CompiledCache {
    /// `<root>/<first 16 hex digits of the fingerprint>`: one engine's entries.
    dir: PathBuf,
    /// The engine fingerprint every entry must carry.
    fingerprint: [u8; 32],
    /// The key entries are authenticated under.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CompiledCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why an entry was not used.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error("shorter than its header")]
    Short,
    #[error("not a wasm-exec cache entry of this version (bad magic)")]
    Magic,
    #[error("made for another module")]
    OtherModule,
    #[error("made by another engine configuration")]
    OtherEngine,
    #[error("its MAC does not verify: corrupt, forged, or written under another key")]
    Forged,
    #[error("wasmtime refused it: {0}")]
    Wasmtime(String),
}

impl CompiledCache {
    /// Opens the cache at `location` for the engine with this hex fingerprint (see
    /// [`EngineOptions::fingerprint`](crate::EngineOptions::fingerprint)): checks the directory
    /// (creating it) and reads the key (creating it). Errors name the path and the fix.
    pub fn open(location: &CacheLocation, fingerprint_hex: &str) -> Result<Self, String> {
        cache_key::check_dir(&location.dir)?;
        let key = cache_key::load_or_create_key(&location.key_file)?;
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| format!("using the cache key: {e}"))?;
        let mut fingerprint = [0u8; 32];
        // A fingerprint that is not 32 hex bytes leaves zeros: entries then never match a real
        // engine's, which is safe (always rebuilt).
        if let Ok(bytes) = hex::decode(fingerprint_hex)
            && bytes.len() == 32
        {
            fingerprint.copy_from_slice(&bytes);
        }
        let prefix = fingerprint_hex.get(..16).unwrap_or(fingerprint_hex);
        Ok(Self {
            dir: location.dir.join(prefix),
            fingerprint,
            mac,
        })
    }

    /// The entry's path for a module digest.
    pub fn path_for(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(module_sha256)))
    }

    /// Loads the compiled module, or `None` when there is no usable entry (missing, corrupt,
    /// forged, foreign or stale: each logged, then rebuilt by the caller).
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

    /// The MAC of an entry: over the magic, module digest, fingerprint and payload.
    fn mac_of(&self, module_sha256: &[u8; 32], fingerprint: &[u8], payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(MAGIC);
        mac.update(module_sha256);
        mac.update(fingerprint);
        mac.update(payload);
        mac
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
        self.mac_of(module_sha256, &header[40..72], payload)
            .verify_slice(&header[72..104])
            .map_err(|_| Rejected::Forged)?;
        deserialize(engine, payload).map_err(|e| Rejected::Wasmtime(format!("{e:#}")))
    }

    /// Stores a compiled module. Failures are logged and otherwise ignored: the cache only saves
    /// time, it never decides an outcome.
    pub fn store(&self, module: &Module, module_sha256: &[u8; 32]) {
        match module.serialize() {
            Ok(payload) => self.store_serialized(&payload, module_sha256),
            Err(e) => {
                tracing::warn!(error = %e, "could not serialise a compiled module for the cache");
            }
        }
    }

    /// Stores compiled code as `Module::serialize` (or `Engine::precompile_module`) made it;
    /// failures are logged as for [`CompiledCache::store`].
    pub fn store_serialized(&self, payload: &[u8], module_sha256: &[u8; 32]) {
        if let Err(e) = self.try_store(payload, module_sha256) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write compiled-module cache entry");
        }
    }

    fn try_store(&self, payload: &[u8], module_sha256: &[u8; 32]) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let tag = self
            .mac_of(module_sha256, &self.fingerprint, payload)
            .finalize()
            .into_bytes();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(MAGIC)?;
        file.write_all(module_sha256)?;
        file.write_all(&self.fingerprint)?;
        file.write_all(&tag)?;
        file.write_all(payload)?;
        file.persist(self.path_for(module_sha256))
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// Turns authenticated cache bytes back into a module.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize` requires bytes that `Module::serialize` produced for a
    // compatible engine. The caller has verified the payload's HMAC-SHA256 under the cache key,
    // which only this cache's writers hold (kept outside the directory, mode 0600), over this
    // module digest and engine fingerprint: these are the bytes `try_store` wrote from
    // `Module::serialize`. wasmtime re-checks its version and settings itself.
    unsafe { Module::deserialize(engine, payload) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;
    use sha2::Digest;

    struct Setup {
        _dir: tempfile::TempDir,
        location: CacheLocation,
        engine: Engine,
        cache: CompiledCache,
        module: Module,
        sha: [u8; 32],
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let location = CacheLocation {
            dir: dir.path().join("cache"),
            key_file: dir.path().join("cache.key"),
        };
        let options = EngineOptions::default();
        let engine = options.engine().unwrap();
        let cache = CompiledCache::open(&location, &options.fingerprint(&engine)).unwrap();
        let wat = r#"(module (func (export "f") (result i32) i32.const 7))"#;
        let module = Module::new(&engine, wat).unwrap();
        let sha: [u8; 32] = Sha256::digest(wat.as_bytes()).into();
        Setup {
            _dir: dir,
            location,
            engine,
            cache,
            module,
            sha,
        }
    }

    #[test]
    fn stores_and_loads() {
        let s = setup();
        assert!(s.cache.load(&s.engine, &s.sha).is_none());
        s.cache.store(&s.module, &s.sha);
        assert!(s.cache.load(&s.engine, &s.sha).is_some());
    }

    #[test]
    fn corrupt_foreign_or_relabelled_entries_are_rejected() {
        let s = setup();
        s.cache.store(&s.module, &s.sha);
        let path = s.cache.path_for(&s.sha);
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        assert!(s.cache.load(&s.engine, &s.sha).is_none(), "corrupt payload");

        let other_sha = [7u8; 32];
        let mut relabelled = good.clone();
        relabelled[8..40].copy_from_slice(&other_sha);
        std::fs::write(s.cache.path_for(&other_sha), &relabelled).unwrap();
        assert!(
            s.cache.load(&s.engine, &other_sha).is_none(),
            "entry relabelled for another module"
        );

        std::fs::write(&path, b"garbage").unwrap();
        assert!(s.cache.load(&s.engine, &s.sha).is_none());
    }

    #[test]
    fn entries_written_under_another_key_are_rejected() {
        let s = setup();
        let other = CacheLocation {
            dir: s.location.dir.clone(),
            key_file: s.location.dir.with_extension("other.key"),
        };
        let fingerprint = EngineOptions::default().fingerprint(&s.engine);
        let forger = CompiledCache::open(&other, &fingerprint).unwrap();
        forger.store(&s.module, &s.sha);
        assert!(forger.load(&s.engine, &s.sha).is_some());
        assert!(s.cache.load(&s.engine, &s.sha).is_none());
    }
}
