//! On-disk cache of compiled modules, keyed by the engine fingerprint and a digest of the module's
//! SHA-256 and the shape limits it was checked under (the loader's cache id, so a hit needs no
//! second shape check); "module digest" below means that digest.
//!
//! Loading precompiled code means running it, so an entry must prove it was written by a holder
//! of the cache key ([`cache_key`](crate::cache_key), kept outside the directory). An entry is two
//! files:
//! - `<digest>.cwasm`: the compiled code exactly as `Module::serialize` made it, so wasmtime maps
//!   it into memory (`Module::deserialize_open_file`) instead of copying it: a start touches only
//!   the pages it runs;
//! - `<digest>.seal`: the module digest, the engine fingerprint, the code's length and an
//!   HMAC-SHA256 under the key over all of them and every byte of the code; and, once the code
//!   has been checked in full, a *stamp*: the code file's identity (device, inode, size,
//!   modification and change times) with a second HMAC over it and the first.
//!
//! A start with a stamp that verifies and matches the open file's `fstat` trusts the file without
//! reading it; any other start reads it all and checks the code's HMAC, and stamps it if the file
//! had not changed for [`SETTLE`]. An entry whose MACs do not verify (corrupt, truncated,
//! relabelled for another module, patched, written under another key) is logged, ignored and
//! rebuilt, never loaded; wasmtime then checks its own version and settings.
//!
//! Why a stamp is safe: writing to a file, truncating it, renaming or replacing it, or setting its
//! times all set its change time (ctime) to the kernel's clock, which no process but root can set
//! back. So a file whose identity matches a stamp has not been touched since it was checked in
//! full, provided it had already been still for longer than the file system's timestamp
//! granularity when checked ([`SETTLE`], 2 s, covers the coarsest Linux one; ext4 and tmpfs
//! tick every few milliseconds). The stamp is bound to the key, so copying a seal to another file
//! or another cache proves nothing. What it does not cover: root, who can also read the key; and
//! a process of this user writing into the code file *while* it is mapped, which changes the
//! running code (and a truncation then ends the process with SIGBUS). Entries are mode 0600 in a
//! directory of mode 0700 ([`check_dir`](crate::cache_key::check_dir)), so such a process could
//! equally write this executable (README.md, on `WASM_CACHE_DIR`).
//!
//! Entries are written atomically (temp file + rename), code before seal, so concurrent runs never
//! see half a file; a seal that does not match its code (a race between two writers) is only a
//! miss.

use crate::cache_key::{self, CacheLocation};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use wasmtime::{Engine, Module};

/// Magic bytes and format version at the start of every seal (03: code in a file of its own).
const MAGIC: &[u8; 8] = b"WXSEAL03";
/// What the stamp's MAC covers first, so it can never be taken for the code's MAC.
const STAMP_MAGIC: &[u8; 8] = b"WXSTAMP3";
/// A seal: magic, module digest, engine fingerprint, code length, code MAC.
const SEAL_LEN: usize = 8 + 32 + 32 + 8 + 32;
/// A stamp after the seal: the code file's identity, then its MAC.
const STAMP_LEN: usize = IDENTITY_LEN + 32;
/// Device, inode, modification and change times (seconds and nanoseconds), 8 bytes each.
const IDENTITY_LEN: usize = 6 * 8;

/// How long a code file must have been unchanged before its identity may stand for its content:
/// more than the coarsest timestamp granularity of a Linux file system (1 s), so that any later
/// change shows as a new change time.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A directory of compiled modules for one engine configuration.
#[derive(Clone)]
pub struct CompiledCache {
    /// `<root>/<first 16 hex digits of the fingerprint>`: one engine's entries.
    dir: PathBuf,
    /// The engine fingerprint every entry must carry.
    fingerprint: [u8; 32],
    /// The key entries are authenticated under.
    mac: Hmac<Sha256>,
    /// How long a code file must be unchanged to be stamped ([`SETTLE`]; shorter in tests).
    settle: Duration,
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
    #[error("its seal is missing or unreadable: {0}")]
    NoSeal(std::io::Error),
    #[error("its seal is not a wasm-exec seal of this version (bad magic or length)")]
    Magic,
    #[error("made for another module")]
    OtherModule,
    #[error("made by another engine configuration")]
    OtherEngine,
    #[error("its code is {actual} bytes, its seal says {sealed}: truncated or replaced")]
    Length { actual: u64, sealed: u64 },
    #[error("its MAC does not verify: corrupt, forged, or written under another key")]
    Forged,
    #[error("the code file changed while it was checked")]
    Changed,
    #[error("reading its code: {0}")]
    Read(std::io::Error),
    #[error("wasmtime refused it: {0}")]
    Wasmtime(String),
}

