//! A result cache in front of any backend. Execution is deterministic (the same module bytes,
//! entry, input and limits give the same document, fuel included), so a task identical to one
//! that already finished gets the stored result at once, without a run or a Job.
//!
//! - The key is a SHA-256 over the module's identity, the entry, the input document (JSON with
//!   its keys in order) and every limit. The task id is not in it: the guest never sees it. A
//!   module named by CID is identified by that CID, whose digest the module store has verified
//!   the bytes against ([`ModuleStore`](crate::module::ModuleStore)), so a big module is not
//!   hashed again for each task; a mirror file name names no content, so those bytes are hashed.
//! - Only results that a new run is certain to repeat are stored: successes, and failures whose
//!   kind [`is_deterministic`](wasm_exec_task::ErrorKind::is_deterministic) (a trap, out of
//!   fuel, ...). A timeout, a cancel or a host failure is never stored.
//! - A task with `"cache": false` is neither answered from the cache nor stored in it.
//! - Bounded by the bytes of the stored documents as JSON; the least recently used go first.
//!   Held in memory: a restart starts it empty.

use super::Backend;
use crate::metrics::{Metrics, OutcomeLabel};
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use wasm_exec_task::{CheckedTask, ModuleRef, ResultEnvelope};

/// What a stored result is found by.
type Key = [u8; 32];

/// A backend whose repeated tasks are answered from a bounded cache of finished results.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    store: Mutex<Store>,
    metrics: Arc<Metrics>,
}

/// The cached results, least recently used first out, and their size.
struct Store {
    entries: LruCache<Key, (Arc<ResultEnvelope>, usize)>,
    bytes: usize,
    budget: usize,
}

impl CachedBackend {
    /// `inner` with a cache of at most `budget_bytes` of result documents (as JSON).
    pub fn new(inner: Arc<dyn Backend>, budget_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            store: Mutex::new(Store {
                entries: LruCache::unbounded(),
                bytes: 0,
                budget: budget_bytes,
            }),
            metrics,
        }
    }

    /// The stored result for `key`, if any (it becomes the most recently used).
    fn lookup(&self, key: &Key) -> Option<ResultEnvelope> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let found = store.entries.get(key).map(|(doc, _)| doc.as_ref().clone());
        drop(store);
        let outcome = if found.is_some() { "hit" } else { "miss" };
        self.metrics
            .result_cache
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        found
    }

    /// Stores `result` under `key` when a new run is certain to repeat it, making room by
    /// dropping the least recently used; a document larger than the whole budget is not stored.
    fn store(&self, key: Key, result: &ResultEnvelope) {
        let repeatable = result.ok || result.kind().is_some_and(|k| k.is_deterministic());
        if !repeatable {
            return;
        }
        let size = entry_size(result);
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if size > store.budget {
            return;
        }
        let mut kept = result.clone();
        // The cluster's phases belong to that run; a cached answer has none.
        kept.phases = None;
        if let Some((_, (_, old))) = store.entries.push(key, (Arc::new(kept), size)) {
            store.bytes -= old;
        }
        store.bytes += size;
        while store.bytes > store.budget {
            let Some((_, (_, gone))) = store.entries.pop_lru() else {
                break;
            };
            store.bytes -= gone;
        }
        self.metrics
            .result_cache_entries
            .set(store.entries.len() as i64);
        self.metrics.result_cache_bytes.set(store.bytes as i64);
    }
}

/// What a stored result counts against the budget: its document as JSON, plus the memory of
/// the entry around it (the document's struct, the key, the list's node), so that many small
/// results are bounded in memory too, not only in encoded bytes.
fn entry_size(result: &ResultEnvelope) -> usize {
    const ENTRY: usize = std::mem::size_of::<ResultEnvelope>() + std::mem::size_of::<Key>() + 96;
    result.to_line().len() + ENTRY
}

