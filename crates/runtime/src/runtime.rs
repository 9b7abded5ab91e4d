//! [`Runtime`]: one engine, its linker and caches; it loads modules and runs tasks on them.
//!
//! A run is planned first ([`Runtime::plan`]: pick the entry, convert the arguments, all without
//! running guest code), then called ([`Runtime::call`]). A caller that enforces time itself (the
//! executor's watchdog) uses the plan's envelope to report a timeout while the call still runs.

use crate::cache::CompiledCache;
use crate::cache_key::CacheLocation;
use crate::classify::{Exit, Failure, classify};
use crate::clock::VirtualClock;
use crate::compile_child::ChildCompiler;
use crate::entry::{self, EntryCall, EntryRequest, INITIALIZE_ENTRY};
use crate::fuel::FuelBudget;
use crate::limiter::TaskLimiter;
use crate::module::LoadedModule;
use crate::sandbox::{HostState, wasi_context};
use crate::{
    EngineOptions, EpochTicker, Interruption, ModuleLimits, OutputCapture, RuntimeError, convert,
};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use wasm_exec_task::{ErrorInfo, ResultEnvelope};
use wasmtime::{Engine, Linker, Store, UpdateDeadline, Val};

/// Limits for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLimits {
    /// Wall-clock limit of instantiation plus the call (`TIMEOUT_SEC`).
    pub timeout: Duration,
    /// Bytes all linear memories and tables of the task may take together (`MAX_MEMORY_MB`).
    pub max_memory_bytes: usize,
    /// Instruction budget (`FUEL`); needs an engine with fuel metering.
    pub fuel: Option<u64>,
    /// Bytes kept of stdout and of stderr each (`MAX_OUTPUT_BYTES`).
    pub max_output_bytes: usize,
    /// Time the task already used before the run (compiling its module), counted against
    /// `timeout`.
    pub spent: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            max_memory_bytes: 256 << 20,
            fuel: None,
            max_output_bytes: 1 << 20,
            spent: Duration::ZERO,
        }
    }
}

/// One task to run on a loaded module.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Which entry, with which arguments.
    pub entry: EntryRequest,
    /// Bytes the guest reads on stdin (the input document's text).
    pub stdin: Vec<u8>,
    /// The limits.
    pub limits: RunLimits,
    /// Stops the run when set (checked at every epoch tick).
    pub cancel: crate::CancelFlag,
}

/// A run ready to be called: the entry is chosen and the arguments converted.
#[derive(Debug, Clone)]
pub struct Plan {
    call: EntryCall,
    params: Vec<Val>,
    envelope: ResultEnvelope,
}

impl Plan {
    /// The result document so far (entry, args, module digest): the base of any outcome.
    pub fn envelope(&self) -> &ResultEnvelope {
        &self.envelope
    }
}

/// Output captures for one run, shared with whoever wants to read them while it runs.
#[derive(Debug, Clone)]
pub struct Captures {
    /// The guest's stdout.
    pub stdout: OutputCapture,
    /// The guest's stderr.
    pub stderr: OutputCapture,
}

impl Captures {
    /// Fresh captures bounded by `limits.max_output_bytes` each.
    pub fn new(limits: &RunLimits) -> Self {
        Self {
            stdout: OutputCapture::new(limits.max_output_bytes),
            stderr: OutputCapture::new(limits.max_output_bytes),
        }
    }

    /// Copies what was captured so far into `envelope`.
    pub fn fill(&self, envelope: &mut ResultEnvelope) {
        let (stdout, out_cut) = self.stdout.snapshot();
        let (stderr, err_cut) = self.stderr.snapshot();
        envelope.stdout = stdout;
        envelope.stderr = stderr;
        envelope.truncated = out_cut || err_cut;
    }
}

/// The engine and everything shared between runs.
pub struct Runtime {
    engine: Engine,
    options: EngineOptions,
    linker: Linker<HostState>,
    cache: Option<CompiledCache>,
    /// The largest module shape accepted for compilation.
    module_limits: ModuleLimits,
    /// Compiles in a child process that the deadline can kill, when set.
    compiler: Option<ChildCompiler>,
    /// Keeps the epoch advancing while the runtime lives (epoch interruption only).
    _ticker: Option<EpochTicker>,
}

impl Runtime {
    /// Creates the engine for `options`, with a compiled-module cache under `cache_dir` if given,
    /// its key beside it ([`CacheLocation::beside`]).
    pub fn new(options: EngineOptions, cache_dir: Option<&Path>) -> Result<Self, RuntimeError> {
        let location = cache_dir.map(CacheLocation::beside);
        Self::with_cache(options, location.as_ref())
    }

