//! The scheduling loop: takes tasks from the source and the API, fetches each module, runs it on
//! the backend, persists the result and writes it back, with at most `concurrency` tasks running.
//! It sees only the traits, never an adapter.
//!
//! What is awaited to disk and what is not: a task is persisted when taken (`admit`), and its
//! result is persisted before it is reported (`finish`), then `mark_reported`: that is what
//! makes every task run to one result written back once (see [`crate::state`]). The intermediate
//! states (`fetching`, `running`) are recorded without waiting; after a crash a task in either is
//! simply run again. A running slot is freed as soon as the backend returns, so persisting and
//! reporting one task overlap with running the next.
//!
//! # Layout
//! - here: the [`Scheduler`], the `--once` pass ([`Scheduler::run_once`]) and the resume at start.
//! - `serve`: the serving loop and the pump that polls the source.
//! - `process`: one task from module fetch to result written back.
//! - `fair`: the queue, round-robin between tenants, each under its concurrency quota.
//! - [`live`]: what the API sees of the queue (why a task waits) and how it cancels.

mod fair;
pub mod live;
mod process;
mod serve;

pub use live::{Live, Waiting};

use crate::backend::Backend;
use crate::metrics::Metrics;
use crate::module::ModuleStore;
use crate::source::TaskSource;
use crate::state::{API_ORIGIN, StateStore, quarantine};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};
use wasm_exec_task::{CheckError, CheckedTask, ErrorKind, IntakeRules, ResultEnvelope, TaskSpec};

/// What happened to one task.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The task.
    pub task: TaskSpec,
    /// Its result document.
    pub result: ResultEnvelope,
    /// Wall time from taking the task to writing its result back.
    pub elapsed: Duration,
    /// True when the task had finished in an earlier run (its id was known): not run again.
    pub earlier: bool,
}

/// The coordinator's moving parts, each behind its trait.
#[derive(Clone)]
pub struct Scheduler {
    /// Where tasks come from and results go.
    pub source: Arc<dyn TaskSource>,
    /// CID -> verified module bytes.
    pub modules: Arc<dyn ModuleStore>,
    /// Where tasks run.
    pub backend: Arc<dyn Backend>,
    /// Where every task and its state is persisted.
    pub state: Arc<dyn StateStore>,
    /// What is counted for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Most tasks running at once (1 = the seed's sequential mode).
    pub concurrency: usize,
    /// The intake check's limit defaults and maxima, for the source's tasks and for tasks
    /// resumed after a restart (the API checks its own before acknowledging them).
    pub rules: IntakeRules,
    /// Starts without a finish after which a resumed task is quarantined (kind `crashed`)
    /// instead of run again; 0 never quarantines (`COORDINATOR_QUARANTINE_AFTER`).
    pub quarantine_after: u32,
    /// The queue and running tasks as the API sees them, and its cancels.
    pub live: Arc<Live>,
    /// Most running tasks per tenant (`COORDINATOR_TOKENS_FILE`); tenants not named, and tasks
    /// without a tenant, are bound only by `concurrency`.
    pub quotas: HashMap<String, usize>,
}

/// A task the API persisted, handed to the scheduler with its tenant.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The task, through the intake check.
    pub task: CheckedTask,
    /// Its tenant, `None` for the default caller.
    pub tenant: Option<String>,
}

/// A task to run and where it came from (its result goes back there).
#[derive(Debug, Clone)]
struct Job {
    /// The task as persisted.
    task: TaskSpec,
    /// The task as the intake check left it, or why the check refused it (then it is settled
    /// as `bad_input` without running, and that result written back).
    checked: Result<CheckedTask, CheckError>,
    origin: String,
    /// Resumed after a restart: its start is made durable before it runs, so that every start
    /// of a task that crashes the process is counted.
    resumed: bool,
    /// Its tenant, for the fair queue.
    tenant: Option<String>,
}

