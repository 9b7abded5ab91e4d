//! The module store: finds a module's bytes by its IPFS CID and verifies them against it.

pub mod gateway;
pub mod mirror;

use async_trait::async_trait;
use std::sync::Arc;
use wasm_exec_task::ErrorKind;

pub use wasm_exec_task::check::is_plain_name;

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
            ModuleError::NotRegularFile { .. } | ModuleError::NotWasm { .. } => {
                ErrorKind::BadModule
            }
        }
    }
}
