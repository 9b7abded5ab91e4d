//! `executor`: runs one Wasm task from environment variables (or flags) and reports its result
//! document, as inside every Kubernetes Job.
//!
//! Steps: validate the configuration, start the watchdog, read the input and the module, compile
//! (or load from WASM_CACHE_DIR), pick the entry, call it on a thread with a known stack, report.
//! Every failure after the configuration is parsed still produces a result document.

mod config;
mod output;
mod report;
mod watchdog;

use anyhow::Context;
use clap::Parser;
use config::{Config, Enforcement, Settings};
use output::{GateWriter, OutputGate};
use report::Reporter;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_exec_runtime::{
    LoadedModule, ModuleLimits, RunLimits, Runtime, RuntimeError, native_stack_size,
};
use wasm_exec_task::{ErrorKind, ResultEnvelope, TaskInput};
use watchdog::Watchdog;

/// The static (musl) build's allocator: musl's own makes compiling a module markedly slower.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Extra time the watchdog allows when epoch interruption is meant to stop the guest first.
const EPOCH_BACKSTOP: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let started = Instant::now();
    let config = Config::parse();
    if config.compile_module {
        return wasm_exec_runtime::compile_child::serve();
    }
    let gate = OutputGate::new(config.log_stream);
    init_logging(&gate);
    let reporter = Arc::new(Reporter::new(
        config.output_path.clone(),
        config.termination_message_path().map(Path::to_path_buf),
        gate,
    ));
    let envelope = execute(&config, &reporter, started);
    let code = reporter.report(envelope).unwrap_or(0);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Logs through `gate` (to LOG_STREAM, never after the result line), filtered by `RUST_LOG`
/// (default `info`). A panic is logged the same way instead of on stderr, so it cannot land
/// after the result either.
fn init_logging(gate: &Arc<OutputGate>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(GateWriter(gate.clone()))
        .with_ansi(false)
        .init();
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("executor panicked: {info}")
    }));
}

/// Runs the task to a result document; never panics on bad input.
fn execute(config: &Config, reporter: &Arc<Reporter>, started: Instant) -> ResultEnvelope {
    let settings = match config.settings() {
        Ok(settings) => settings,
        Err(e) => return failure(&e, ErrorKind::BadInput),
    };
    let backstop = match config.timeout_enforcement {
        Enforcement::Watchdog => Duration::ZERO,
        Enforcement::Epoch => EPOCH_BACKSTOP,
    };
    let watchdog = match Watchdog::start(
        reporter.clone(),
        started + settings.limits.timeout + backstop,
        settings.limits.timeout,
    ) {
        Ok(w) => w,
        Err(e) => {
            return failure(
                &anyhow::Error::from(e).context("starting the watchdog"),
                ErrorKind::Io,
            );
        }
    };
    let input = match TaskInput::parse(&settings.input_text) {
        Ok(input) => input,
        Err(e) => return ResultEnvelope::failure(ErrorKind::BadInput, e.to_string()),
    };
    let (runtime, module) = match load(config, &settings, started) {
        Ok(loaded) => loaded,
        Err(envelope) => return *envelope,
    };
    let loaded_in = started.elapsed();
    let limits = RunLimits {
        spent: loaded_in,
        ..settings.limits
    };
    let prepared = match runtime.prepare(
        &module,
        &input,
        config.entry.as_deref(),
        settings.add_fallback,
        limits,
    ) {
        Ok(prepared) => prepared,
        Err(envelope) => return *envelope,
    };
    watchdog.call_starting(prepared.plan.envelope(), &prepared.captures);
    let envelope = if main_stack_allows(native_stack_size(runtime.options())) {
        runtime.run_prepared(&module, &prepared)
    } else {
        runtime.run_prepared_on_task_thread(&module, &prepared)
    };
    log_outcome(&envelope, module.cache.as_str(), loaded_in);
    envelope
}

/// Reads WASM_PATH (up to the module size limit), creates the runtime and loads the module,
/// compiling it within the time left of TIMEOUT_SEC from `started`.
fn load(
    config: &Config,
    settings: &Settings,
    started: Instant,
) -> Result<(Runtime, LoadedModule), Box<ResultEnvelope>> {
    let limits = ModuleLimits::default();
    let bytes = read_module(&config.wasm_path, limits.max_module_bytes)
        .map_err(|e| Box::new(failure(&e, ErrorKind::Io)))?;
    let refused = |e: RuntimeError| Box::new(ResultEnvelope::failure(e.kind(), e.to_string()));
    limits.check_size(bytes.len()).map_err(refused)?;
    let mut runtime =
        Runtime::with_cache(settings.engine, settings.cache.as_ref()).map_err(refused)?;
    if let Some(compiler) = &settings.compiler {
        runtime = runtime.with_child_compiler(compiler.clone());
    }
    let time_limit = Some(settings.limits.timeout);
    let module = runtime
        .load_within(&bytes, started, time_limit)
        .map_err(|e| {
            let mut envelope = refused(e);
            envelope.module_sha256 = Some(wasm_exec_runtime::module_sha256_hex(&bytes));
            envelope
        })?;
    Ok((runtime, module))
}

/// One log line for the outcome, with whether the compiled code came from the cache and how long
/// the start took until the module was loaded (`load_ms`: reading it, the engine, compiling or
/// the cache); guest output stays in the document.
fn log_outcome(envelope: &ResultEnvelope, cache: &str, loaded_in: Duration) {
    let load_ms = loaded_in.as_secs_f64() * 1000.0;
    match &envelope.error {
        None => tracing::info!(
            entry = envelope.entry.as_deref(),
            duration_ms = envelope.duration_ms,
            cache,
            load_ms,
            "task finished"
        ),
        Some(e) => {
            tracing::info!(entry = envelope.entry.as_deref(), kind = %e.kind, cache, load_ms, "task failed")
        }
    }
}

/// Reads WASM_PATH, but never more than one byte past `max` (the shape check then refuses it), so
/// a huge file or an endless device cannot exhaust memory before any limit applies.
fn read_module(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let context = || format!("reading WASM_PATH \"{}\"", path.display());
    let file = std::fs::File::open(path).with_context(context)?;
    let mut bytes = Vec::new();
    file.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(context)?;
    Ok(bytes)
}

/// Whether the main thread's stack may grow to `needed` bytes (its limit is RLIMIT_STACK), so the
/// guest can run right here instead of on a new thread (which saves a thread per run).
fn main_stack_allows(needed: usize) -> bool {
    // The main thread has used a little of its stack already; keep a generous margin.
    const MARGIN: u64 = 1 << 20;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Stack);
    limit
        .current
        .is_none_or(|soft| soft >= needed as u64 + MARGIN)
}

/// A failed result from an `anyhow` error: `io` if an I/O error caused it, else `fallback`.
fn failure(e: &anyhow::Error, fallback: ErrorKind) -> ResultEnvelope {
    let is_io = e.chain().any(|cause| cause.is::<std::io::Error>());
    let kind = if is_io { ErrorKind::Io } else { fallback };
    ResultEnvelope::failure(kind, format!("{e:#}"))
}