impl Job {
    /// A task the API checked before acknowledging it.
    fn from_api(admitted: Admitted) -> Self {
        Self {
            task: admitted.task.spec.clone(),
            checked: Ok(admitted.task),
            origin: API_ORIGIN.into(),
            resumed: false,
            tenant: admitted.tenant,
        }
    }
}

/// Most batches of admitted source tasks waiting for `serve` to queue them: the pump waits
/// (and so polls no further) while `serve` is this far behind.
const SOURCE_BATCHES: usize = 4;

/// Most API submissions waiting for `serve` to queue them; a submission beyond it waits for room
/// (it is persisted already, so nothing is lost while it waits).
pub const INBOX_CAPACITY: usize = 1024;

/// First and largest wait between retries of a failed write (state or source).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

impl Scheduler {
    /// Takes every task the source has now, runs them, and returns their outcomes in the order
    /// the source gave them.
    ///
    /// A task whose id the state store already knows is not run again: its stored result is
    /// shown (`earlier`). Tasks left unfinished by a crashed run are resumed first.
    pub async fn run_once(&self) -> anyhow::Result<Vec<Outcome>> {
        let resumed = self.resume().await?;
        self.run_jobs(resumed).await;
        let polled = self.source.poll().await?;
        let tasks = polled.tasks;
        info!(
            source = self.source.name(),
            tasks = tasks.len(),
            "tasks taken"
        );
        let origin = self.source.name();
        let fresh = match polled.cursor {
            Some(cursor) => {
                self.state
                    .admit_with_cursor(tasks.clone(), origin, cursor)
                    .await?
            }
            None => self.state.admit(tasks.clone(), origin).await?,
        };
        let jobs = fresh
            .into_iter()
            .map(|task| self.job(task, self.source.name()));
        let mut outcomes = self.run_jobs(jobs.collect()).await;
        for task in tasks {
            if outcomes.iter().any(|o| o.task.task_id == task.task_id) {
                continue;
            }
            if let Some(result) = self.state.get(&task.task_id)?.and_then(|r| r.result) {
                outcomes.push(Outcome {
                    task,
                    result,
                    elapsed: Duration::ZERO,
                    earlier: true,
                });
            }
        }
        Ok(outcomes)
    }

    /// Reports results persisted but not reported before a restart; lets the backend remove what
    /// no unfinished task needs; returns the unfinished tasks, to run again.
    async fn resume(&self) -> anyhow::Result<Vec<Job>> {
        let mut rerun = Vec::new();
        for record in self.state.resumable()? {
            let poisoned = quarantine::is_poisoned(&record, self.quarantine_after);
            let message = poisoned.then(|| quarantine::quarantine_message(&record));
            let mut job = self.job(record.task, &record.origin);
            job.resumed = true;
            job.tenant = record.tenant;
            match (record.result, message) {
                (Some(result), _) if record.state.is_finished() => {
                    info!(task_id = %job.task.task_id, "reporting a result persisted before a restart");
                    self.report(&job, &result).await;
                }
                (_, Some(message)) => {
                    warn!(task_id = %job.task.task_id, attempts = record.attempts, "quarantining a task that keeps crashing the coordinator");
                    let result = ResultEnvelope::failure(ErrorKind::Crashed, message);
                    self.state.quarantine(&job.task.task_id, &result).await?;
                    self.metrics
                        .record_result(ErrorKind::Crashed.as_str(), None);
                    self.report(&job, &result).await;
                }
                _ => rerun.push(job),
            }
        }
        if !rerun.is_empty() {
            info!(
                tasks = rerun.len(),
                "resuming tasks left unfinished by a restart"
            );
        }
        let unfinished: Vec<String> = rerun.iter().map(|j| j.task.task_id.clone()).collect();
        self.backend.reconcile(&unfinished).await?;
        Ok(rerun)
    }

