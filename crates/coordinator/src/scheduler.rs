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

use crate::backend::Backend;
use crate::metrics::Metrics;
use crate::module::ModuleStore;
use crate::source::{Delivery, TaskSource};
use crate::state::{API_ORIGIN, StateStore, TaskState};
use anyhow::Context as _;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
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
}

impl Job {
    /// A task the API checked before acknowledging it.
    fn from_api(checked: CheckedTask) -> Self {
        Self {
            task: checked.spec.clone(),
            checked: Ok(checked),
            origin: API_ORIGIN.into(),
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

    /// Serves until `shutdown` is cancelled: runs tasks from the source (polled) and from the
    /// API (`inbox`, already persisted). On shutdown it stops taking tasks and waits for the
    /// running ones to be finished and written back (the caller bounds the wait).
    ///
    /// The source is polled by a task of its own ([`Scheduler::pump`]), so a slow poll (a chain
    /// node taking its time) never holds up the API's tasks or the start of the next one. An
    /// error from the pump (its admissions could not be persisted) ends `serve` with that error.
    pub async fn serve(
        &self,
        mut inbox: mpsc::Receiver<CheckedTask>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut queue: VecDeque<Job> = self.resume().await?.into();
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        let (admitted, mut from_source) = mpsc::channel(SOURCE_BATCHES);
        let mut pump = tokio::spawn(self.clone().pump(admitted, shutdown.clone()));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned(), if !queue.is_empty() => {
                    if let (Ok(permit), Some(job)) = (permit, queue.pop_front()) {
                        running.spawn(self.clone().process(job, permit));
                    }
                }
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    if let Err(e) = joined {
                        warn!(error = %e, "a task's worker failed");
                    }
                }
                Some(task) = inbox.recv() => queue.push_back(Job::from_api(task)),
                Some(jobs) = from_source.recv() => queue.extend(jobs),
                ended = &mut pump => {
                    ended.context("the source's poller panicked")??;
                    break;
                }
            }
        }
        info!(
            running = running.len(),
            queued = queue.len(),
            "no longer taking tasks; finishing the running ones"
        );
        while running.join_next().await.is_some() {}
        Ok(())
    }

    /// Polls the source on its interval (or at once when it has news), persists what it gives
    /// and hands the fresh tasks to `serve`, until `shutdown`. A failed poll is logged and
    /// retried on the next tick; a failed admission ends the pump with the error (nothing was
    /// acknowledged to the source, so the tasks are read again after a restart).
    async fn pump(
        self,
        admitted: mpsc::Sender<Vec<Job>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut poll = tokio::time::interval(self.source.poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let origin = self.source.name();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = self.source.news() => {
                    poll.reset_immediately();
                    continue;
                }
                _ = poll.tick() => {}
            }
            let polled = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                polled = self.source.poll() => polled,
            };
            let polled = match polled {
                Ok(polled) => polled,
                Err(e) => {
                    warn!(error = %e, source = origin, "the task source failed; retrying");
                    continue;
                }
            };
            if polled.more {
                poll.reset_immediately();
            }
            let fresh = match polled.cursor {
                Some(cursor) => {
                    self.state
                        .admit_with_cursor(polled.tasks, origin, cursor)
                        .await?
                }
                None if polled.tasks.is_empty() => Vec::new(),
                None => self.state.admit(polled.tasks, origin).await?,
            };
            if fresh.is_empty() {
                continue;
            }
            let jobs = fresh.into_iter().map(|task| self.job(task, origin));
            if admitted.send(jobs.collect()).await.is_err() {
                return Ok(()); // `serve` has stopped taking tasks
            }
        }
    }

    /// Reports results persisted but not reported before a restart; lets the backend remove what
    /// no unfinished task needs; returns the unfinished tasks, to run again.
    async fn resume(&self) -> anyhow::Result<Vec<Job>> {
        let mut rerun = Vec::new();
        for record in self.state.resumable()? {
            let job = self.job(record.task, &record.origin);
            match record.result {
                Some(result) if record.state.is_finished() => {
                    info!(task_id = %job.task.task_id, "reporting a result persisted before a restart");
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

    /// One task from module fetch to result written back. `permit` is a running slot, given
    /// back as soon as the backend returns.
    async fn process(self, job: Job, permit: OwnedSemaphorePermit) -> Outcome {
        let span = info_span!("task", task_id = %job.task.task_id, cid = %job.task.wasm_cid);
        async move {
            let started = Instant::now();
            let result = match &job.checked {
                Ok(task) => self.execute(task).await,
                Err(e) => ResultEnvelope::failure(
                    ErrorKind::BadInput,
                    format!("the task is malformed: {e}"),
                ),
            };
            drop(permit);
            if result.kind() == Some(ErrorKind::Cancelled) {
                // Stopped by a shutdown: not a result. The task stays unfinished and runs again.
                info!(state = "unfinished", "task stopped by the shutdown");
                return Outcome {
                    task: job.task,
                    result,
                    elapsed: started.elapsed(),
                    earlier: false,
                };
            }
            match &result.error {
                None => info!(state = "succeeded", result = %result.result, "task finished"),
                Some(e) => {
                    info!(state = "failed", kind = %e.kind, message = %e.message, "task finished")
                }
            }
            let (state, id) = (self.state.as_ref(), job.task.task_id.as_str());
            // API tasks need no write-back (the API serves the result): one commit does both.
            let served = job.origin == API_ORIGIN;
            let persist_started = Instant::now();
            retry("persisting a result", || state.finish(id, &result, served)).await;
            self.metrics
                .observe_stage("persist", persist_started.elapsed());
            let wasm = wasm_time(&result);
            let overhead = started.elapsed().saturating_sub(wasm);
            self.metrics
                .overhead_seconds
                .observe(overhead.as_secs_f64());
            if !served {
                self.report(&job, &result).await;
            }
            self.metrics
                .record_result(result.kind().map_or("ok", |k| k.as_str()), None);
            Outcome {
                task: job.task,
                result,
                elapsed: started.elapsed(),
                earlier: false,
            }
        }
        .instrument(span)
        .await
    }

    /// The task, with the intake check's verdict under the rules for its origin (CIDs only for
    /// a source that says so).
    fn job(&self, task: TaskSpec, origin: &str) -> Job {
        let checked = if origin == self.source.name() && !self.source.mirror_names() {
            task.check(&self.rules.cids_only())
        } else {
            task.check(&self.rules)
        };
        Job {
            task,
            checked,
            origin: origin.into(),
        }
    }

    async fn execute(&self, task: &CheckedTask) -> ResultEnvelope {
        self.state.record_progress(task.id(), TaskState::Fetching);
        info!(state = "fetching", "task taken");
        let fetch_started = Instant::now();
        let module = match self.modules.fetch(&task.spec.wasm_cid).await {
            Ok(module) => module,
            Err(e) => return ResultEnvelope::failure(e.kind(), e.to_string()),
        };
        let fetched = fetch_started.elapsed();
        self.metrics.fetch_seconds.observe(fetched.as_secs_f64());
        self.metrics.observe_stage("fetch", fetched);
        self.metrics.fetched_bytes.inc_by(module.len() as u64);
        self.state.record_progress(task.id(), TaskState::Running);
        info!(state = "running", bytes = module.len(), "module ready");
        let run_started = Instant::now();
        let result = self.backend.run(task, module).await;
        let ran = run_started.elapsed();
        self.metrics.run_seconds.observe(ran.as_secs_f64());
        self.metrics
            .observe_stage("dispatch", ran.saturating_sub(wasm_time(&result)));
        result
    }

    /// Writes the result back to the task's origin (retrying until accepted), then records that
    /// it was. Tasks submitted through the API need no write-back: the API serves their result.
    async fn report(&self, job: &Job, result: &ResultEnvelope) {
        let id = job.task.task_id.as_str();
        let mut note = None;
        if job.origin == self.source.name() {
            let source = self.source.as_ref();
            let delivery =
                retry("writing a result back", || source.report(&job.task, result)).await;
            if let Delivery::Undeliverable(why) = delivery {
                warn!(task_id = id, reason = %why, "the result cannot be written back; it stays in the API");
                note = Some(why);
            }
        }
        let state = self.state.as_ref();
        retry("recording a write-back", || {
            state.mark_reported(id, note.clone())
        })
        .await;
    }
}

/// The Wasm call's own time (instantiation and call), from the result document.
fn wasm_time(result: &ResultEnvelope) -> Duration {
    Duration::try_from_secs_f64(result.duration_ms / 1e3).unwrap_or_default()
}

/// Retries `attempt` with backoff (100 ms doubling to 30 s) until it succeeds: a task never
/// moves past a step that did not happen.
async fn retry<T, F, Fut, E>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut wait = BACKOFF.0;
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) => {
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ModuleError;
    use crate::source::placeholder::PlaceholderSource;
    use crate::source::{Polled, SourceError};
    use crate::state::redb::RedbStore;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use wasm_exec_task::ErrorKind;

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
        let scheduler = |state: Arc<RedbStore>, tasks: Vec<TaskSpec>| Scheduler {
            source: Arc::new(PlaceholderSource::new(tasks)),
            modules: Arc::new(AnyModule),
            backend: backend.clone(),
            state,
            metrics: Arc::new(Metrics::default()),
            concurrency: 1,
            rules: IntakeRules::default(),
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
        let scheduler = Scheduler {
            source: source.clone(),
            modules: Arc::new(AnyModule),
            backend: Arc::new(StoppedBackend::default()),
            state: Arc::new(RedbStore::open(dir.path()).unwrap()),
            metrics: Arc::new(Metrics::default()),
            concurrency: 1,
            rules: IntakeRules::default(),
        };
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
        let scheduler = Scheduler {
            source: Arc::new(SilentSource),
            modules: Arc::new(AnyModule),
            backend: Arc::new(StoppedBackend::default()),
            state: state.clone(),
            metrics: Arc::new(Metrics::default()),
            concurrency: 1,
            rules: IntakeRules::default(),
        };
        let (api, inbox) = mpsc::channel(INBOX_CAPACITY);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { scheduler.serve(inbox, shutdown).await }
        });
        let task = TaskSpec::new("api-1", "x.wasm", serde_json::Value::Null);
        state.admit(vec![task.clone()], API_ORIGIN).await.unwrap();
        api.send(task.check(&IntakeRules::default()).unwrap())
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
}
