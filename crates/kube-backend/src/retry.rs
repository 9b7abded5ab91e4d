//! Bounded retries of API requests: transient failures (429, 5xx, timeouts, connection errors)
//! are tried again with doubling backoff; anything else (4xx) fails at once.

use super::errors::is_transient;
use std::future::Future;
use std::time::Duration;
use tracing::warn;

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubles after each.
    pub first_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 200 ms, 400 ms, 800 ms, 1.6 s: about 3 s of trying in all.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out; `what` names
    /// the request in the logs.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut wait = self.first_backoff;
        let mut left = self.attempts.max(1);
        loop {
            left -= 1;
            match attempt().await {
                Err(e) if left > 0 && is_transient(&e) => {
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.max_backoff);
                }
                done => return done,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failing(code: u16) -> kube::Error {
        let mut status = Status::failure("no", "");
        status.code = code;
        kube::Error::Api(status.boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_up_to_the_bound() {
        let policy = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(failing(503)) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), policy.attempts);
        assert!(result.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_client_errors_and_stops_at_success() {
        let policy = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(failing(403)) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(result.is_err());
        let calls = AtomicU32::new(0);
        let result = policy
            .run("test", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err(failing(500)) } else { Ok(n) } }
            })
            .await;
        assert_eq!(result.unwrap(), 2);
    }
}
