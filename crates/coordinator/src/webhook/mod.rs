//! Webhooks: once a task with a `callback_url` ends, its view (what `GET /v1/tasks/{id}` shows)
//! is POSTed there, signed ([`sign::SIGNATURE_HEADER`]) and with an idempotency key
//! ([`sign::IDEMPOTENCY_HEADER`]); a failed attempt is retried with backoff until a 2xx answer
//! or the retry time ([`RetryPolicy::give_up`]) runs out, counted from the first attempt.
//!
//! Every attempt is made durable before the next one starts, so a restart resumes a pending
//! delivery where it was (same attempt count, same backoff) and never posts a delivered one
//! again. The one repeat left is a crash between the receiver's 2xx and its record: the
//! idempotency key is there for that. Redirects are not followed.
//!
//! # Layout
//! - here: [`Webhooks`], the loop that finds ended tasks and delivers them; [`RetryPolicy`].
//! - [`sign`]: the signature, the idempotency key, the `callback_url` check.

pub mod sign;

use crate::api::TaskView;
use crate::state::{Attempt, DeliveryState, StateStore, TaskRecord, now_ms};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// When deliveries are retried and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt; it doubles after each further one.
    pub first: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// After this long since the first attempt, a failed attempt is the last (`gave_up`).
    pub give_up: Duration,
    /// Longest one attempt may take (connect, send, answer).
    pub timeout: Duration,
}

