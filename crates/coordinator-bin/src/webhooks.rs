//! The webhook settings (`COORDINATOR_WEBHOOK_*`) and the deliverer they make.

use anyhow::Context;
use clap::Args;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::state::StateStore;
use wasm_exec_coordinator::tenant::Tenants;
use wasm_exec_coordinator::webhook::{Keys, RetryPolicy, Webhooks};

/// Webhooks: the key that signs them, and how long a failing one is retried.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// The HMAC-SHA256 key that signs every webhook (header `X-Wasm-Exec-Signature`); unset:
    /// submissions with a `callback_url` are refused. Use 32 random bytes or more.
    #[arg(long, env = "COORDINATOR_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Milliseconds to wait after a webhook's first failed attempt; the wait doubles after each
    /// further failure, up to COORDINATOR_WEBHOOK_RETRY_MAX_SEC.
    #[arg(long, env = "COORDINATOR_WEBHOOK_RETRY_FIRST_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_first_ms: u64,

    /// Longest wait between two attempts of a webhook, in seconds.
    #[arg(long, env = "COORDINATOR_WEBHOOK_RETRY_MAX_SEC", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_max_sec: u64,

    /// Seconds after a webhook's first attempt when a failing one is given up (its task then
    /// shows `gave_up`; the result stays readable through the API).
    #[arg(
        long,
        env = "COORDINATOR_WEBHOOK_GIVE_UP_SEC",
        default_value_t = 86_400
    )]
    pub webhook_give_up_sec: u64,

    /// Seconds one webhook attempt may take (connect, send, answer) before it counts as failed.
    #[arg(long, env = "COORDINATOR_WEBHOOK_TIMEOUT_SEC", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_sec: u64,
}

impl WebhookArgs {
    /// The retry policy these settings give.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_millis(self.webhook_retry_first_ms),
            max: Duration::from_secs(self.webhook_retry_max_sec),
            give_up: Duration::from_secs(self.webhook_give_up_sec),
            timeout: Duration::from_secs(self.webhook_timeout_sec),
        }
    }

    /// The deliverer over `state`, if some key is set (this secret, or a tenant's).
    pub fn deliverer(
        &self,
        state: Arc<dyn StateStore>,
        tenants: Option<&Tenants>,
    ) -> anyhow::Result<Option<Webhooks>> {
        anyhow::ensure!(
            self.webhook_secret.as_ref().is_none_or(|s| !s.is_empty()),
            "COORDINATOR_WEBHOOK_SECRET is set but empty; set it to 32 random bytes or more, or \
             unset it to refuse callbacks"
        );
        let keys = Keys {
            default: self.webhook_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            tenants: tenants.map(Tenants::webhook_keys).unwrap_or_default(),
        };
        if !keys.any() {
            return Ok(None);
        }
        Webhooks::new(state, keys, self.policy())
            .map(Some)
            .context("setting up webhooks (COORDINATOR_WEBHOOK_SECRET)")
    }
}

/// Runs the deliverer, if there is one, until `shutdown` (attempts in flight then are dropped and
/// resume at the next start, so nothing waits for them).
pub fn spawn(webhooks: Option<Webhooks>, shutdown: &CancellationToken) {
    if let Some(webhooks) = webhooks {
        tokio::spawn(webhooks.run(shutdown.clone()));
    }
}
