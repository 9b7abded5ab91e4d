//! Prometheus metrics: what the scheduler and the backend count, rendered as text for `/metrics`.
//!
//! Tasks by state are read from the state store at scrape time (the store is the truth); the rest
//! are counters and histograms updated as tasks move.

use crate::state::StateStore;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// A `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The task state (`pending`, ..., `failed`).
    pub state: String,
}

/// A `kind` label: the result's error kind, or `ok`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `ok` or an error kind.
    pub kind: String,
}

/// An `outcome` label for cache lookups: `hit` or `miss`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `hit` or `miss`.
    pub outcome: String,
}

/// A `stage` label: one part of the coordinator's own time per task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// `fetch` (module fetched and verified), `dispatch` (the backend's time beyond the Wasm
    /// call: queueing, loading, planning) or `persist` (the result's durable commit).
    pub stage: &'static str,
}

/// An `op` label: what a task source was doing (`read` tasks, `write` a result back).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// `read` or `write`.
    pub op: &'static str,
}

/// A `block` label: which block number a chain gauge shows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabel {
    /// `head` (the node's newest block) or `scanned` (the last block read for tasks).
    pub block: &'static str,
}

/// A `via` label: how the chain source learnt of a new head.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabel {
    /// `pushed` (a WebSocket subscription) or `polled` (`eth_blockNumber` over HTTP).
    pub via: &'static str,
}

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    tasks: Family<StateLabel, Gauge>,
    /// Finished tasks by result kind.
    pub results: Family<KindLabel, Counter>,
    /// Time a backend took to run a task, in seconds.
    pub run_seconds: Histogram,
    /// Time to fetch and verify a module, in seconds.
    pub fetch_seconds: Histogram,
    /// The coordinator's own time per task: from taking it to its result on disk, minus the
    /// Wasm call (instantiation and call, the result's `duration_ms`), in seconds.
    pub overhead_seconds: Histogram,
    /// The overhead split by stage, to see where it goes.
    pub stage_seconds: Family<StageLabel, Histogram>,
    /// Module bytes fetched.
    pub fetched_bytes: Counter,
    /// Compiled-module cache lookups of the local backend, by outcome.
    pub module_cache: Family<OutcomeLabel, Counter>,
    /// Result cache lookups, by outcome (`hit`, `miss`; tasks that opt out are not counted).
    pub result_cache: Family<OutcomeLabel, Counter>,
    /// Results held in the result cache.
    pub result_cache_entries: Gauge,
    /// Bytes of the results held in the result cache.
    pub result_cache_bytes: Gauge,
    /// Failures of the task source, by operation (kept by [`Health`](crate::health::Health)).
    source_errors: Family<OpLabel, Counter>,
    /// 1 while the task source works, 0 while an operation is failing (kept by `Health`).
    source_up: Gauge,
    /// Chain sources: block numbers.
    pub chain_block: Family<BlockLabel, Gauge>,
    /// Chain sources: new heads that woke the source, by how they came.
    pub chain_heads: Family<ViaLabel, Counter>,
    /// Chain sources: result transactions by outcome (`mined`, `already_completed`).
    pub writebacks: Family<OutcomeLabel, Counter>,
    /// Chain sources: result transactions sent again with a higher fee.
    pub writeback_replacements: Counter,
    /// Results being written back now.
    pub writebacks_in_flight: Gauge,
    /// Chain sources: k-of-n tasks refused because their limits exceed this operator's maxima
    /// (neither run nor committed, left to operators that can run them).
    pub chain_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("wasm_exec"),
            tasks: Family::default(),
            results: Family::default(),
            // 100 µs to about 100 s.
            run_seconds: Histogram::new(exponential_buckets(1e-4, 4.0, 11)),
            fetch_seconds: Histogram::new(exponential_buckets(1e-5, 4.0, 11)),
            overhead_seconds: overhead_buckets(),
            stage_seconds: Family::new_with_constructor(overhead_buckets as fn() -> _),
            fetched_bytes: Counter::default(),
            module_cache: Family::default(),
            result_cache: Family::default(),
            result_cache_entries: Gauge::default(),
            result_cache_bytes: Gauge::default(),
            source_errors: Family::default(),
            source_up: Gauge::default(),
            chain_block: Family::default(),
            chain_heads: Family::default(),
            writebacks: Family::default(),
            writeback_replacements: Counter::default(),
            writebacks_in_flight: Gauge::default(),
            chain_refused: Counter::default(),
        };
        metrics.register_tasks();
        metrics.register_sources();
        metrics
    }
}