impl RetryPolicy {
    /// The wait before the next attempt after `failed` failed ones: `first` doubled per failure
    /// after the first, at most `max`.
    pub fn wait_after(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Why the deliverer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The HTTP client could not be built (its TLS roots).
    #[error("building the webhook client: {0}")]
    Client(String),
}

/// Delivers the webhooks of ended tasks.
pub struct Webhooks {
    /// Where tasks and their deliveries are persisted.
    state: Arc<dyn StateStore>,
    /// The HMAC keys of the signatures: per tenant (`COORDINATOR_TOKENS_FILE`), and for the
    /// rest `COORDINATOR_WEBHOOK_SECRET`.
    keys: Keys,
    /// When to retry and when to stop.
    policy: RetryPolicy,
    /// The client, with the system's TLS roots, the attempt timeout and no redirects.
    client: reqwest::Client,
}

impl Webhooks {
    /// A deliverer over `state`, signing with `keys`.
    pub fn new(
        state: Arc<dyn StateStore>,
        keys: Keys,
        policy: RetryPolicy,
    ) -> Result<Self, WebhookError> {
        let client = wasm_exec_tls::http_client()
            .map_err(|e| WebhookError::Client(e.to_string()))?
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            state,
            keys,
            policy,
            client,
        })
    }

    /// Delivers until `shutdown`: first the deliveries a restart left pending, then each task's
    /// as it ends (from the store's change events; a gap in them is made up by a new scan).
    /// At shutdown, attempts in flight are dropped; they resume at the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let Some(mut events) = this.state.subscribe() else {
            warn!("the state store broadcasts no changes: webhooks are not delivered");
            return;
        };
        let mut flights = Flights::default();
        this.resume(&mut flights);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = flights.running.join_next_with_id(), if !flights.running.is_empty() => {
                    let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                    if let Some(task_id) = flights.ids.remove(&id) {
                        flights.tasks.remove(&task_id);
                    }
                }
                event = events.recv() => match event {
                    Ok(event) if event.state.is_finished() => {
                        match this.state.get(&event.task_id) {
                            Ok(Some(record)) => this.start(record, &mut flights),
                            Ok(None) => {}
                            Err(e) => warn!(task_id = %event.task_id, error = %e, "reading an ended task for its webhook"),
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "webhooks fell behind the change events; scanning for pending deliveries");
                        this.resume(&mut flights);
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        flights.running.shutdown().await;
    }

    /// Starts every pending delivery of an ended task.
    fn resume(self: &Arc<Self>, flights: &mut Flights) {
        match self.state.pending_deliveries() {
            Ok(records) => {
                if !records.is_empty() {
                    info!(
                        deliveries = records.len(),
                        "resuming pending webhook deliveries"
                    );
                }
                for record in records {
                    self.start(record, flights);
                }
            }
            Err(e) => warn!(error = %e, "reading pending webhook deliveries"),
        }
    }

    /// Starts the delivery of an ended task's webhook, unless it has none, it is done, or it
    /// is under way.
    fn start(self: &Arc<Self>, record: TaskRecord, flights: &mut Flights) {
        let pending = record
            .callback
            .as_ref()
            .is_some_and(|c| c.state == DeliveryState::Pending);
        let task_id = record.task.task_id.clone();
        if !pending || !record.state.is_finished() || flights.tasks.contains(&task_id) {
            return;
        }
        let handle = flights.running.spawn(self.clone().deliver(task_id.clone()));
        flights.ids.insert(handle.id(), task_id.clone());
        flights.tasks.insert(task_id);
    }

    /// Attempts one task's delivery until it is delivered or given up, each attempt persisted.
    async fn deliver(self: Arc<Self>, task_id: String) {
        loop {
            let record = match self.state.get(&task_id) {
                Ok(Some(record)) => record,
                Ok(None) => return,
                Err(e) => {
                    warn!(task_id, error = %e, "reading a task for its webhook; retrying");
                    tokio::time::sleep(self.policy.first).await;
                    continue;
                }
            };
            let Some(callback) = record.callback.clone() else {
                return;
            };
            if callback.state != DeliveryState::Pending {
                return;
            }
            if let Some(last) = callback.last_attempt_ms {
                let due = last.saturating_add(ms(self.policy.wait_after(callback.attempts)));
                tokio::time::sleep(Duration::from_millis(due.saturating_sub(now_ms()))).await;
            }
            let started = now_ms();
            let attempt = match self.post(&callback.url, record).await {
                Ok(()) => Attempt::Delivered,
                Err(error) => {
                    let first = callback.first_attempt_ms.unwrap_or(started);
                    if now_ms().saturating_sub(first) >= ms(self.policy.give_up) {
                        Attempt::GaveUp { error }
                    } else {
                        Attempt::Failed { error }
                    }
                }
            };
            match &attempt {
                Attempt::Delivered => {
                    info!(
                        task_id,
                        attempts = callback.attempts + 1,
                        "webhook delivered"
                    );
                }
                Attempt::Failed { error } => {
                    warn!(task_id, attempt = callback.attempts + 1, error = %error, "webhook attempt failed; retrying");
                }
                Attempt::GaveUp { error } => {
                    warn!(task_id, attempts = callback.attempts + 1, error = %error, "webhook given up: the retry time is over");
                }
            }
            self.persist(&task_id, &attempt).await;
            if !matches!(attempt, Attempt::Failed { .. }) {
                return;
            }
        }
    }

    /// Records an attempt, retrying until the store takes it (the next attempt waits for it,
    /// so that a restart sees every attempt made).
    async fn persist(&self, task_id: &str, attempt: &Attempt) {
        while let Err(e) = self.state.record_delivery(task_id, attempt.clone()).await {
            warn!(task_id, error = %e, "recording a webhook attempt; retrying");
            tokio::time::sleep(self.policy.first).await;
        }
    }

    /// Posts the task's view to `url`, signed; `Err` says why it was not taken (not a 2xx).
    async fn post(&self, url: &str, record: TaskRecord) -> Result<(), String> {
        let key = sign::idempotency_key(&record.task.task_id);
        let secret = self.keys.of(record.tenant.as_deref()).ok_or_else(|| {
            "no key signs this task's webhook (its tenant's webhook_secret and \
             COORDINATOR_WEBHOOK_SECRET are unset)"
                .to_owned()
        })?;
        let body = serde_json::to_vec(&TaskView::from(record)).map_err(|e| e.to_string())?;
        let signature = sign::signature(secret, now_ms() / 1000, &body);
        let answer = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, signature)
            .header(sign::IDEMPOTENCY_HEADER, key)
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// The keys that sign webhooks.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// `COORDINATOR_WEBHOOK_SECRET`: for tasks without a tenant, and tenants without a key.
    pub default: Option<Vec<u8>>,
    /// Each tenant's own key (`webhook_secret` in `COORDINATOR_TOKENS_FILE`).
    pub tenants: HashMap<String, Vec<u8>>,
}

impl Keys {
    /// The key of `tenant`'s webhooks.
    fn of(&self, tenant: Option<&str>) -> Option<&[u8]> {
        tenant
            .and_then(|t| self.tenants.get(t))
            .or(self.default.as_ref())
            .map(Vec::as_slice)
    }

    /// Whether any webhook can be signed.
    pub fn any(&self) -> bool {
        self.default.is_some() || !self.tenants.is_empty()
    }
}

/// The deliveries under way: the spawned attempts, and which task each is for.
#[derive(Default)]
struct Flights {
    running: JoinSet<()>,
    ids: HashMap<tokio::task::Id, String>,
    tasks: HashSet<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An error and its causes, `: `-separated (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_first_up_to_the_most() {
        let policy = RetryPolicy {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
            give_up: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
        };
        let waits: Vec<u64> = (1..=6).map(|n| ms(policy.wait_after(n))).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.wait_after(u32::MAX), Duration::from_secs(1));
    }
}
