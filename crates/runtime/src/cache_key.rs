//! Who may touch the compiled-module cache: its directory must be this user's alone, and its
//! entries are authenticated under a key kept outside it.
//!
//! Loading compiled code means running it, so a directory that others can write would let them
//! run code as this process: it is refused. The key (at least 32 bytes, `<dir>.key` by default,
//! `WASM_CACHE_KEY_FILE` in the executor) is created with mode 0600 when missing; one that others
//! could read, or group or others could write, is refused too, since with it anyone could forge
//! entries. Group read is allowed: a Kubernetes Secret is mounted root-owned, readable by the
//! pod's `fsGroup` (`defaultMode: 0440`).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes of a key this cache creates, and the fewest it accepts.
pub const KEY_BYTES: usize = 32;

/// Where a cache lives and where the key that authenticates its entries is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLocation {
    /// The cache directory (`WASM_CACHE_DIR`).
    pub dir: PathBuf,
    /// The key file (`WASM_CACHE_KEY_FILE`): outside `dir`, so writing entries is not enough
    /// to forge them.
    pub key_file: PathBuf,
}

impl CacheLocation {
    /// `dir` with its key beside it: `/var/cache/wasm` keeps its key in `/var/cache/wasm.key`.
    pub fn beside(dir: &Path) -> Self {
        let mut key_file = dir.as_os_str().to_owned();
        key_file.push(".key");
        Self {
            dir: dir.to_path_buf(),
            key_file: PathBuf::from(key_file),
        }
    }
}

/// Creates `dir` (mode 0700) if missing, then checks that it is a directory owned by this user
/// that neither group nor others can write.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating WASM_CACHE_DIR \"{}\": {e}", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("reading WASM_CACHE_DIR \"{}\": {e}", dir.display()))?;
    let uid = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(format!(
            "WASM_CACHE_DIR \"{}\" is not a directory",
            dir.display()
        ));
    }
    if meta.uid() != uid {
        return Err(format!(
            "WASM_CACHE_DIR \"{}\" belongs to uid {}, not to this user (uid {uid}): its owner could plant compiled code; use a directory of this user's (chown {uid} {0}; chmod 700 {0})",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "WASM_CACHE_DIR \"{0}\" is writable by group or others (mode {mode:o}): they could plant compiled code that this process would run; chmod 700 {0}",
            dir.display()
        ));
    }
    Ok(())
}

/// Reads the key at `path`, creating a random one (mode 0600) if there is none. Refuses a key
/// shorter than [`KEY_BYTES`], owned by someone else than this user or root, that others may
/// read, or that group or others may write.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) => check_key_file(path, &meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path)?,
        Err(e) => return Err(format!("reading WASM_CACHE_KEY_FILE \"{shown}\": {e}")),
    }
    let key =
        std::fs::read(path).map_err(|e| format!("reading WASM_CACHE_KEY_FILE \"{shown}\": {e}"))?;
    if key.len() < KEY_BYTES {
        return Err(format!(
            "WASM_CACHE_KEY_FILE \"{shown}\" holds {} bytes, fewer than {KEY_BYTES}; remove it to have a new key made",
            key.len()
        ));
    }
    Ok(key)
}

fn check_key_file(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!(
            "WASM_CACHE_KEY_FILE \"{}\" belongs to uid {}, neither this user (uid {uid}) nor root; its owner could forge cache entries",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o026 != 0 {
        return Err(format!(
            "WASM_CACHE_KEY_FILE \"{0}\" is readable by others or writable by group or others (mode {mode:o}): with it anyone could forge cache entries; chmod 600 {0}",
            path.display()
        ));
    }
    Ok(())
}

/// Writes a fresh random key to `path` (mode 0600), unless another process made one first.
fn create_key(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let mut key = [0u8; KEY_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("reading /dev/urandom for a cache key: {e}"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A temporary file is created with mode 0600; linking it into place never replaces a key
    // another process made meanwhile.
    let mut file = tempfile::NamedTempFile::new_in(parent)
        .map_err(|e| format!("creating WASM_CACHE_KEY_FILE \"{shown}\": {e}"))?;
    file.write_all(&key)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| format!("writing WASM_CACHE_KEY_FILE \"{shown}\": {e}"))?;
    match file.persist_noclobber(path) {
        Ok(_) => {
            tracing::info!(path = %shown, "created a compiled-module cache key");
            Ok(())
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "creating WASM_CACHE_KEY_FILE \"{shown}\": {}",
            e.error
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_with_mode_0600_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.key");
        let key = load_or_create_key(&path).unwrap();
        assert_eq!(key.len(), KEY_BYTES);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap(), key);
    }

    #[test]
    fn an_open_or_short_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.key");
        std::fs::write(&path, [7u8; 40]).unwrap();
        for open in [0o644, 0o660, 0o606] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
            let err = load_or_create_key(&path).unwrap_err();
            assert!(err.contains("chmod 600"), "{open:o}: {err}");
        }
        for private in [0o600, 0o400, 0o440] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private)).unwrap();
            assert!(load_or_create_key(&path).is_ok(), "{private:o}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"short").unwrap();
        assert!(
            load_or_create_key(&path)
                .unwrap_err()
                .contains("fewer than 32")
        );
    }

    #[test]
    fn a_dir_others_can_write_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        check_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_dir(&cache).unwrap_err();
        assert!(err.contains("chmod 700"), "{err}");
        assert!(err.contains("mode 777"), "{err}");
    }

    #[test]
    fn the_key_sits_beside_the_dir() {
        let location = CacheLocation::beside(Path::new("/var/cache/wasm"));
        assert_eq!(location.key_file, PathBuf::from("/var/cache/wasm.key"));
    }
}