    /// Creates the engine for `options`, with the compiled-module cache at `cache` if given; an
    /// unsafe cache directory or key is an `io` error naming the fix.
    pub fn with_cache(
        options: EngineOptions,
        cache: Option<&CacheLocation>,
    ) -> Result<Self, RuntimeError> {
        let engine = options.engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut HostState| &mut state.wasi)
            .and_then(|()| crate::poll::add_to_linker(&mut linker))
            .map_err(|e| RuntimeError::Io(format!("setting up WASI: {e:#}")))?;
        let cache = cache
            .map(|location| CompiledCache::open(location, &options.fingerprint(&engine)))
            .transpose()
            .map_err(RuntimeError::Io)?;
        let ticker = match options.interruption {
            Interruption::Epoch => Some(
                EpochTicker::start(&engine)
                    .map_err(|e| RuntimeError::Io(format!("starting the epoch ticker: {e}")))?,
            ),
            Interruption::External => None,
        };
        Ok(Self {
            engine,
            options,
            linker,
            cache,
            module_limits: ModuleLimits::default(),
            compiler: None,
            _ticker: ticker,
        })
    }

    /// Replaces the module limits (default: [`ModuleLimits::default`]).
    pub fn with_module_limits(mut self, limits: ModuleLimits) -> Self {
        self.module_limits = limits;
        self
    }

    /// The engine options this runtime was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Compiles in child processes started by `compiler` from now on, so that a compile can be
    /// stopped at the task's deadline and its memory is capped (see [`crate::compile_child`]).
    pub fn with_child_compiler(mut self, compiler: ChildCompiler) -> Self {
        self.compiler = Some(compiler);
        self
    }

    /// Checks the shape of `bytes` (binary Wasm or WAT text) against the module limits, then
    /// compiles it, or loads the compiled code from the cache.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedModule, RuntimeError> {
        self.load_within(bytes, Instant::now(), None)
    }

    /// [`Runtime::load`] within a task's time: with a child compiler, a compile still running
    /// when `time_limit` (counted from `started`) runs out is killed, a `timeout`.
    pub fn load_within(
        &self,
        bytes: &[u8],
        started: Instant,
        time_limit: Option<Duration>,
    ) -> Result<LoadedModule, RuntimeError> {
        let loader = crate::module::Loader {
            engine: &self.engine,
            options: &self.options,
            cache: self.cache.as_ref(),
            limits: &self.module_limits,
            compiler: self.compiler.as_ref(),
        };
        loader.load(bytes, started, time_limit)
    }

    /// Chooses the entry and converts the arguments; any error comes back as a failed envelope.
    pub fn plan(
        &self,
        module: &LoadedModule,
        request: &RunRequest,
    ) -> Result<Plan, Box<ResultEnvelope>> {
        let mut envelope = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Io, "");
        envelope.error = None;
        envelope.module_sha256 = Some(module.sha256_hex());
        let fail = |mut envelope: ResultEnvelope, e: RuntimeError| {
            envelope.error = Some(ErrorInfo::new(e.kind(), e.to_string()));
            envelope
        };
        let call = match entry::resolve(&module.module, &request.entry) {
            Ok(call) => call,
            Err(e) => {
                envelope.entry = request.entry.named.clone();
                envelope.args = request.entry.args.clone().unwrap_or_default();
                return Err(Box::new(fail(envelope, e)));
            }
        };
        envelope.entry = Some(call.name.clone());
        envelope.args = call.args.clone();
        match convert_args(&call) {
            Ok(params) => Ok(Plan {
                call,
                params,
                envelope,
            }),
            Err(e) => Err(Box::new(fail(envelope, e))),
        }
    }

    /// Plans and calls in one go, on a fresh thread with enough native stack for the Wasm stack.
    pub fn run(&self, module: &LoadedModule, request: &RunRequest) -> ResultEnvelope {
        let plan = match self.plan(module, request) {
            Ok(plan) => plan,
            Err(envelope) => return *envelope,
        };
        let captures = Captures::new(&request.limits);
        self.call_on_task_thread(module, &plan, request, &captures)
    }

    /// [`call`](Self::call) on a fresh thread with enough native stack for the Wasm stack limit.
    pub fn call_on_task_thread(
        &self,
        module: &LoadedModule,
        plan: &Plan,
        request: &RunRequest,
        captures: &Captures,
    ) -> ResultEnvelope {
        let stack = crate::engine::native_stack_size(&self.options);
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("wasm-task".into())
                .stack_size(stack)
                .spawn_scoped(scope, || self.call(module, plan, request, captures));
            match worker.map(|handle| handle.join()) {
                Ok(Ok(envelope)) => envelope,
                Ok(Err(_)) => failed(
                    plan.envelope(),
                    RuntimeError::Io("the task thread panicked".into()),
                ),
                Err(e) => failed(
                    plan.envelope(),
                    RuntimeError::Io(format!("starting the task thread: {e}")),
                ),
            }
        })
    }

    /// Instantiates the module and calls the planned entry under the request's limits.
    ///
    /// Runs on the current thread, which must have at least
    /// [`native_stack_size`](crate::native_stack_size) bytes of stack.
    pub fn call(
        &self,
        module: &LoadedModule,
        plan: &Plan,
        request: &RunRequest,
        captures: &Captures,
    ) -> ResultEnvelope {
        let limits = &request.limits;
        let started = Instant::now();
        let (mut store, fuel) = self.store(module, request, captures);
        let mut results = vec![Val::I32(0); plan.call.ty.results().len()];
        let outcome = self
            .linker
            .instantiate(&mut store, &module.module)
            .map_err(|e| classify(e, limits, true))
            .and_then(|instance| call_entry(&mut store, &instance, plan, limits, &mut results));
        let mut envelope = plan.envelope.clone();
        envelope.duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        envelope.fuel_consumed = fuel.map(|f| f.consumed(&store));
        captures.fill(&mut envelope);
        settle(&mut envelope, outcome, &results, plan.call.is_command());
        // How far a guest got before its wall-clock deadline depends on the host's speed, so the
        // fuel it used then is no result: unknown (null), as the executor's watchdog reports it,
        // and the result_hash of a timeout is the same on every host.
        if envelope.kind() == Some(wasm_exec_task::ErrorKind::Timeout) {
            envelope.fuel_consumed = None;
        }
        envelope
    }

    /// A store for one run: the guest's WASI view, its memory limiter, its fuel budget (returned,
    /// when metered) and its epoch deadline.
    fn store(
        &self,
        module: &LoadedModule,
        request: &RunRequest,
        captures: &Captures,
    ) -> (Store<HostState>, Option<FuelBudget>) {
        let limits = &request.limits;
        let clock = VirtualClock::default();
        let wasi = wasi_context(
            &request.stdin,
            &captures.stdout,
            &captures.stderr,
            &module.sha256,
            &clock,
        );
        let limiter = TaskLimiter::new(limits.max_memory_bytes);
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                clock,
                limiter,
            },
        );
        store.limiter(|state| &mut state.limiter);
        let fuel = self
            .options
            .fuel_metering
            .then(|| FuelBudget::install(&mut store, limits.fuel.unwrap_or(u64::MAX)));
        if self.options.interruption == Interruption::Epoch {
            // Called at every tick: stops a cancelled run at once, and any run once its ticks
            // are spent (the time limit: `Trap::Interrupt`, as `epoch_deadline_trap` gives).
            let mut ticks = EpochTicker::ticks_for(limits.timeout.saturating_sub(limits.spent));
            let cancel = request.cancel.clone();
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if cancel.is_cancelled() {
                    return Err(wasmtime::Error::new(crate::cancel::Stopped));
                }
                ticks = ticks.saturating_sub(1);
                Ok(if ticks == 0 {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Continue(1)
                })
            });
        }
        (store, fuel)
    }
}