impl Metrics {
    /// Registers what is counted of tasks and modules.
    fn register_tasks(&mut self) {
        self.registry
            .register("tasks", "Tasks by state", self.tasks.clone());
        self.registry.register(
            "task_results",
            "Finished tasks by result kind",
            self.results.clone(),
        );
        self.registry.register(
            "task_run_seconds",
            "Time a backend took to run a task",
            self.run_seconds.clone(),
        );
        self.registry.register(
            "task_overhead_seconds",
            "Coordinator time per task from taking it to its result on disk, minus the Wasm call",
            self.overhead_seconds.clone(),
        );
        self.registry.register(
            "task_stage_seconds",
            "Coordinator time per task by stage (fetch, dispatch, persist)",
            self.stage_seconds.clone(),
        );
        self.registry.register(
            "module_fetch_seconds",
            "Time to fetch and verify a module",
            self.fetch_seconds.clone(),
        );
        self.registry.register(
            "module_fetched_bytes",
            "Module bytes fetched",
            self.fetched_bytes.clone(),
        );
        self.registry.register(
            "compiled_module_cache",
            "Compiled-module cache lookups",
            self.module_cache.clone(),
        );
        self.registry.register(
            "result_cache",
            "Result cache lookups: a task identical to a finished one (module, entry, input, limits)",
            self.result_cache.clone(),
        );
        self.registry.register(
            "result_cache_entries",
            "Results held in the result cache",
            self.result_cache_entries.clone(),
        );
        self.registry.register(
            "result_cache_bytes",
            "Bytes (as JSON) of the results held in the result cache",
            self.result_cache_bytes.clone(),
        );
    }

    /// Registers what is counted of the task source and its write-backs.
    fn register_sources(&mut self) {
        self.registry.register(
            "source_errors",
            "Failures of the task source, by operation (read tasks, write a result back)",
            self.source_errors.clone(),
        );
        self.registry.register(
            "source_up",
            "1 while the task source works, 0 while it is failing",
            self.source_up.clone(),
        );
        self.registry.register(
            "chain_block",
            "Chain source: the node's head and the last block scanned for tasks",
            self.chain_block.clone(),
        );
        self.registry.register(
            "chain_heads",
            "Chain source: new heads that woke it, pushed by the node (ws) or polled (http)",
            self.chain_heads.clone(),
        );
        self.registry.register(
            "chain_writebacks",
            "Chain source: results written back, by outcome",
            self.writebacks.clone(),
        );
        self.registry.register(
            "chain_writeback_replacements",
            "Chain source: result transactions replaced with a higher fee",
            self.writeback_replacements.clone(),
        );
        self.registry.register(
            "chain_refused",
            "Chain source: k-of-n tasks refused, their limits over this operator's maxima",
            self.chain_refused.clone(),
        );
        self.registry.register(
            "writebacks_in_flight",
            "Results being written back to their source now",
            self.writebacks_in_flight.clone(),
        );
    }
}

/// 25 µs to about 0.8 s, finely: the overhead goal is under 1 ms.
fn overhead_buckets() -> Histogram {
    Histogram::new(exponential_buckets(2.5e-5, 2.0, 16))
}

impl Metrics {
    /// Records the time one stage of a task took.
    pub fn observe_stage(&self, stage: &'static str, took: Duration) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe(took.as_secs_f64());
    }

    /// Counts a finished task.
    pub fn record_result(&self, kind: &str, run: Option<Duration>) {
        self.results
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
        if let Some(run) = run {
            self.run_seconds.observe(run.as_secs_f64());
        }
    }

    /// The source's gauge and error counter, for [`Health`](crate::health::Health) to keep.
    pub fn source_health(&self) -> (Gauge, Family<OpLabel, Counter>) {
        (self.source_up.clone(), self.source_errors.clone())
    }

    /// Counts a compiled-module cache lookup.
    pub fn record_cache(&self, hit: bool) {
        let outcome = if hit { "hit" } else { "miss" };
        self.module_cache
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Renders every metric in the Prometheus text format, with task counts read from `state`.
    pub fn render(&self, state: &dyn StateStore) -> Result<String, String> {
        let counts = state.counts().map_err(|e| e.to_string())?;
        for (state, count) in counts {
            let value = i64::try_from(count).unwrap_or(i64::MAX);
            self.tasks
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(value);
        }
        self.render_registry()
    }

    /// Renders every metric as it stands, in the Prometheus text format.
    pub fn render_registry(&self) -> Result<String, String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}
