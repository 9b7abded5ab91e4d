//! Loading a module: the shape check, then the compiled-module cache or the compiler.

use crate::cache::CompiledCache;
use crate::classify::one_line;
use crate::compile_child::ChildCompiler;
use crate::{EngineOptions, ModuleLimits, RuntimeError, entry};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
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

/// What loading a module needs from the runtime.
pub(crate) struct Loader<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) options: &'a EngineOptions,
    pub(crate) cache: Option<&'a CompiledCache>,
    pub(crate) limits: &'a ModuleLimits,
    /// Compiles in a child process when set; in this thread otherwise.
    pub(crate) compiler: Option<&'a ChildCompiler>,
}

impl Loader<'_> {
    /// Checks the shape of `bytes` (binary Wasm or WAT text) against the module limits, then
    /// compiles it, or loads the compiled code from the cache. A child compiler is stopped when
    /// `time_limit` (from `started`) runs out.
    pub(crate) fn load(
        &self,
        bytes: &[u8],
        started: Instant,
        time_limit: Option<Duration>,
    ) -> Result<LoadedModule, RuntimeError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        self.limits.check_size(bytes.len())?;
        let wasm = wat::parse_bytes(bytes).map_err(|_| not_wasm_nor_wat())?;
        // An entry is stored only for a module that passed the shape check under these very
        // limits (its cache id covers them), so a hit needs no second pass over every operator,
        // which was most of a warm start of a big module.
        let cache_id = cache_id(&sha256, self.limits);
        if let Some(cache) = self.cache
            && let Some(module) = cache.load(self.engine, &cache_id)
        {
            return Ok(LoadedModule {
                module,
                sha256,
                cache: CacheOutcome::Hit,
            });
        }
        let shape = self.limits.check(&wasm)?;
        tracing::debug!(?shape, "module shape within limits");
        let (module, code) = match self.compiler {
            Some(compiler) => {
                let code = compiler.compile(self.options, &wasm, started, time_limit)?;
                (deserialize_own(self.engine, &code)?, Some(code))
            }
            None => (
                Module::from_binary(self.engine, &wasm).map_err(|e| {
                    RuntimeError::BadModule(format!(
                        "the module does not validate or compile: {}",
                        one_line(&e)
                    ))
                })?,
                None,
            ),
        };
        let outcome = match self.cache {
            Some(cache) => {
                match code {
                    Some(code) => cache.store_serialized(&code, &cache_id),
                    None => cache.store(&module, &cache_id),
                }
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
}

/// The refusal of bytes that are neither binary Wasm nor WAT text. The parser's own message is
/// left out on purpose: it quotes the line it stopped at, and the bytes may be any file's (a
/// `WASM_PATH` pointing at `/proc/self/environ` would print the environment).
fn not_wasm_nor_wat() -> RuntimeError {
    RuntimeError::BadModule(
        "the module is neither a Wasm binary (no \\0asm header) nor valid WAT text; its content is not quoted here (run `wasm-tools parse` on the file to see where it fails)".into(),
    )
}

/// Loads code that our own compiler process just made.
#[allow(unsafe_code)]
fn deserialize_own(engine: &Engine, code: &[u8]) -> Result<Module, RuntimeError> {
    // SAFETY: `Module::deserialize` requires bytes made by `Engine::precompile_module` or
    // `Module::serialize` with compatible settings. These come from our own executable
    // (`compile_child::serve`, the same build and options) over a pipe only the two processes
    // hold; wasmtime re-checks the version and settings itself.
    unsafe { Module::deserialize(engine, code) }.map_err(|e| {
        RuntimeError::Io(format!(
            "loading the compiler process's code: {}",
            one_line(&e)
        ))
    })
}

/// The compiled-module cache's name for a module checked under `limits`: the SHA-256 of the
/// module's digest and the limits, so an entry stands for "this module, shape-checked under these
/// limits" and other limits never find it.
fn cache_id(module_sha256: &[u8; 32], limits: &ModuleLimits) -> [u8; 32] {
    use std::hash::Hash;
    let mut hasher = crate::engine::DigestHasher(Sha256::new());
    "wasm-exec cache id v1".hash(&mut hasher);
    module_sha256.hash(&mut hasher);
    limits.hash(&mut hasher);
    hasher.0.finalize().into()
}

/// Hex SHA-256 of module bytes, as reported in `module_sha256`.
pub fn module_sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
