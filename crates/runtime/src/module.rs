//! Loading a module: the shape check, then the compiled-module cache or the compiler.

use crate::cache::CompiledCache;
use crate::classify::one_line;
use crate::{ModuleLimits, RuntimeError, entry};
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache configured: compiled.
    Off,
    /// Loaded precompiled from the cache.
    Hit,
    /// Not (usably) in the cache: compiled and stored.
    Miss,
}

impl CacheOutcome {
    /// `off`, `hit` or `miss`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Off => "off",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// A compiled module with its digest.
#[derive(Debug, Clone)]
pub struct LoadedModule {
    pub(crate) module: Module,
    pub(crate) sha256: [u8; 32],
    /// Whether it came from the compiled-module cache.
    pub cache: CacheOutcome,
}

impl LoadedModule {
    /// Hex SHA-256 of the module bytes.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The exported functions with their signatures, for messages.
    pub fn exports(&self) -> String {
        entry::list_exports(&self.module)
    }
}

/// Checks the shape of `bytes` (binary Wasm or WAT text) against the module limits, then
/// compiles it, or loads the compiled code from the cache.
pub(crate) fn load(
    engine: &Engine,
    cache: Option<&CompiledCache>,
    limits: &ModuleLimits,
    bytes: &[u8],
) -> Result<LoadedModule, RuntimeError> {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    limits.check_size(bytes.len())?;
    let wasm = wat::parse_bytes(bytes).map_err(|_| not_wasm_nor_wat())?;
    let shape = limits.check(&wasm)?;
    tracing::debug!(?shape, "module shape within limits");
    if let Some(cache) = cache
        && let Some(module) = cache.load(engine, &sha256)
    {
        return Ok(LoadedModule {
            module,
            sha256,
            cache: CacheOutcome::Hit,
        });
    }
    let module = Module::from_binary(engine, &wasm).map_err(|e| {
        RuntimeError::BadModule(format!(
            "the module does not validate or compile: {}",
            one_line(&e)
        ))
    })?;
    let outcome = match cache {
        Some(cache) => {
            cache.store(&module, &sha256);
            CacheOutcome::Miss
        }
        None => CacheOutcome::Off,
    };
    Ok(LoadedModule {
        module,
        sha256,
        cache: outcome,
    })
}

/// The refusal of bytes that are neither binary Wasm nor WAT text. The parser's own message is
/// left out on purpose: it quotes the line it stopped at, and the bytes may be any file's (a
/// `WASM_PATH` pointing at `/proc/self/environ` would print the environment).
fn not_wasm_nor_wat() -> RuntimeError {
    RuntimeError::BadModule(
        "the module is neither a Wasm binary (no \\0asm header) nor valid WAT text; its content is not quoted here (run `wasm-tools parse` on the file to see where it fails)".into(),
    )
}

/// Hex SHA-256 of module bytes, as reported in `module_sha256`.
pub fn module_sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
