//! What a guest sees of the world: a WASI context with nothing of the host in it, and a
//! resource limiter for its memory and tables.
//!
//! No environment variables, no arguments but the program name, no preopened directories, no
//! sockets or name lookups. Clocks and randomness are deterministic, so the same module and input
//! give the same bits on every machine: the wall clock reads 2000-01-01T00:00:00Z, the monotonic
//! clock advances one microsecond per reading, and `random_get` returns a fixed stream derived
//! from the module digest (not secret; a guest needing secrets has no place in a replicated
//! computation).

use crate::OutputCapture;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the time every guest sees.
const FIXED_WALL_CLOCK_SECS: u64 = 946_684_800;

/// Per-store host state: the WASI context and the limiter.
pub struct HostState {
    /// WASI preview 1 context, built by [`wasi_context`].
    pub wasi: WasiP1Ctx,
    /// Memory and table limits for this store.
    pub limiter: TaskLimiter,
}

/// Builds the guest's WASI context: stdin from `stdin`, stdout and stderr into the captures.
pub fn wasi_context(
    stdin: &[u8],
    stdout: &OutputCapture,
    stderr: &OutputCapture,
    module_sha256: &[u8; 32],
) -> WasiP1Ctx {
    let seed: Vec<u8> = (0u8..32)
        .flat_map(|block| {
            Sha256::new()
                .chain_update(b"wasm-exec random")
                .chain_update(module_sha256)
                .chain_update([block])
                .finalize()
        })
        .collect();
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdin(MemoryInputPipe::new(stdin.to_vec()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .arg("module.wasm")
        .allow_blocking_current_thread(true)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(FixedWallClock)
        .monotonic_clock(SteppingMonotonicClock::default())
        .secure_random(Deterministic::new(seed.clone()))
        .insecure_random(Deterministic::new(seed))
        .insecure_random_seed(0);
    builder.build_p1()
}

/// A wall clock stopped at [`FIXED_WALL_CLOCK_SECS`].
struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_WALL_CLOCK_SECS)
    }
}

/// A monotonic clock that advances one microsecond per reading: time moves forward, the same way
/// on every run.
#[derive(Default)]
struct SteppingMonotonicClock {
    nanos: AtomicU64,
}

impl HostMonotonicClock for SteppingMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.nanos.fetch_add(1_000, Ordering::Relaxed) + 1_000
    }
}

/// Caps a store's linear memory and tables; exceeding a cap traps with [`LimitExceeded`].
///
/// Growth beyond the cap is a trap rather than a `memory.grow` result of -1 so that the outcome is
/// an unambiguous `out_of_memory` instead of whatever the guest's allocator does on failure.
#[derive(Debug, Clone)]
pub struct TaskLimiter {
    /// Largest size of any one linear memory, in bytes.
    pub max_memory_bytes: usize,
    /// Largest number of elements of any one table.
    pub max_table_elements: usize,
}

/// The error a guest traps with when it grows past a [`TaskLimiter`] cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest tried to grow its {what} to {desired} {unit}, past the limit of {limit} {unit} (MAX_MEMORY_MB); raise the limit or make the guest use less"
)]
pub struct LimitExceeded {
    /// `linear memory` or `table`.
    pub what: &'static str,
    /// The size asked for.
    pub desired: usize,
    /// The cap.
    pub limit: usize,
    /// `bytes` or `elements`.
    pub unit: &'static str,
}

/// Most table elements a store may have when memory is capped at `max_memory_bytes`: each element
/// is a pointer, so tables get the same budget in bytes, at least 10,000 elements.
pub fn table_elements_for(max_memory_bytes: usize) -> usize {
    (max_memory_bytes / 8).max(10_000)
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "linear memory",
                desired,
                limit: self.max_memory_bytes,
                unit: "bytes",
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "table",
                desired,
                limit: self.max_table_elements,
                unit: "elements",
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        16
    }
}
