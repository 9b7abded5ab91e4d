//! Serving: the loop that queues tasks from the API and the source and starts them as running
//! slots free up, and the pump that polls the source in a task of its own.

use super::{Job, SOURCE_BATCHES, Scheduler};
use anyhow::Context as _;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wasm_exec_task::CheckedTask;

impl Scheduler {
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
}
