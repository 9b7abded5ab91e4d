//! The wasmtime engine configuration: determinism, limits and how a timeout is enforced.
//!
//! One [`EngineOptions`] gives one engine; its [`fingerprint`](EngineOptions::fingerprint) keys
//! the compiled-module cache, since compiled code depends on every choice made here.

use crate::RuntimeError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use wasmtime::{Config, Engine, OptLevel};

/// How a wall-clock limit is enforced on running Wasm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interruption {
    /// Compiled code checks an epoch counter at function entries and loop heads; a ticker thread
    /// advances it, so a running guest stops at its deadline within one tick. Needed in-process,
    /// where the host must survive the guest. Costs call-heavy guests about a third of their speed.
    Epoch,
    /// No checks in compiled code: the caller enforces the limit itself, e.g. the executor's
    /// watchdog thread that reports `timeout` and ends the whole process. Full speed.
    External,
}

/// Engine settings that change compiled code (and so the cache key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    /// How the wall-clock limit is enforced.
    pub interruption: Interruption,
    /// Whether fuel metering is compiled in (needed for `FUEL`; it slows guests down).
    pub fuel_metering: bool,
    /// Largest Wasm call stack, in bytes; deeper recursion traps with `call stack exhausted`.
    /// Callers must run guests on a thread with at least this much more native stack.
    pub max_wasm_stack: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            interruption: Interruption::Epoch,
            fuel_metering: false,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
        }
    }
}

/// Default Wasm stack limit: 1 MiB, enough for ordinary recursion, far below a thread's stack.
pub const DEFAULT_MAX_WASM_STACK: usize = 1 << 20;

/// Native stack to give a thread that runs guests: the Wasm stack plus room for host frames.
pub fn native_stack_size(options: &EngineOptions) -> usize {
    options.max_wasm_stack + (4 << 20)
}

impl EngineOptions {
    /// Builds a wasmtime `Config` for these options.
    ///
    /// Determinism (the network compares results across machines): NaNs are canonicalised, relaxed
    /// SIMD is deterministic, threads and shared memory are off. Features on: the Wasm 2.0 set
    /// (multi-value, bulk memory, reference types, SIMD, sign extension, non-trapping conversions)
    /// plus relaxed SIMD, tail calls, extended constants and multi-memory; off: threads, memory64,
    /// GC, exceptions, component model.
    pub fn config(&self) -> Config {
        // Wasm threads are not compiled into our wasmtime build (no `threads` feature): off.
        let mut config = Config::new();
        config
            .cranelift_opt_level(OptLevel::Speed)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .shared_memory(false)
            .wasm_simd(true)
            .wasm_relaxed_simd(true)
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .wasm_tail_call(true)
            .wasm_extended_const(true)
            .wasm_multi_memory(true)
            .wasm_memory64(false)
            .max_wasm_stack(self.max_wasm_stack)
            // Never used (no async calls), but wasmtime refuses a Wasm stack above it (2 MiB by
            // default), which made MAX_WASM_STACK_KB over 2048 an engine error.
            .async_stack_size(native_stack_size(self))
            .epoch_interruption(self.interruption == Interruption::Epoch)
            .consume_fuel(self.fuel_metering)
            // Smaller compiled code (the Go module's entry: 1.0 MB of its 10 MB was the address
            // map, 0.23 MB the unwind tables). The address map gives trap frames their byte
            // offsets in the module, which no message uses (frames are named by function:
            // `classify`); the unwind tables serve only native unwinders and profilers, never
            // wasmtime's own backtraces or traps.
            .generate_address_map(false)
            .native_unwind_info(false);
        config
    }

    /// Creates the engine.
    pub fn engine(&self) -> Result<Engine, RuntimeError> {
        Engine::new(&self.config())
            .map_err(|e| RuntimeError::Io(format!("creating the wasmtime engine: {e:#}")))
    }

    /// A hex digest of everything that shapes compiled code: these options, the wasmtime version
    /// and the engine's own compatibility hash (target, CPU features, settings).
    pub fn fingerprint(&self, engine: &Engine) -> String {
        let mut hasher = DigestHasher(Sha256::new());
        "wasm-exec engine v1".hash(&mut hasher);
        self.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hex::encode(hasher.0.finalize())
    }
}

/// Feeds `Hash` output into SHA-256, so the fingerprint is stable across processes.
pub(crate) struct DigestHasher(pub(crate) Sha256);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        // Only `write` is used: the fingerprint is the SHA-256 digest, not this value.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_depends_on_options() {
        let a = EngineOptions::default();
        let b = EngineOptions {
            fuel_metering: true,
            ..a
        };
        let (ea, eb) = (a.engine().unwrap(), b.engine().unwrap());
        assert_eq!(a.fingerprint(&ea), a.fingerprint(&a.engine().unwrap()));
        assert_ne!(a.fingerprint(&ea), b.fingerprint(&eb));
    }
}
