//! The local backend: runs tasks in-process with the runtime library, off the async workers.
//!
//! One engine per metering mode is shared by all tasks (fuel metering slows guests, so it is
//! compiled in only for the engine that serves tasks with a `fuel` limit); each task gets its own
//! store and limits. Epoch interruption enforces the time limit, since the host must outlive the
//! guest. Compiled modules are kept in memory (bounded, least recently used first out) and, with
//! a cache directory, on disk, so a module is compiled once per process. Compiling counts against
//! the task's time; with a child compiler (the binary's default) it runs in a process of its own,
//! killed when that time runs out and capped in memory, since wasmtime cannot stop a compile.

use super::Backend;
use crate::metrics::Metrics;
use async_trait::async_trait;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasm_exec_runtime::{
    CancelFlag, ChildCompiler, EngineOptions, Interruption, LoadedModule, RunLimits, Runtime,
};
use wasm_exec_task::{CheckedTask, ErrorKind, ResultEnvelope};

/// Runs tasks in this process, on its own pool of threads sized for the Wasm stack.
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
    /// Hands work to the pool; the threads end when the last sender is dropped.
    jobs: std::sync::mpsc::Sender<Work>,
}

/// One unit of work for a pool thread.
type Work = Box<dyn FnOnce() + Send>;

struct Inner {
    plain: Engine,
    metered: Engine,
    metrics: Arc<Metrics>,
    /// The cancel flag of each task running (or cancelled before its run began).
    flags: Mutex<HashMap<String, CancelFlag>>,
}

/// One runtime with its compiled-module cache.
struct Engine {
    runtime: Runtime,
    compiled: Mutex<LruCache<[u8; 32], LoadedModule>>,
}

/// Compiled modules kept in memory per engine.
const COMPILED_IN_MEMORY: usize = 64;

impl LocalBackend {
    /// Creates the engines and `threads` pool threads (the most tasks that can run at once);
    /// compiled code is also cached on disk under `cache_dir` if given, and compiled by
    /// `compiler`'s child processes if given (in the pool thread otherwise).
    ///
    /// The pool's threads have stacks sized for the Wasm stack limit, so guests run on them
    /// directly: off the async runtime's threads, and with no thread created per task.
    pub fn new(
        cache_dir: Option<PathBuf>,
        metrics: Arc<Metrics>,
        threads: usize,
        compiler: Option<ChildCompiler>,
    ) -> anyhow::Result<Self> {
        let engine = |fuel_metering| -> anyhow::Result<Engine> {
            let options = EngineOptions {
                interruption: Interruption::Epoch,
                fuel_metering,
                ..EngineOptions::default()
            };
            let dir = cache_dir.as_ref().map(|d| d.join("compiled"));
            let mut runtime = Runtime::new(options, dir.as_deref())?;
            if let Some(compiler) = &compiler {
                runtime = runtime.with_child_compiler(compiler.clone());
            }
            Ok(Engine {
                runtime,
                compiled: Mutex::new(LruCache::new(
                    NonZeroUsize::new(COMPILED_IN_MEMORY).unwrap_or(NonZeroUsize::MIN),
                )),
            })
        };
        let (jobs, queue) = std::sync::mpsc::channel::<Work>();
        let queue = Arc::new(Mutex::new(queue));
        let stack = wasm_exec_runtime::native_stack_size(&EngineOptions::default());
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("wasm-{n}"))
                .stack_size(stack)
                .spawn(move || {
                    loop {
                        // The lock is held only to take one job, never while running it.
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            // A panic fails that one task (its reply is dropped), not the thread.
                            Ok(work) => {
                                let _ =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                            }
                            Err(_) => break,
                        }
                    }
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                plain: engine(false)?,
                metered: engine(true)?,
                metrics,
                flags: Mutex::default(),
            }),
            jobs,
        })
    }
}

impl Inner {
    /// The task's cancel flag, made on first use (a cancel may come before the run).
    fn flag(&self, task_id: &str) -> CancelFlag {
        let mut flags = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        flags.entry(task_id.to_owned()).or_default().clone()
    }

    fn run_blocking(
        &self,
        task: &CheckedTask,
        module: &[u8],
        cancel: CancelFlag,
    ) -> ResultEnvelope {
        let engine = if task.limits.fuel.is_some() {
            &self.metered
        } else {
            &self.plain
        };
        let started = Instant::now();
        let loaded = match engine.load(module, &self.metrics, started, task.limits.timeout) {
            Ok(loaded) => loaded,
            Err(e) => {
                let mut envelope = ResultEnvelope::failure(e.kind(), e.to_string());
                envelope.module_sha256 = Some(wasm_exec_runtime::module_sha256_hex(module));
                return envelope;
            }
        };
        let limits = &task.limits;
        let limits = RunLimits {
            timeout: limits.timeout,
            max_memory_bytes: usize::try_from(limits.max_memory_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            fuel: limits.fuel,
            max_output_bytes: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
            spent: started.elapsed(),
        };
        let add_fallback = [serde_json::json!(5), serde_json::json!(7)];
        let entry = task.spec.entry.as_deref();
        match engine
            .runtime
            .prepare(&loaded, &task.input, entry, add_fallback, limits)
        {
            // Runs on a pool thread, whose stack is sized for the Wasm stack limit.
            Ok(mut prepared) => {
                prepared.request.cancel = cancel;
                engine.runtime.run_prepared(&loaded, &prepared)
            }
            Err(envelope) => *envelope,
        }
    }
}

impl Engine {
    /// The compiled module, from memory, the disk cache, or compiled now within the task's
    /// `time_limit` from `started`.
    fn load(
        &self,
        bytes: &[u8],
        metrics: &Metrics,
        started: Instant,
        time_limit: std::time::Duration,
    ) -> Result<LoadedModule, wasm_exec_runtime::RuntimeError> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = compiled.get(&key) {
            metrics.record_cache(true);
            return Ok(module.clone());
        }
        drop(compiled);
        let module = self.runtime.load_within(bytes, started, Some(time_limit))?;
        metrics.record_cache(module.cache == wasm_exec_runtime::CacheOutcome::Hit);
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.put(key, module.clone());
        Ok(module)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn run(&self, task: &CheckedTask, module: Arc<Vec<u8>>) -> ResultEnvelope {
        // Wasm blocks its thread: run it on the pool, never on an async worker.
        let (inner, task) = (self.inner.clone(), task.clone());
        let cancel = inner.flag(task.id());
        let (reply, result) = tokio::sync::oneshot::channel();
        let work: Work = Box::new(move || {
            let result = inner.run_blocking(&task, &module, cancel);
            let mut flags = inner.flags.lock().unwrap_or_else(|p| p.into_inner());
            flags.remove(task.id());
            drop(flags);
            let _ = reply.send(result);
        });
        if self.jobs.send(work).is_err() {
            return ResultEnvelope::failure(
                ErrorKind::Io,
                "the local backend's threads have stopped",
            );
        }
        result.await.unwrap_or_else(|_| {
            ResultEnvelope::failure(ErrorKind::Io, "the task's thread failed while running it")
        })
    }

    async fn cancel(&self, task_id: &str) {
        self.inner.flag(task_id).cancel();
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