/// The cache key of `task` on `module`: every input of the run that can change its document.
pub fn key(task: &CheckedTask, module: &[u8]) -> Key {
    let limits = &task.limits;
    let mut hash = Sha256::new();
    hash.update(b"wasm-exec result cache v1\0");
    match &task.module {
        ModuleRef::Cid(cid) => {
            let cid = cid.to_bytes();
            hash.update(b"cid");
            hash.update((cid.len() as u64).to_le_bytes());
            hash.update(cid);
        }
        ModuleRef::Name(_) => {
            hash.update(b"sha256");
            hash.update(Sha256::digest(module));
        }
    }
    let entry = task.entry.as_deref().unwrap_or("");
    hash.update((entry.len() as u64).to_le_bytes());
    hash.update(entry.as_bytes());
    let input = task.spec.input.to_string();
    hash.update((input.len() as u64).to_le_bytes());
    hash.update(input.as_bytes());
    hash.update(limits.timeout.as_nanos().to_le_bytes());
    hash.update(limits.max_memory_mb.to_le_bytes());
    hash.update(limits.max_output_bytes.to_le_bytes());
    match limits.fuel {
        Some(fuel) => {
            hash.update([1]);
            hash.update(fuel.to_le_bytes());
        }
        None => hash.update([0]),
    }
    hash.finalize().into()
}

#[async_trait::async_trait]
impl Backend for CachedBackend {
    async fn run(&self, task: &CheckedTask, module: Arc<Vec<u8>>) -> ResultEnvelope {
        if !task.spec.cache {
            return self.inner.run(task, module).await;
        }
        let key = key(task, &module);
        if let Some(result) = self.lookup(&key) {
            return result;
        }
        let result = self.inner.run(task, module).await;
        self.store(key, &result);
        result
    }

    async fn cancel(&self, task_id: &str) {
        self.inner.cancel(task_id).await;
    }

    async fn reconcile(&self, unfinished: &[String]) -> anyhow::Result<()> {
        self.inner.reconcile(unfinished).await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wasm_exec_task::{ErrorKind, IntakeRules, TaskSpec};

    /// A backend that answers `result` and counts its runs.
    struct Counting {
        runs: AtomicUsize,
        result: Mutex<ResultEnvelope>,
    }

    #[async_trait::async_trait]
    impl Backend for Counting {
        async fn run(&self, _: &CheckedTask, _: Arc<Vec<u8>>) -> ResultEnvelope {
            self.runs.fetch_add(1, Ordering::SeqCst);
            self.result.lock().unwrap().clone()
        }

        fn name(&self) -> &'static str {
            "counting"
        }
    }

    fn backend(result: ResultEnvelope, budget: usize) -> (Arc<Counting>, CachedBackend) {
        let inner = Arc::new(Counting {
            runs: AtomicUsize::new(0),
            result: Mutex::new(result),
        });
        let cached = CachedBackend::new(inner.clone(), budget, Arc::new(Metrics::default()));
        (inner, cached)
    }

    fn task(id: &str, input: Value, edit: impl FnOnce(&mut TaskSpec)) -> CheckedTask {
        let mut spec = TaskSpec::new(id, "fib.wasm", input);
        edit(&mut spec);
        spec.check(&IntakeRules::default()).expect("a valid task")
    }

    fn fib(n: u64) -> ResultEnvelope {
        let mut doc = ResultEnvelope::failure(ErrorKind::Trap, "x");
        doc.ok = true;
        doc.error = None;
        doc.entry = Some("fib".into());
        doc.args = vec![json!(n)];
        doc.result = json!(144);
        doc
    }

    fn module() -> Arc<Vec<u8>> {
        Arc::new(b"\0asm\x01\0\0\0".to_vec())
    }

