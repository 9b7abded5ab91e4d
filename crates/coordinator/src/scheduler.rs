//! The scheduling loop: takes tasks from the source, records them, fetches each module, runs it on
//! the backend, persists the result and writes it back, with at most `concurrency` tasks in
//! flight. It sees only the traits, never an adapter.
//!
//! Every state change is persisted before the next step, so after a crash [`Scheduler::resume`]
//! finds each task where it was: unfinished ones run again, finished but unreported ones are
//! reported (see [`crate::state`] for why that makes write-back exactly once).

use crate::backend::Backend;
use crate::module::ModuleStore;
use crate::source::TaskSource;
use crate::state::{StateStore, TaskState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use wasm_exec_task::{ResultEnvelope, TaskSpec};

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
    /// Most tasks in flight at once (1 = the seed's sequential mode).
    pub concurrency: usize,
}

/// How long to wait before asking the source for more tasks when it had none.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// First and largest wait between attempts to write a result back.
const REPORT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

impl Scheduler {
    /// Takes every task the source has now, runs them, and returns their outcomes in the order
    /// the source gave them.
    ///
    /// A task whose id the state store already knows is not run again: its stored result is
    /// shown (`earlier`), or, if it is still unfinished from a crashed run, it is resumed.
    pub async fn run_once(&self) -> anyhow::Result<Vec<Outcome>> {
        self.resume(&CancellationToken::new()).await?;
        let tasks = self.source.poll().await?;
        info!(
            source = self.source.name(),
            tasks = tasks.len(),
            "tasks taken"
        );
        let fresh = self.state.admit(tasks.clone()).await?;
        let mut outcomes = self.run_batch(fresh, &CancellationToken::new()).await;
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

    /// Picks up what a previous run left: reports finished but unreported results, then runs the
    /// unfinished tasks again.
    pub async fn resume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut rerun = Vec::new();
        for record in self.state.resumable()? {
            match (&record.result, record.state.is_finished()) {
                (Some(result), true) => {
                    info!(task_id = %record.task.task_id, "reporting a result persisted before a restart");
                    self.report(&record.task, result).await;
                }
                _ => rerun.push(record.task),
            }
        }
        if !rerun.is_empty() {
            info!(
                tasks = rerun.len(),
                "resuming tasks left unfinished by a restart"
            );
            self.run_batch(rerun, shutdown).await;
        }
        Ok(())
    }

    /// Serves until `shutdown` is cancelled: polls the source, runs what it yields. Tasks already
    /// running when shutdown comes are finished and written back.
    pub async fn serve(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.resume(&shutdown).await?;
        while !shutdown.is_cancelled() {
            let tasks = tokio::select! {
                tasks = self.source.poll() => tasks,
                () = shutdown.cancelled() => break,
            };
            match tasks {
                Ok(tasks) if !tasks.is_empty() => {
                    let fresh = self.state.admit(tasks).await?;
                    self.run_batch(fresh, &shutdown).await;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "the task source failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(IDLE_POLL) => {}
                () = shutdown.cancelled() => {}
            }
        }
        Ok(())
    }

    async fn run_batch(&self, tasks: Vec<TaskSpec>, shutdown: &CancellationToken) -> Vec<Outcome> {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        let count = tasks.len();
        for (index, task) in tasks.into_iter().enumerate() {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            let this = self.clone();
            let span = info_span!("task", task_id = %task.task_id, cid = %task.wasm_cid);
            running.spawn(
                async move {
                    let outcome = this.process(task).await;
                    drop(permit);
                    (index, outcome)
                }
                .instrument(span),
            );
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

    /// One task from module fetch to result written back, each step persisted first.
    async fn process(&self, task: TaskSpec) -> Outcome {
        let started = Instant::now();
        let result = self.execute(&task).await;
        match &result.error {
            None => info!(state = "succeeded", result = %result.result, "task finished"),
            Some(e) => {
                info!(state = "failed", kind = %e.kind, message = %e.message, "task finished")
            }
        }
        let state = self.state.as_ref();
        self.persist(&task, || state.finish(&task.task_id, &result))
            .await;
        self.report(&task, &result).await;
        Outcome {
            task,
            result,
            elapsed: started.elapsed(),
            earlier: false,
        }
    }

    async fn execute(&self, task: &TaskSpec) -> ResultEnvelope {
        let state = self.state.as_ref();
        self.persist(task, || {
            state.transition(&task.task_id, TaskState::Fetching)
        })
        .await;
        info!(state = "fetching", "task taken");
        let module = match self.modules.fetch(&task.wasm_cid).await {
            Ok(module) => module,
            Err(e) => return ResultEnvelope::failure(e.kind(), e.to_string()),
        };
        self.persist(task, || state.transition(&task.task_id, TaskState::Running))
            .await;
        info!(state = "running", bytes = module.len(), "module ready");
        self.backend.run(task, module).await
    }

    /// Applies a state change, retrying with backoff until the store takes it: a task never moves
    /// on past a step that is not on disk.
    async fn persist<F, Fut>(&self, task: &TaskSpec, mut change: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::state::StateError>>,
    {
        let mut wait = REPORT_BACKOFF.0;
        while let Err(e) = change().await {
            warn!(task_id = %task.task_id, error = %e, retry_in_ms = wait.as_millis() as u64, "persisting a task's state failed");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(REPORT_BACKOFF.1);
        }
    }

    /// Writes the result back, retrying with backoff (100 ms doubling to 30 s) until accepted,
    /// then records that it was.
    async fn report(&self, task: &TaskSpec, result: &ResultEnvelope) {
        let mut wait = REPORT_BACKOFF.0;
        loop {
            match self.source.report(&task.task_id, result).await {
                Ok(()) => {
                    let state = self.state.as_ref();
                    self.persist(task, || state.mark_reported(&task.task_id))
                        .await;
                    return;
                }
                Err(e) => {
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "writing the result back failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(REPORT_BACKOFF.1);
                }
            }
        }
    }
}
