//! Reading one mirror file as a module without trusting what the directory holds: no symlink is
//! followed, only a regular file is read, never more than the cap, and only binary Wasm is kept.
//!
//! The bytes are never quoted in an error: a file in the mirror may be anything (a link planted to
//! `/proc/self/environ` once printed the coordinator's environment in a WAT parse error).

use super::super::{ModuleError, WASM_MAGIC, refuse_unless_wasm};
use rustix::fs::{Mode, OFlags};
use std::fs::{File, FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What identifies a file's version without reading it: if none of these changed, its bytes are
/// taken to be the same (the refresh re-hashes a file only when its key changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileKey {
    /// The key of a file's metadata (from `lstat` or `fstat`).
    pub(super) fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Reads `dir/name` as a module of at most `max_bytes`: its bytes, binary Wasm.
///
/// The type is checked before opening (`lstat`), so a FIFO or a device found there is not opened;
/// the open itself refuses links (`O_NOFOLLOW`) and cannot block (`O_NONBLOCK`), and the opened
/// descriptor is checked again (`fstat`), so a file swapped in between is refused before a read.
pub(super) fn read_module(dir: &Path, name: &str, max_bytes: u64) -> Result<Vec<u8>, ModuleError> {
    let path = dir.join(name);
    let io =
        |e: std::io::Error| ModuleError::from_io(&format!("reading \"{name}\" in the mirror"), &e);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => refuse_unless_regular(name, meta.file_type())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModuleError::NotFound {
                cid: name.to_owned(),
                place: format!("the mirror \"{}\"", dir.display()),
            });
        }
        Err(e) => return Err(io(e)),
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(&path, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            not_regular(name, "a symbolic link")
        } else {
            io(e.into())
        }
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(io)?;
    refuse_unless_regular(name, meta.file_type())?;
    if meta.len() > max_bytes {
        return Err(ModuleError::TooLarge {
            bytes: meta.len(),
            limit: max_bytes,
        });
    }
    read_capped(file, name, meta.len(), max_bytes)
}

/// Reads a module from `reader`: its first four bytes must be the Wasm magic, and at most
/// `max_bytes + 1` bytes are read whatever size the file reports (`/proc` files report 0).
fn read_capped(
    reader: impl Read,
    name: &str,
    reported_len: u64,
    max_bytes: u64,
) -> Result<Vec<u8>, ModuleError> {
    let io =
        |e: std::io::Error| ModuleError::from_io(&format!("reading \"{name}\" in the mirror"), &e);
    let mut capped = reader.take(max_bytes.saturating_add(1));
    let mut bytes = Vec::with_capacity(usize::try_from(reported_len.min(max_bytes)).unwrap_or(0));
    // The magic first: a file that is not Wasm costs four bytes, whatever its size.
    (&mut capped)
        .take(WASM_MAGIC.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    refuse_unless_wasm(name, &bytes)?;
    capped.read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ModuleError::TooLarge {
            bytes: bytes.len() as u64,
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// `Ok` for a regular file, else the refusal naming what it is.
pub(super) fn refuse_unless_regular(name: &str, kind: FileType) -> Result<(), ModuleError> {
    match describe(kind) {
        None => Ok(()),
        Some(what) => Err(not_regular(name, what)),
    }
}

/// What a file that is not regular is, in words; `None` for a regular file.
fn describe(kind: FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_symlink() {
        Some("a symbolic link")
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

fn not_regular(name: &str, what: &'static str) -> ModuleError {
    ModuleError::NotRegularFile {
        name: name.to_owned(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_exec_task::ErrorKind;

    #[test]
    fn a_file_reporting_size_zero_is_read_only_to_the_cap() {
        let endless = std::io::repeat(7);
        let reader = std::io::Read::chain(&WASM_MAGIC[..], endless);
        let err = read_capped(reader, "pagemap", 0, 1 << 20).unwrap_err();
        assert!(
            matches!(err, ModuleError::TooLarge { bytes, .. } if bytes == (1 << 20) + 1),
            "{err}"
        );
    }

    #[test]
    fn text_is_refused_without_quoting_it() {
        let err = read_capped(&b"SECRET=hunter2\n"[..], "env.wasm", 15, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadModule);
        let message = err.to_string();
        assert!(message.contains("no \\0asm magic"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn links_and_directories_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"\0asm\x01\0\0\0").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link.wasm")).unwrap();
        std::fs::create_dir(dir.path().join("dir.wasm")).unwrap();
        for (name, what) in [("link.wasm", "symbolic link"), ("dir.wasm", "directory")] {
            let err = read_module(dir.path(), name, 1 << 20).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadModule, "{err}");
            assert!(err.to_string().contains(what), "{err}");
        }
        assert!(read_module(dir.path(), "real", 1 << 20).is_ok());
    }
}
