//! Bounded retries of API requests: transient failures (429, 5xx, timeouts, connection errors)
//! are tried again with doubling backoff and jitter ([`backon`]); anything else (4xx) fails at
//! once. A server that asks for a wait (`Retry-After`, as API Priority and Fairness does with its
//! 429s: [`crate::throttle`]) gets the wait it asks for, each time, for as long as the throttle
//! bound allows (not only for the attempts: a throttling server is alive and says when to come
//! back); a server that does not answer at all (restarting) is tried for longer than one that
//! answers with an error.

use super::errors::{is_transient, no_answer, retry_after};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubles after each.
    pub first_backoff: Duration,
    /// Longest wait between two attempts of our own choosing.
    pub max_backoff: Duration,
    /// Longest wait the server may ask for (`Retry-After`); a longer one is cut to this.
    pub max_retry_after: Duration,
    /// How long a server that keeps throttling (an error with `Retry-After`) is waited for, as
    /// it asks, however many attempts that takes.
    pub throttled: Duration,
    /// How long an API server that does not answer at all (connection refused or reset: a
    /// restart, an upgrade, a failover) is tried again, however many attempts that takes.
    pub outage: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 200 ms, 400 ms, 800 ms, 1.6 s: about 3 s of trying in all; a
    /// throttling server, as it asks (each wait up to 30 s) for 60 s; an API server that does
    /// not answer, for 60 s.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            throttled: Duration::from_secs(60),
            outage: Duration::from_secs(60),
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
        let mut waits = self.waits();
        let mut unanswered_since: Option<Instant> = None;
        let mut throttled_since: Option<Instant> = None;
        loop {
            match attempt().await {
                Err(e) if is_transient(&e) => {
                    let wait = if no_answer(&e) {
                        throttled_since = None;
                        let since = *unanswered_since.get_or_insert_with(Instant::now);
                        let left = self.outage.saturating_sub(since.elapsed());
                        // Past the attempts, keep trying at the longest backoff.
                        let wait = waits.next().unwrap_or(self.max_backoff).min(left);
                        (!left.is_zero()).then_some(wait)
                    } else if let Some(asked) = self.server_wait(&e) {
                        unanswered_since = None;
                        let since = *throttled_since.get_or_insert_with(Instant::now);
                        let left = self.throttled.saturating_sub(since.elapsed());
                        (!left.is_zero()).then_some(asked.min(left))
                    } else {
                        unanswered_since = None;
                        throttled_since = None;
                        waits.next()
                    };
                    let Some(wait) = wait else {
                        return Err(e);
                    };
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                done => return done,
            }
        }
    }

    /// The wait the server asked for with `error`, at most [`Self::max_retry_after`].
    pub fn server_wait(&self, error: &kube::Error) -> Option<Duration> {
        retry_after(error).map(|wait| wait.min(self.max_retry_after))
    }

    /// The waits between attempts: `attempts - 1` of them, from `first_backoff` doubling to
    /// `max_backoff`, each with jitter (so that many tasks retrying one failed API server do not
    /// all come back in the same instant).
    pub fn waits(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::new()
            .with_min_delay(self.first_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .with_max_times(self.attempts.max(1) as usize - 1)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failing(code: u16) -> kube::Error {
        let mut status = Status::failure("no", "");
        status.code = code;
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_stop_at_the_bound() {
        let policy = RetryPolicy::default();
        let waits: Vec<Duration> = policy.waits().collect();
        assert_eq!(waits.len() as u32, policy.attempts - 1);
        for (n, wait) in waits.iter().enumerate() {
            let base = (policy.first_backoff * 2u32.pow(n as u32)).min(policy.max_backoff);
            assert!(
                *wait >= base && *wait <= base * 2,
                "wait {n}: {wait:?} for {base:?}"
            );
        }
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

    fn throttled(seconds: u32) -> kube::Error {
        let mut status = Status::failure("Too many requests", "TooManyRequests");
        status.code = 429;
        status.details = Some(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: seconds,
        });
        kube::Error::Api(status.boxed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttling_server_is_waited_for_as_it_asks_past_the_attempts() {
        let policy = RetryPolicy::default();
        let started = tokio::time::Instant::now();
        let calls = std::sync::Mutex::new(Vec::new());
        // Throttled for 12 s with `Retry-After: 2`: 7 attempts, 2 s apart, then success; our own
        // 5 attempts (about 3 s) would have given up.
        let result = policy
            .run("test", || {
                calls.lock().unwrap().push(started.elapsed());
                async move {
                    if started.elapsed() < Duration::from_secs(12) {
                        Err(throttled(2))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(result.is_ok(), "{result:?}");
        let calls = calls.into_inner().unwrap();
        assert_eq!(calls.len(), 7, "{calls:?}");
        assert!(
            calls
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::from_secs(2)),
            "{calls:?}"
        );
        // Throttled for good: it gives up at the throttle bound, not before.
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = policy.run("test", || async { Err(throttled(7)) }).await;
        assert!(result.is_err());
        assert_eq!(started.elapsed(), policy.throttled);
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_server_that_does_not_answer_is_tried_for_the_outage() {
        let policy = RetryPolicy::default();
        let refused = || kube::Error::Service("connection refused".into());
        // Down for 20 s, well past the 5 attempts (about 3 s): the request still succeeds.
        let started = tokio::time::Instant::now();
        let result = policy
            .run("test", || async move {
                if started.elapsed() < Duration::from_secs(20) {
                    Err(refused())
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(result.is_ok(), "{result:?}");
        // Down for good: it gives up once the outage bound has passed, not before.
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = policy.run("test", || async { Err(refused()) }).await;
        assert!(result.is_err());
        let waited = started.elapsed();
        assert!(
            waited >= policy.outage && waited < policy.outage + policy.max_backoff,
            "{waited:?}"
        );
    }
}