    #[tokio::test]
    async fn a_repeated_task_is_answered_from_the_cache_whatever_its_id() {
        let (inner, cached) = backend(fib(12), 1 << 20);
        let input = json!({"entry": "fib", "args": [12]});
        let first = cached
            .run(&task("a", input.clone(), |_| ()), module())
            .await;
        let second = cached.run(&task("b", input, |_| ()), module()).await;
        assert_eq!(inner.runs.load(Ordering::SeqCst), 1);
        assert_eq!(first, second);
        let count = |outcome: &str| {
            let label = OutcomeLabel {
                outcome: outcome.into(),
            };
            cached.metrics.result_cache.get_or_create(&label).get()
        };
        assert_eq!((count("hit"), count("miss")), (1, 1));
    }

    #[tokio::test]
    async fn other_limits_input_entry_or_module_bytes_are_never_answered_from_the_cache() {
        let (inner, cached) = backend(fib(12), 1 << 20);
        let input = json!({"entry": "fib", "args": [12]});
        cached
            .run(&task("a", input.clone(), |_| ()), module())
            .await;
        let variants = [
            task("b", input.clone(), |s| s.limits.fuel = Some(1_000_000)),
            task("c", input.clone(), |s| s.limits.max_memory_mb = Some(64)),
            task("d", input.clone(), |s| s.limits.timeout_sec = Some(5.0)),
            task("e", input.clone(), |s| {
                s.limits.max_output_bytes = Some(100)
            }),
            task("f", json!({"entry": "fib", "args": [13]}), |_| ()),
            task("g", json!({"args": [12]}), |s| s.entry = Some("fib".into())),
        ];
        for variant in &variants {
            cached.run(variant, module()).await;
        }
        let mut other = module().as_ref().clone();
        other.push(0);
        cached
            .run(&task("h", input.clone(), |_| ()), Arc::new(other))
            .await;
        assert_eq!(inner.runs.load(Ordering::SeqCst), 2 + variants.len());
    }

    #[tokio::test]
    async fn only_results_a_new_run_repeats_are_stored() {
        let input = json!({"entry": "fib", "args": [12]});
        for (kind, stored) in [
            (ErrorKind::Trap, true),
            (ErrorKind::OutOfFuel, true),
            (ErrorKind::Timeout, false),
            (ErrorKind::HostExhausted, false),
            (ErrorKind::CancelledByRequest, false),
        ] {
            let (inner, cached) = backend(ResultEnvelope::failure(kind, "x"), 1 << 20);
            cached
                .run(&task("a", input.clone(), |_| ()), module())
                .await;
            cached
                .run(&task("b", input.clone(), |_| ()), module())
                .await;
            let runs = inner.runs.load(Ordering::SeqCst);
            assert_eq!(runs, if stored { 1 } else { 2 }, "{kind}");
        }
    }

    #[tokio::test]
    async fn a_task_that_opts_out_always_runs_and_is_not_stored() {
        let (inner, cached) = backend(fib(12), 1 << 20);
        let input = json!({"entry": "fib", "args": [12]});
        let off = |s: &mut TaskSpec| s.cache = false;
        cached.run(&task("a", input.clone(), off), module()).await;
        cached
            .run(&task("b", input.clone(), |_| ()), module())
            .await;
        cached.run(&task("c", input, off), module()).await;
        assert_eq!(inner.runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_budget_dropping_the_least_recently_used() {
        let size = entry_size(&fib(12));
        let (inner, cached) = backend(fib(12), 2 * size);
        let input = |n: u64| json!({"entry": "fib", "args": [n]});
        for n in [1, 2, 1, 3] {
            cached.run(&task("t", input(n), |_| ()), module()).await;
        }
        // 1 and 2 stored, 1 a hit, 3 stored and 2 (least recently used) dropped.
        assert_eq!(inner.runs.load(Ordering::SeqCst), 3);
        let held = {
            let store = cached.store.lock().unwrap();
            (store.entries.len(), store.bytes)
        };
        assert_eq!(held, (2, 2 * size));
        cached.run(&task("t", input(1), |_| ()), module()).await;
        cached.run(&task("t", input(2), |_| ()), module()).await;
        assert_eq!(inner.runs.load(Ordering::SeqCst), 4);
    }
}