/// What a seal file holds.
struct Seal {
    /// The code's length, as sealed.
    length: u64,
    /// The MAC over the seal's fields and every byte of the code.
    code_mac: [u8; 32],
    /// The identity the code file had when last checked in full, and its MAC, if stamped.
    stamp: Option<([u8; IDENTITY_LEN], [u8; 32])>,
}

/// A file's identity: what changes whenever anything writes, truncates, replaces or touches it.
fn identity(meta: &std::fs::Metadata) -> [u8; IDENTITY_LEN] {
    let mut out = [0u8; IDENTITY_LEN];
    let fields = [
        meta.dev().to_le_bytes(),
        meta.ino().to_le_bytes(),
        meta.mtime().to_le_bytes(),
        meta.mtime_nsec().to_le_bytes(),
        meta.ctime().to_le_bytes(),
        meta.ctime_nsec().to_le_bytes(),
    ];
    for (chunk, field) in out.chunks_exact_mut(8).zip(fields) {
        chunk.copy_from_slice(&field);
    }
    out
}

/// Whether the file was last changed at least `settle` ago (by the change time, not settable).
fn settled(meta: &std::fs::Metadata, settle: Duration) -> bool {
    let changed = u64::try_from(meta.ctime()).ok().map(|secs| {
        SystemTime::UNIX_EPOCH + Duration::new(secs, u32::try_from(meta.ctime_nsec()).unwrap_or(0))
    });
    match changed.map(|at| SystemTime::now().duration_since(at)) {
        Some(Ok(age)) => age >= settle,
        _ => false,
    }
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
            settle: SETTLE,
        })
    }

    /// The code file's path for a module digest.
    pub fn path_for(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(module_sha256)))
    }

    /// The seal file's path for a module digest.
    pub fn seal_path_for(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.path_for(module_sha256).with_extension("seal")
    }

    /// Loads the compiled module, or `None` when there is no usable entry (missing, corrupt,
    /// forged, foreign or stale: each logged, then rebuilt by the caller).
    pub fn load(&self, engine: &Engine, module_sha256: &[u8; 32]) -> Option<Module> {
        let path = self.path_for(module_sha256);
        let file = File::open(&path).ok()?;
        match self.check_and_map(engine, module_sha256, file) {
            Ok(module) => Some(module),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring compiled-module cache entry; rebuilding it");
                None
            }
        }
    }

    /// The MAC over a seal's fields and the code (fed in by the caller).
    fn code_mac(&self, module_sha256: &[u8; 32], length: u64) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(MAGIC);
        mac.update(module_sha256);
        mac.update(&self.fingerprint);
        mac.update(&length.to_le_bytes());
        mac
    }

    /// The MAC of a stamp: over the code's MAC and the file identity it was checked under.
    fn stamp_mac(&self, code_mac: &[u8; 32], identity: &[u8; IDENTITY_LEN]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(STAMP_MAGIC);
        mac.update(code_mac);
        mac.update(identity);
        mac
    }

    /// Reads and checks the seal's fields (not its MACs).
    fn read_seal(&self, module_sha256: &[u8; 32]) -> Result<Seal, Rejected> {
        let bytes = std::fs::read(self.seal_path_for(module_sha256)).map_err(Rejected::NoSeal)?;
        if !(bytes.len() == SEAL_LEN || bytes.len() == SEAL_LEN + STAMP_LEN) || &bytes[..8] != MAGIC
        {
            return Err(Rejected::Magic);
        }
        if &bytes[8..40] != module_sha256 {
            return Err(Rejected::OtherModule);
        }
        if bytes[40..72] != self.fingerprint {
            return Err(Rejected::OtherEngine);
        }
        let array = |at: usize| -> [u8; 32] {
            let mut out = [0u8; 32];
            out.copy_from_slice(&bytes[at..at + 32]);
            out
        };
        let mut length = [0u8; 8];
        length.copy_from_slice(&bytes[72..80]);
        let stamp = (bytes.len() > SEAL_LEN).then(|| {
            let mut identity = [0u8; IDENTITY_LEN];
            identity.copy_from_slice(&bytes[SEAL_LEN..SEAL_LEN + IDENTITY_LEN]);
            (identity, array(SEAL_LEN + IDENTITY_LEN))
        });
        Ok(Seal {
            length: u64::from_le_bytes(length),
            code_mac: array(80),
            stamp,
        })
    }

    /// Checks the entry behind `file` (by its stamp, else in full) and maps it as a module.
    fn check_and_map(
        &self,
        engine: &Engine,
        module_sha256: &[u8; 32],
        mut file: File,
    ) -> Result<Module, Rejected> {
        let seal = self.read_seal(module_sha256)?;
        let before = file.metadata().map_err(Rejected::Read)?;
        if before.len() != seal.length {
            return Err(Rejected::Length {
                actual: before.len(),
                sealed: seal.length,
            });
        }
        let now = identity(&before);
        let stamped = seal.stamp.is_some_and(|(identity, mac)| {
            identity == now
                && self
                    .stamp_mac(&seal.code_mac, &identity)
                    .verify_slice(&mac)
                    .is_ok()
        });
        if !stamped {
            let mut mac = self.code_mac(module_sha256, seal.length);
            std::io::copy(&mut (&mut file).take(seal.length), &mut MacWriter(&mut mac))
                .map_err(Rejected::Read)?;
            mac.verify_slice(&seal.code_mac)
                .map_err(|_| Rejected::Forged)?;
            let after = file.metadata().map_err(Rejected::Read)?;
            if identity(&after) != now {
                return Err(Rejected::Changed);
            }
            if settled(&after, self.settle) {
                self.stamp(module_sha256, &seal, &now);
            }
        }
        map(engine, file).map_err(|e| Rejected::Wasmtime(format!("{e:#}")))
    }

    /// Rewrites the seal with a stamp for the code file's identity `now`; failures only cost the
    /// next start a full check.
    fn stamp(&self, module_sha256: &[u8; 32], seal: &Seal, now: &[u8; IDENTITY_LEN]) {
        let tag = self.stamp_mac(&seal.code_mac, now).finalize().into_bytes();
        let mut bytes = self.seal_bytes(module_sha256, seal.length, &seal.code_mac);
        bytes.extend_from_slice(now);
        bytes.extend_from_slice(&tag);
        if let Err(e) = self.write_atomically(&self.seal_path_for(module_sha256), &bytes) {
            tracing::debug!(error = %e, "could not stamp a compiled-module cache entry");
        }
    }

    /// A seal without a stamp.
    fn seal_bytes(&self, module_sha256: &[u8; 32], length: u64, code_mac: &[u8; 32]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SEAL_LEN + STAMP_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(module_sha256);
        bytes.extend_from_slice(&self.fingerprint);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(code_mac);
        bytes
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
        let length = payload.len() as u64;
        let mut mac = self.code_mac(module_sha256, length);
        mac.update(payload);
        let code_mac: [u8; 32] = mac.finalize().into_bytes().into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        self.write_atomically(&self.path_for(module_sha256), payload)?;
        let seal = self.seal_bytes(module_sha256, length, &code_mac);
        self.write_atomically(&self.seal_path_for(module_sha256), &seal)
    }

    /// Writes `bytes` to a temporary file (mode 0600) in the cache and renames it to `path`.
    fn write_atomically(&self, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(bytes)?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Feeds what is written into a MAC.
struct MacWriter<'a>(&'a mut Hmac<Sha256>);

