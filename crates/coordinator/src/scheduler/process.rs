//! One task's path once it holds a running slot: fetch the module, run it on the backend,
//! persist the result, write it back to where the task came from, each step retried until it
//! happened (a task never moves past a step that did not).

use super::{BACKOFF, Job, Outcome, Scheduler};
use crate::source::Delivery;
use crate::state::{API_ORIGIN, TaskState};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use wasm_exec_task::{CheckedTask, ErrorKind, ResultEnvelope, TaskSpec};

impl Scheduler {
    /// One task from module fetch to result written back. `permit` is a running slot, given
    /// back as soon as the backend returns.
    pub(super) async fn process(self, job: Job, permit: OwnedSemaphorePermit) -> Outcome {
        let span = info_span!("task", task_id = %job.task.task_id, cid = %job.task.wasm_cid);
        async move {
            let started = Instant::now();
            let (result, stop) = self.run_job(&job).await;
            drop(permit);
            if stop.is_cancelled() || result.kind() == Some(ErrorKind::Cancelled) {
                // Cancelled through the API: the store holds the cancel (durable before it was
                // answered) and keeps it over any result, so there is nothing to persist.
                // Stopped by a shutdown: not a result; the task stays unfinished, runs again.
                if stop.is_cancelled() {
                    info!(state = "cancelled", "task cancelled");
                    let kind = ErrorKind::CancelledByRequest.as_str();
                    self.metrics.record_result(kind, None);
                } else {
                    info!(state = "unfinished", "task stopped by the shutdown");
                }
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

    /// Runs the job unless it was cancelled first; returns its result and its stop token (its
    /// run ended by a cancel if that is cancelled).
    async fn run_job(&self, job: &Job) -> (ResultEnvelope, CancellationToken) {
        let stop = self.live.start(&job.task.task_id);
        let result = match &job.checked {
            _ if stop.is_cancelled() => cancelled_result(),
            Ok(task) => self.execute(task, job.resumed, &stop).await,
            Err(e) => {
                ResultEnvelope::failure(ErrorKind::BadInput, format!("the task is malformed: {e}"))
            }
        };
        self.live.end(&job.task.task_id);
        (result, stop)
    }

    /// The task, with the intake check's verdict under the rules for its origin (CIDs only for
    /// a source that says so).
    pub(super) fn job(&self, task: TaskSpec, origin: &str) -> Job {
        let checked = if origin == self.source.name() && !self.source.mirror_names() {
            task.check(&self.rules.cids_only())
        } else {
            task.check(&self.rules)
        };
        Job {
            task,
            checked,
            origin: origin.into(),
            resumed: false,
            tenant: None,
        }
    }

    /// Fetches the module and runs the task; `durable_start` waits until its start is recorded
    /// (a resumed task: see [`StateStore::record_start`](crate::state::StateStore::record_start)).
    /// When `stop` is cancelled the fetch is dropped, or the backend told to stop the run.
    async fn execute(
        &self,
        task: &CheckedTask,
        durable_start: bool,
        stop: &CancellationToken,
    ) -> ResultEnvelope {
        self.state.record_progress(task.id(), TaskState::Fetching);
        info!(state = "fetching", "task taken");
        let fetch_started = Instant::now();
        let modules = self.modules.as_ref();
        // Short of descriptors or memory (EMFILE, ENOMEM, ...): the host's state, not the task's
        // result, so it waits and tries again; every other failure is final.
        let fetching = retry("fetching a module", || async {
            match modules.fetch(&task.spec.wasm_cid).await {
                Err(e) if e.is_transient() => Err(e),
                done => Ok(done),
            }
        });
        let fetched = tokio::select! {
            fetched = fetching => fetched,
            () = stop.cancelled() => return cancelled_result(),
        };
        let module = match fetched {
            Ok(module) => module,
            Err(e) => return ResultEnvelope::failure(e.kind(), e.to_string()),
        };
        let fetched = fetch_started.elapsed();
        self.metrics.fetch_seconds.observe(fetched.as_secs_f64());
        self.metrics.observe_stage("fetch", fetched);
        self.metrics.fetched_bytes.inc_by(module.len() as u64);
        if durable_start {
            let state = self.state.as_ref();
            retry("recording a resumed task's start", || {
                state.record_start(task.id())
            })
            .await;
        } else {
            self.state.record_progress(task.id(), TaskState::Running);
        }
        info!(state = "running", bytes = module.len(), "module ready");
        let run_started = Instant::now();
        let run = self.run_until_resources(task, module);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            () = stop.cancelled() => {
                self.backend.cancel(task.id()).await;
                // The local backend stops within a tick; a run that does not end within the
                // grace is dropped (its slot is the scheduler's again).
                tokio::time::timeout(CANCEL_GRACE, run).await.unwrap_or_else(|_| cancelled_result())
            }
        };
        let ran = run_started.elapsed();
        self.metrics.run_seconds.observe(ran.as_secs_f64());
        self.metrics
            .observe_stage("dispatch", ran.saturating_sub(wasm_time(&result)));
        result
    }

    /// Runs the task on the backend; a `host_exhausted` result (descriptors or memory short while
    /// it was prepared or run) is the host's state, not the task's result, so the run is made
    /// again after the same backoff as [`retry`] until it gives a real result.
    async fn run_until_resources(
        &self,
        task: &CheckedTask,
        module: Arc<Vec<u8>>,
    ) -> ResultEnvelope {
        let backend = self.backend.as_ref();
        retry("running a task", || {
            let module = module.clone();
            async move {
                let result = backend.run(task, module).await;
                match result.kind() {
                    Some(ErrorKind::HostExhausted) => {
                        Err(result.error.map_or_else(String::new, |e| e.message))
                    }
                    _ => Ok(result),
                }
            }
        })
        .await
    }

    /// Writes the result back to the task's origin (retrying until accepted), then records that
    /// it was. Tasks submitted through the API need no write-back: the API serves their result.
    pub(super) async fn report(&self, job: &Job, result: &ResultEnvelope) {
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

/// How long a cancelled run may take to end before the scheduler stops waiting for it.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The result a run stopped by a cancel gets here (the store's own, naming who, is kept).
fn cancelled_result() -> ResultEnvelope {
    ResultEnvelope::failure(ErrorKind::CancelledByRequest, "cancelled through the API")
}

/// The Wasm call's own time (instantiation and call), from the result document.
fn wasm_time(result: &ResultEnvelope) -> Duration {
    Duration::try_from_secs_f64(result.duration_ms / 1e3).unwrap_or_default()
}

/// Retries `attempt` with backoff (from 100 ms doubling to 30 s, with jitter) until it
/// succeeds: a task never moves past a step that did not happen.
pub(super) async fn retry<T, F, Fut, E>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut waits = ExponentialBuilder::new()
        .with_min_delay(BACKOFF.0)
        .with_max_delay(BACKOFF.1)
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) => {
                let wait = waits.next().unwrap_or(BACKOFF.1);
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
