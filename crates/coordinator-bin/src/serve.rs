//! Running: the API on its listener, then either one `--once` pass or serving until a signal,
//! with the scheduler and the API supervised (if either ends, the process exits non-zero).

use crate::edge::{self, EdgeLimits};
use crate::table;
use anyhow::Context;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::scheduler::Scheduler;

/// Binds `listen` and serves `app` under `limits` until `shutdown`. With `once`, a listen error
/// only turns the API off (logged), since a `--once` run needs no API.
pub async fn api(
    listen: &str,
    once: bool,
    token: bool,
    app: axum::Router,
    limits: EdgeLimits,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<JoinHandle<std::io::Result<()>>>> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) if once => {
            tracing::warn!(%listen, error = %e, "the API is off for this --once run: cannot listen (set COORDINATOR_LISTEN)");
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("listening on COORDINATOR_LISTEN \"{listen}\""));
        }
    };
    let address = listener.local_addr().context("reading the API address")?;
    tracing::info!(
        %address,
        token,
        max_connections = limits.max_connections,
        header_timeout_sec = limits.header_timeout.as_secs(),
        body_timeout_sec = limits.body_timeout.as_secs(),
        idle_timeout_sec = limits.idle_timeout.as_secs(),
        "API listening"
    );
    Ok(Some(tokio::spawn(edge::serve(
        listener,
        app,
        limits,
        shutdown.clone(),
    ))))
}

/// Runs what the source has, prints the table; exit 1 if any task failed.
pub async fn once(scheduler: &Scheduler) -> anyhow::Result<ExitCode> {
    let outcomes = scheduler.run_once().await?;
    print!("{}", table::render(&outcomes));
    let failed = outcomes.iter().filter(|o| !o.result.ok).count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `until_signal` watches and how long it waits at shutdown.
pub struct Serving {
    /// The scheduler's task (`Scheduler::serve`).
    pub scheduler: JoinHandle<anyhow::Result<()>>,
    /// The API's task, if it listens.
    pub api: Option<JoinHandle<std::io::Result<()>>>,
    /// Resolves, saying why, when the process must stop although its tasks run: the state store
    /// found its database corrupt (`StateStore::corrupted`).
    pub fatal: Pin<Box<dyn Future<Output = String> + Send>>,
    /// Cancelled to stop taking tasks.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace runs out: running tasks are abandoned (and run again later).
    pub abandon: CancellationToken,
    /// Time running tasks get after the signal (`COORDINATOR_SHUTDOWN_GRACE_SEC`).
    pub grace: Duration,
}

impl Serving {
    /// Serves until SIGINT/SIGTERM, then lets running tasks finish within the grace. If the
    /// scheduler or the API ends first (an error, a panic, or any return at all), that is a
    /// failure of the process: it exits non-zero so that its supervisor restarts it, rather
    /// than going on half alive (an API that answers 201 with no scheduler to run the tasks).
    pub async fn until_signal(mut self) -> anyhow::Result<ExitCode> {
        let api_ended = async {
            match self.api.as_mut() {
                Some(api) => api.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown_signal() => {}
            ended = &mut self.scheduler => {
                self.shutdown.cancel();
                return Err(ended_early("the scheduler", ended.map(|r| r.map_err(|e| format!("{e:#}")))));
            }
            ended = api_ended => {
                self.shutdown.cancel();
                return Err(ended_early("the API", ended.map(|r| r.map_err(|e| e.to_string()))));
            }
            found = &mut self.fatal => {
                self.shutdown.cancel();
                return Err(anyhow::anyhow!("{found}; exiting so that the restart checks the database"));
            }
        }
        tracing::info!(
            grace_sec = self.grace.as_secs(),
            "shutting down: finishing running tasks"
        );
        self.shutdown.cancel();
        match tokio::time::timeout(self.grace, &mut self.scheduler).await {
            Ok(joined) => joined.context("the scheduler failed")??,
            Err(_) => {
                tracing::warn!("grace period over; tasks still running are abandoned");
                self.abandon.cancel();
                if tokio::time::timeout(ABANDON_GRACE, self.scheduler)
                    .await
                    .is_err()
                {
                    tracing::warn!("abandoned tasks did not clean up in time");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The error for an essential task that ended before shutdown.
fn ended_early(
    what: &str,
    ended: Result<Result<(), String>, tokio::task::JoinError>,
) -> anyhow::Error {
    let how = match ended {
        Ok(Ok(())) => "returned".to_owned(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(e) if e.is_panic() => "panicked".to_owned(),
        Err(e) => format!("was cancelled: {e}"),
    };
    anyhow::anyhow!(
        "{what} stopped before shutdown ({how}); exiting so that the coordinator is restarted"
    )
}

/// Time abandoned tasks get to clean up (the kubernetes backend deletes their Jobs).
const ABANDON_GRACE: Duration = Duration::from_secs(10);

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(scheduler: JoinHandle<anyhow::Result<()>>) -> Serving {
        Serving {
            scheduler,
            api: None,
            fatal: Box::pin(std::future::pending()),
            shutdown: CancellationToken::new(),
            abandon: CancellationToken::new(),
            grace: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn a_scheduler_that_fails_or_panics_before_shutdown_ends_the_process_with_an_error() {
        let failed = serving(tokio::spawn(async { anyhow::bail!("the store is gone") }));
        let shutdown = failed.shutdown.clone();
        let e = failed.until_signal().await.unwrap_err().to_string();
        assert!(
            e.contains("the scheduler stopped before shutdown") && e.contains("the store is gone"),
            "{e}"
        );
        assert!(shutdown.is_cancelled(), "the API was told to stop too");

        let panicked = serving(tokio::spawn(async { panic!("unreachable in the resume") }));
        let e = panicked.until_signal().await.unwrap_err().to_string();
        assert!(e.contains("panicked"), "{e}");
    }

    #[tokio::test]
    async fn an_api_that_stops_before_shutdown_ends_the_process_with_an_error() {
        let mut serving = serving(tokio::spawn(std::future::pending()));
        serving.api = Some(tokio::spawn(async {
            Err(std::io::Error::other("accept failed"))
        }));
        let e = serving.until_signal().await.unwrap_err().to_string();
        assert!(e.contains("the API stopped before shutdown"), "{e}");
    }

    #[tokio::test]
    async fn a_database_found_corrupt_while_serving_ends_the_process_with_an_error() {
        let mut serving = serving(tokio::spawn(std::future::pending()));
        serving.fatal = Box::pin(async { "the state database is corrupt".to_owned() });
        let shutdown = serving.shutdown.clone();
        let e = serving.until_signal().await.unwrap_err().to_string();
        assert!(
            e.contains("corrupt") && e.contains("restart checks the database"),
            "{e}"
        );
        assert!(
            shutdown.is_cancelled(),
            "the scheduler and API were told to stop"
        );
    }
}