impl Write for MacWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Maps authenticated compiled code into memory as a module.
#[allow(unsafe_code)]
fn map(engine: &Engine, file: File) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize_open_file` requires a file that `Module::serialize` produced
    // for a compatible engine and that nobody changes while it is mapped. The caller has verified
    // the code's HMAC-SHA256 under the cache key (which only this cache's writers hold, kept
    // outside the directory, mode 0600) over this module digest, engine fingerprint and length,
    // either just now through this very descriptor or through a stamp binding it to this file's
    // identity, which any write since would have changed: these are the bytes `try_store` wrote
    // from `Module::serialize`. The file is mode 0600 in a 0700 directory of this user; that no
    // process of this user writes into it while mapped is the assumption the module doc states.
    // wasmtime re-checks its version and settings itself.
    unsafe { Module::deserialize_open_file(engine, file) }
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
        let mut cache = CompiledCache::open(&location, &options.fingerprint(&engine)).unwrap();
        // Long enough for any timestamp tick of the test's file system to pass.
        cache.settle = Duration::from_millis(50);
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

    impl Setup {
        fn loads(&self) -> bool {
            self.cache.load(&self.engine, &self.sha).is_some()
        }

        fn stamped(&self) -> bool {
            std::fs::metadata(self.cache.seal_path_for(&self.sha))
                .unwrap()
                .len()
                == (SEAL_LEN + STAMP_LEN) as u64
        }

        /// Stores the module, lets it settle and loads it once, which stamps it.
        fn stamp(&self) {
            self.cache.store(&self.module, &self.sha);
            assert!(!self.stamped(), "a fresh entry is not stamped");
            std::thread::sleep(self.cache.settle * 2);
            assert!(self.loads());
            assert!(self.stamped(), "a settled entry checked in full is stamped");
        }
    }

    #[test]
    fn stores_and_loads() {
        let s = setup();
        assert!(!s.loads());
        s.cache.store(&s.module, &s.sha);
        assert!(s.loads(), "unsettled: checked in full, not stamped");
        assert!(!s.stamped());
        std::thread::sleep(s.cache.settle * 2);
        assert!(s.loads());
        assert!(s.stamped());
        assert!(s.loads(), "by its stamp");
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
        assert!(!s.loads(), "corrupt code");

        let other_sha = [7u8; 32];
        let mut seal = std::fs::read(s.cache.seal_path_for(&s.sha)).unwrap();
        seal[8..40].copy_from_slice(&other_sha);
        std::fs::write(s.cache.path_for(&other_sha), &good).unwrap();
        std::fs::write(s.cache.seal_path_for(&other_sha), &seal).unwrap();
        assert!(
            s.cache.load(&s.engine, &other_sha).is_none(),
            "entry relabelled for another module"
        );

        std::fs::write(&path, b"garbage").unwrap();
        assert!(!s.loads());
        std::fs::remove_file(s.cache.seal_path_for(&s.sha)).unwrap();
        std::fs::write(&path, &good).unwrap();
        assert!(!s.loads(), "code without its seal");
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
        assert!(!s.loads());
    }

    #[test]
    fn a_stamped_entry_changed_in_place_is_checked_again_and_rejected() {
        use std::os::unix::fs::FileExt;
        let s = setup();
        s.stamp();
        let path = s.cache.path_for(&s.sha);
        let times = std::fs::metadata(&path).unwrap().modified().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let len = file.metadata().unwrap().len();
        // One byte of the code patched, its modification time put back: only the change time
        // (which no one but root can set) tells.
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, len / 2).unwrap();
        file.write_all_at(&[byte[0] ^ 0x5a], len / 2).unwrap();
        file.set_modified(times).unwrap();
        drop(file);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), times);
        assert!(!s.loads(), "patched under a stamp");
    }

    #[test]
    fn a_truncated_entry_is_rejected_before_it_is_mapped() {
        let s = setup();
        s.stamp();
        let path = s.cache.path_for(&s.sha);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        assert!(!s.loads(), "truncated under a stamp");
        // Truncated with the seal's length rewritten to match (the forger has no key).
        let mut seal = std::fs::read(s.cache.seal_path_for(&s.sha)).unwrap();
        seal[72..80].copy_from_slice(&(len / 2).to_le_bytes());
        std::fs::write(s.cache.seal_path_for(&s.sha), &seal[..SEAL_LEN]).unwrap();
        assert!(!s.loads(), "truncated, length relabelled");
    }

    #[test]
    fn a_stamp_does_not_vouch_for_another_file() {
        let s = setup();
        s.stamp();
        let path = s.cache.path_for(&s.sha);
        let mut code = std::fs::read(&path).unwrap();
        let last = code.len() - 1;
        code[last] ^= 0xff;
        // A new file under the old name: another inode and change time than the stamp's.
        let replacement = path.with_extension("new");
        std::fs::write(&replacement, &code).unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        assert!(!s.loads(), "replaced under a stamp");
    }
}
