//! What a guest sees of the world: a WASI context with nothing of the host in it.
//!
//! No environment variables, no arguments but the program name, no preopened directories, no
//! sockets or name lookups. Clocks and randomness are deterministic, so the same module and input
//! give the same bits on every machine: the clocks are virtual ([`clock`](crate::clock)), and
//! `random_get` returns a fixed stream derived from the module digest (not secret; a guest needing
//! secrets has no place in a replicated computation). Nothing blocks on the host: stdin is an
//! in-memory document, output goes to bounded captures, and sleeps advance virtual time.

use crate::OutputCapture;
use crate::clock::{FixedWallClock, VirtualClock};
use crate::limiter::TaskLimiter;
use sha2::{Digest, Sha256};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{Deterministic, WasiCtxBuilder};

/// Per-store host state: the WASI context, the virtual clock and the limiter.
pub struct HostState {
    /// WASI preview 1 context, built by [`wasi_context`].
    pub wasi: WasiP1Ctx,
    /// The guest's monotonic time, also read by the WASI context's clock.
    pub clock: VirtualClock,
    /// The memory budget of this store, shared by its memories and tables.
    pub limiter: TaskLimiter,
}

/// Builds the guest's WASI context: stdin from `stdin`, stdout and stderr into the captures, the
/// monotonic clock reading `clock`.
pub fn wasi_context(
    stdin: &[u8],
    stdout: &OutputCapture,
    stderr: &OutputCapture,
    module_sha256: &[u8; 32],
    clock: &VirtualClock,
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
        .monotonic_clock(clock.clone())
        .secure_random(Deterministic::new(seed.clone()))
        .insecure_random(Deterministic::new(seed))
        .insecure_random_seed(0);
    builder.build_p1()
}
