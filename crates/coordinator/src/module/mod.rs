//! The module store: finds a module's bytes by its IPFS CID and verifies them against it.
//!
//! Stores: [`mirror`] (a local directory), [`gateway`] (IPFS over HTTP), [`uploads`] (modules
//! uploaded through the API), and [`layered`], which asks the uploads before the others.

pub mod gateway;
pub mod layered;
pub mod mirror;
pub mod uploads;

use async_trait::async_trait;
use std::sync::Arc;
use wasm_exec_task::ErrorKind;

pub use wasm_exec_runtime::{caused_by_exhaustion, is_exhaustion};
pub use wasm_exec_task::check::is_plain_name;

/// The first four bytes of every binary Wasm module: every store serves only bytes that start
/// with them (WAT text and anything else is refused as `bad_module`, never quoted).
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// `Ok` if `bytes` start with [`WASM_MAGIC`], else [`ModuleError::NotWasm`] naming `name` (a
/// file name or a CID) and never the bytes.
pub fn refuse_unless_wasm(name: &str, bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.starts_with(WASM_MAGIC) {
        Ok(())
    } else {
        Err(ModuleError::NotWasm {
            name: name.to_owned(),
        })
    }
}

/// Finds a module's bytes by CID, verified against it.
#[async_trait]
pub trait ModuleStore: Send + Sync {
    /// The module named `cid` (a CID, or for the mirror a plain file name), verified.
    async fn fetch(&self, cid: &str) -> Result<Arc<Vec<u8>>, ModuleError>;
}

/// Why a module could not be had; each maps to a result kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// The task's `wasm_cid` is not a usable CID or name.
    #[error("{0}")]
    BadCid(String),
    /// Nobody has a module with this CID.
    #[error("no module with CID \"{cid}\" in {place}; add it there or check the task's wasm_cid")]
    NotFound {
        /// The CID asked for.
        cid: String,
        /// Where we looked.
        place: String,
    },
    /// The bytes do not match the CID: the module is never run.
    #[error("{0}")]
    Integrity(String),
    /// The module is over the size limit.
    #[error("the module is {bytes} bytes, over the {limit}-byte limit (COORDINATOR_MAX_MODULE_MB)")]
    TooLarge {
        /// Its size (or as much as was read).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The store could not be reached (gateway down, timeouts).
    #[error("{0}")]
    Unavailable(String),
    /// A local file could not be read.
    #[error("{0}")]
    Io(String),
    /// The mirror's entry is not a regular file (a link, directory, FIFO, device, socket): it is
    /// never followed or read, so a link cannot expose a host file.
    #[error(
        "\"{name}\" in the mirror is {what}, not a regular file; the mirror serves regular files only (copy the module in rather than linking it)"
    )]
    NotRegularFile {
        /// The file name asked for or found.
        name: String,
        /// What it is instead (`a symbolic link`, `a FIFO`, ...).
        what: &'static str,
    },
    /// The host is short of a local resource for now (file descriptors, memory, threads:
    /// EMFILE, ENFILE, ENOMEM, EAGAIN, ENOBUFS): not the task's fault, so the scheduler tries it
    /// again later and this is never a task's result.
    #[error(
        "{0}; the host is short of file descriptors or memory for now, so the task is tried again"
    )]
    Exhausted(String),
    /// The file does not start with the binary Wasm magic. Its bytes are never quoted: they may
    /// be any file's.
    #[error(
        "\"{name}\" is not a binary Wasm module (no \\0asm magic); compile WAT with wat2wasm first"
    )]
    NotWasm {
        /// The file name asked for or found.
        name: String,
    },
}

impl ModuleError {
    /// The error for local I/O that failed while `doing` something (`reading "fib.wasm" in the
    /// mirror`): [`ModuleError::Exhausted`] if the host is only short of a resource for now (see
    /// [`is_exhaustion`]), else [`ModuleError::Io`].
    pub fn from_io(doing: &str, e: &std::io::Error) -> Self {
        if is_exhaustion(e) {
            ModuleError::Exhausted(format!("{doing}: {e}"))
        } else {
            ModuleError::Io(format!("{doing}: {e}"))
        }
    }

    /// Whether trying again later may succeed with nothing changed but the host's load: the
    /// scheduler then retries the task instead of storing this as its result.
    pub fn is_transient(&self) -> bool {
        matches!(self, ModuleError::Exhausted(_))
    }

    /// The result kind a task fails with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModuleError::BadCid(_) => ErrorKind::BadInput,
            ModuleError::NotFound { .. } | ModuleError::Unavailable(_) => {
                ErrorKind::ModuleUnavailable
            }
            ModuleError::Integrity(_) => ErrorKind::Integrity,
            ModuleError::TooLarge { .. } => ErrorKind::ModuleTooLarge,
            ModuleError::Io(_) => ErrorKind::Io,
            ModuleError::Exhausted(_) => ErrorKind::HostExhausted,
            ModuleError::NotRegularFile { .. } | ModuleError::NotWasm { .. } => {
                ErrorKind::BadModule
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_shortage_of_local_resources_is_transient() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        let e = ModuleError::from_io("reading \"fib.wasm\" in the mirror", &emfile);
        assert!(e.is_transient(), "{e}");
        let denied = std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        let e = ModuleError::from_io("reading \"fib.wasm\" in the mirror", &denied);
        assert!(!e.is_transient(), "{e}");
        assert_eq!(e.kind(), ErrorKind::Io);
    }
}