    /// Runs jobs with at most `concurrency` at once; outcomes in the jobs' order.
    async fn run_jobs(&self, jobs: Vec<Job>) -> Vec<Outcome> {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        let count = jobs.len();
        for (index, job) in jobs.into_iter().enumerate() {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            running.spawn(async move { (index, this.process(job, permit).await) });
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok((index, outcome)) => outcomes[index] = Some(outcome),
                Err(e) => warn!(error = %e, "a task's worker failed"),
            }
        }
        outcomes.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ModuleError;
    use crate::source::Delivery;
    use crate::source::placeholder::PlaceholderSource;
    use crate::source::{Polled, SourceError};
    use crate::state::redb::RedbStore;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use wasm_exec_task::ErrorKind;

    /// A scheduler over `source`, `backend` and `state`, with every module the same bytes.
    fn scheduler_of(
        source: Arc<dyn TaskSource>,
        backend: Arc<dyn Backend>,
        state: Arc<dyn StateStore>,
    ) -> Scheduler {
        Scheduler {
            source,
            modules: Arc::new(AnyModule),
            backend,
            state,
            metrics: Arc::new(Metrics::default()),
            concurrency: 1,
            rules: IntakeRules::default(),
            quarantine_after: quarantine::DEFAULT_QUARANTINE_AFTER,
            live: Arc::default(),
            quotas: HashMap::new(),
        }
    }

    /// Every module is the same few bytes.
    struct AnyModule;

    #[async_trait]
    impl ModuleStore for AnyModule {
        async fn fetch(&self, _cid: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
            Ok(Arc::new(b"\0asm\x01\0\0\0".to_vec()))
        }
    }

    /// A backend whose runs are all stopped by a shutdown; it records what it reconciles.
    #[derive(Default)]
    struct StoppedBackend {
        reconciled: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl Backend for StoppedBackend {
        async fn run(&self, _task: &CheckedTask, _module: Arc<Vec<u8>>) -> ResultEnvelope {
            ResultEnvelope::failure(ErrorKind::Cancelled, "stopped")
        }

        async fn reconcile(&self, unfinished: &[String]) -> anyhow::Result<()> {
            self.reconciled
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(unfinished.to_vec());
            Ok(())
        }

        fn name(&self) -> &'static str {
            "stopped"
        }
    }

