//! The executor's private key, read from a file that only its owner may read: never from the
//! command line (where `ps` shows it) and never logged; or made and kept there (receipts).

use alloy::signers::local::PrivateKeySigner;
use std::path::Path;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("reading the key file \"{path}\": {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Others may read or write the file.
    #[error(
        "the key file \"{path}\" is readable or writable by others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A new key could not be written.
    #[error("writing a new key to \"{path}\": {source}")]
    Write {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error(
        "the key file \"{path}\" does not hold a private key: expected 64 hex digits (with or without 0x) on one line"
    )]
    Malformed {
        /// The file.
        path: String,
    },
}

/// Reads a hex private key from `path`, refusing a file that group or others may access.
pub fn read_key_file(path: &Path) -> Result<PrivateKeySigner, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let read = |source| KeyError::Read {
        path: shown.clone(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.trim()
        .parse()
        .map_err(|_| KeyError::Malformed { path: shown })
}

/// The key in `path`, or, when there is no such file, a new random key written there (mode
/// 0600, never overwriting a file); says whether it was created.
pub fn read_or_create_key_file(path: &Path) -> Result<(PrivateKeySigner, bool), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return read_key_file(path).map(|key| (key, false));
    }
    let write = |source| KeyError::Write {
        path: path.display().to_string(),
        source,
    };
    let key = PrivateKeySigner::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write)?;
    writeln!(file, "0x{}", alloy::primitives::hex::encode(key.to_bytes())).map_err(write)?;
    file.sync_all().map_err(write)?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_missing_key_is_created_private_and_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt.key");
        let (made, created) = read_or_create_key_file(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (read, created) = read_or_create_key_file(&path).unwrap();
        assert!(!created);
        assert_eq!(read.address(), made.address());
    }

    #[test]
    fn a_private_file_gives_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let signer = read_key_file(&write(dir.path(), &format!("{KEY}\n"), 0o600)).unwrap();
        assert_eq!(
            signer.address().to_string(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_key_file(&write(dir.path(), KEY, 0o644))
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains(&KEY[2..]), "the key leaked: {err}");
    }

    #[test]
    fn a_file_without_a_key_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_key_file(&write(dir.path(), "0xnot-a-key-secret", 0o600))
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