/// Runs a reactor's `_initialize` (once), then the planned entry, into `results`.
fn call_entry(
    store: &mut Store<HostState>,
    instance: &wasmtime::Instance,
    plan: &Plan,
    limits: &RunLimits,
    results: &mut [Val],
) -> Result<(), Failure> {
    if !plan.call.is_command()
        && let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, INITIALIZE_ENTRY)
    {
        init.call(&mut *store, ())
            .map_err(|e| classify(e, limits, false))?;
    }
    let func = instance
        .get_func(&mut *store, &plan.call.name)
        .ok_or_else(|| {
            RuntimeError::EntryNotFound(format!("entry \"{}\" vanished", plan.call.name))
        })?;
    func.call(&mut *store, &plan.params, results)
        .map_err(|e| classify(e, limits, false))
}

/// Fills `envelope` from how the call ended: its results, or its exit status, or its error.
fn settle(
    envelope: &mut ResultEnvelope,
    outcome: Result<(), Failure>,
    results: &[Val],
    command: bool,
) {
    match outcome {
        Ok(()) => {
            envelope.ok = true;
            envelope.result = convert::results_to_json(results);
            if command {
                envelope.exit_code = Some(0);
            }
        }
        Err(Exit(0)) => {
            envelope.ok = true;
            envelope.exit_code = Some(0);
        }
        Err(e) => {
            if let Exit(code) = e {
                envelope.exit_code = Some(code);
            }
            let e = e.into_error();
            envelope.error = Some(ErrorInfo::new(e.kind(), e.to_string()));
        }
    }
}

/// A failed copy of `base`.
pub fn failed(base: &ResultEnvelope, error: RuntimeError) -> ResultEnvelope {
    let mut envelope = base.clone();
    envelope.ok = false;
    envelope.error = Some(ErrorInfo::new(error.kind(), error.to_string()));
    envelope
}

fn convert_args(call: &EntryCall) -> Result<Vec<Val>, RuntimeError> {
    if call.is_command() {
        // A command takes no parameters: its arguments reach it inside the document on stdin.
        return Ok(Vec::new());
    }
    let params: Vec<_> = call.ty.params().collect();
    if params.len() != call.args.len() {
        return Err(RuntimeError::BadInput(format!(
            "{} takes {} argument(s), got {}: {}; fix \"args\" in the input",
            entry::signature(&call.name, &call.ty),
            params.len(),
            call.args.len(),
            Value::Array(call.args.clone()),
        )));
    }
    params
        .iter()
        .zip(&call.args)
        .enumerate()
        .map(|(i, (ty, arg))| {
            convert::to_val(arg, ty).map_err(|why| {
                RuntimeError::BadInput(format!(
                    "argument {} of {}: {why}",
                    i + 1,
                    entry::signature(&call.name, &call.ty)
                ))
            })
        })
        .collect()
}