    #[tokio::test]
    async fn a_run_stopped_by_shutdown_stays_unfinished_and_is_reconciled_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(StoppedBackend::default());
        let task = TaskSpec::new("t1", "x.wasm", serde_json::Value::Null);
        let scheduler = |state: Arc<RedbStore>, tasks: Vec<TaskSpec>| {
            scheduler_of(
                Arc::new(PlaceholderSource::new(tasks)),
                backend.clone(),
                state,
            )
        };
        let state = Arc::new(RedbStore::open(dir.path()).unwrap());
        let outcomes = scheduler(state.clone(), vec![task])
            .run_once()
            .await
            .unwrap();
        assert_eq!(outcomes[0].result.kind(), Some(ErrorKind::Cancelled));
        let record = state.get("t1").unwrap().unwrap();
        assert!(
            !record.state.is_finished() && record.result.is_none(),
            "{record:?}"
        );
        drop(state);
        let state = Arc::new(RedbStore::open(dir.path()).unwrap());
        scheduler(state, vec![]).run_once().await.unwrap();
        let reconciled = backend.reconciled.lock().unwrap().clone();
        assert_eq!(reconciled, [vec![], vec!["t1".to_owned()]]);
    }

    /// A source that polls hourly, counts its polls, and has news when told.
    #[derive(Default)]
    struct NewsSource {
        polls: std::sync::atomic::AtomicUsize,
        news: tokio::sync::Notify,
    }

    #[async_trait]
    impl TaskSource for NewsSource {
        async fn poll(&self) -> Result<Polled, SourceError> {
            self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Polled::default())
        }

        fn poll_interval(&self) -> Duration {
            Duration::from_secs(3600)
        }

        async fn news(&self) {
            self.news.notified().await;
        }

        async fn report(
            &self,
            _task: &TaskSpec,
            _result: &ResultEnvelope,
        ) -> Result<Delivery, SourceError> {
            Ok(Delivery::Accepted)
        }

        fn name(&self) -> &'static str {
            "news"
        }
    }

    #[tokio::test]
    async fn news_from_the_source_brings_its_next_poll_forward() {
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(NewsSource::default());
        let scheduler = scheduler_of(
            source.clone(),
            Arc::new(StoppedBackend::default()),
            Arc::new(RedbStore::open(dir.path()).unwrap()),
        );
        let polls = || source.polls.load(std::sync::atomic::Ordering::SeqCst);
        let until = |want: usize| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while polls() < want {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} polls, want {want}",
                    polls()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (_api, inbox) = mpsc::channel(INBOX_CAPACITY);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { scheduler.serve(inbox, shutdown).await }
        });
        until(1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            polls(),
            1,
            "polled again before the hour was up, with no news"
        );
        source.news.notify_one();
        until(2).await;
        shutdown.cancel();
        serving.await.unwrap().unwrap();
    }

    /// A source whose poll never returns (a node that accepted the connection and went quiet).
    struct SilentSource;

    #[async_trait]
    impl TaskSource for SilentSource {
        async fn poll(&self) -> Result<Polled, SourceError> {
            std::future::pending().await
        }

        async fn report(
            &self,
            _task: &TaskSpec,
            _result: &ResultEnvelope,
        ) -> Result<Delivery, SourceError> {
            Ok(Delivery::Accepted)
        }

        fn name(&self) -> &'static str {
            "silent"
        }
    }

    #[tokio::test]
    async fn a_poll_that_never_returns_holds_up_neither_the_api_nor_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(RedbStore::open(dir.path()).unwrap());
        let scheduler = scheduler_of(
            Arc::new(SilentSource),
            Arc::new(StoppedBackend::default()),
            state.clone(),
        );
        let (api, inbox) = mpsc::channel(INBOX_CAPACITY);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { scheduler.serve(inbox, shutdown).await }
        });
        let task = TaskSpec::new("api-1", "x.wasm", serde_json::Value::Null);
        state.admit(vec![task.clone()], API_ORIGIN).await.unwrap();
        api.send(Admitted {
            task: task.check(&IntakeRules::default()).unwrap(),
            tenant: None,
        })
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // The stopped backend answers `cancelled`, which leaves the task pending again: what
        // shows that it ran is its attempt count.
        while state.get("api-1").unwrap().unwrap().attempts == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the API's task did not start while the source's poll hung"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("serve did not stop while the poll hung")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_task_started_three_times_without_finishing_is_quarantined_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(RedbStore::open(dir.path()).unwrap());
        let task = TaskSpec::new("poison", "x.wasm", serde_json::Value::Null);
        state.admit(vec![task], API_ORIGIN).await.unwrap();
        for _ in 0..quarantine::DEFAULT_QUARANTINE_AFTER {
            state.record_start("poison").await.unwrap(); // each start, then the process died
        }
        let backend = Arc::new(StoppedBackend::default());
        let scheduler = scheduler_of(
            Arc::new(PlaceholderSource::new(vec![])),
            backend.clone(),
            state.clone(),
        );
        scheduler.run_once().await.unwrap();
        let record = state.get("poison").unwrap().unwrap();
        assert_eq!(
            record.state,
            crate::state::TaskState::Quarantined,
            "{record:?}"
        );
        assert_eq!(record.attempts, 3, "it was not started a fourth time");
        let result = record.result.expect("a result saying why");
        assert_eq!(result.kind(), Some(ErrorKind::Crashed));
        assert!(record.reported);
        assert_eq!(
            *backend.reconciled.lock().unwrap(),
            [Vec::<String>::new()],
            "nothing left to rerun"
        );
    }
}
