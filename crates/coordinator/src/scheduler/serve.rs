//! Serving: the loop that queues tasks from the API and the source and starts them as running
//! slots free up, and the pump that polls the source in a task of its own.

use super::fair::FairQueue;
use super::process::retry;
use super::{Admitted, Job, SOURCE_BATCHES, Scheduler};
use crate::source::Polled;
use crate::state::StateError;
use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wasm_exec_task::TaskSpec;

impl Scheduler {
    /// Serves until `shutdown` is cancelled: runs tasks from the source (polled) and from the
    /// API (`inbox`, already persisted). On shutdown it stops taking tasks and waits for the
    /// running ones to be finished and written back (the caller bounds the wait).
    ///
    /// The source is polled by a task of its own ([`Scheduler::pump`]), so a slow poll (a chain
    /// node taking its time) never holds up the API's tasks or the start of the next one. An
    /// admission that cannot be persisted (a full disk) is retried by the pump, so the process
    /// lives on; only a pump that panics ends `serve`.
    pub async fn serve(
        &self,
        mut inbox: mpsc::Receiver<Admitted>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut queue = FairQueue::new(self.quotas.clone());
        for job in self.resume().await? {
            self.live.queued(&job.task.task_id);
            queue.push(job);
        }
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        // Which tenant each running worker is for, to free its quota slot when it ends.
        let mut tenants = HashMap::new();
        let (admitted, mut from_source) = mpsc::channel(SOURCE_BATCHES);
        let mut pump = tokio::spawn(self.clone().pump(admitted, shutdown.clone()));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned(), if queue.has_ready() => {
                    if let (Ok(permit), Some(job)) = (permit, queue.pop()) {
                        self.live.dequeued(&job.task.task_id);
                        let tenant = job.tenant.clone();
                        let handle = running.spawn(self.clone().process(job, permit));
                        tenants.insert(handle.id(), tenant);
                    }
                }
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match joined {
                        Ok((id, _)) => id,
                        Err(e) => {
                            warn!(error = %e, "a task's worker failed");
                            e.id()
                        }
                    };
                    // A worker that panicked frees its tenant's quota slot too.
                    if let Some(tenant) = tenants.remove(&id) {
                        queue.ended(&tenant);
                    }
                }
                Some(admitted) = inbox.recv() => {
                    self.live.queued(admitted.task.id());
                    queue.push(Job::from_api(admitted));
                }
                Some(jobs) = from_source.recv() => {
                    for job in jobs {
                        self.live.queued(&job.task.task_id);
                        queue.push(job);
                    }
                }
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
    /// retried on the next tick; a failed admission (the state disk full) is retried with
    /// backoff, the source not polled further meanwhile, until it lands or `shutdown`.
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
            if polled.tasks.is_empty() && polled.cursor.is_none() {
                continue;
            }
            // A failed admission (a full disk) is retried with the same tasks and cursor until it
            // lands: the state store reopens itself once space returns, and nothing was
            // acknowledged to the source meanwhile. Ending here would end the process.
            let fresh = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                fresh = retry("admitting the source's tasks", || self.admit(&polled, origin)) => fresh,
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

    /// Persists one poll's tasks (and its cursor, in the same commit); returns the fresh ones.
    async fn admit(&self, polled: &Polled, origin: &str) -> Result<Vec<TaskSpec>, StateError> {
        match &polled.cursor {
            Some(cursor) => {
                self.state
                    .admit_with_cursor(polled.tasks.clone(), origin, cursor.clone())
                    .await
            }
            None => self.state.admit(polled.tasks.clone(), origin).await,
        }
    }
}
