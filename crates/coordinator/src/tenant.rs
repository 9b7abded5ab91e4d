//! Tenants and their API tokens (`COORDINATOR_TOKENS_FILE`): who a bearer token is, the tenant's
//! concurrency quota, submission rate and webhook key.
//!
//! The file is JSON; only the SHA-256 of each token is kept in it:
//!
//! ```json
//! {"tenants": [{"tenant": "acme", "concurrency": 4, "tasks_per_minute": 600,
//!               "webhook_secret": "…", "tokens": [{"name": "acme-ci", "sha256": "<64 hex>"}]}]}
//! ```
//!
//! SHA-256 and not a slow password hash: tokens are drawn at random with 256 bits (`coordinator
//! token new`), so no guess list or brute force reaches one from its hash, and one hash per
//! request costs about a microsecond; a slow hash only helps secrets people choose. A lookup is
//! by hash, so the comparison never touches the token's own bytes.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One tenant: its name and limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Its name, recorded on its tasks (`tenant`).
    pub tenant: String,
    /// Most of its tasks running at once (the scheduler's fair queue holds the rest).
    pub concurrency: usize,
    /// Most tasks it may submit per minute, if limited (429 with `Retry-After` beyond).
    #[serde(default)]
    pub tasks_per_minute: Option<u32>,
    /// The HMAC key of its webhooks; unset: `COORDINATOR_WEBHOOK_SECRET`, if set.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Its tokens.
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// What the token is for (logged with the requests it makes, never the token).
    name: String,
    /// Hex SHA-256 of the token.
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tenants: Vec<Tenant>,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
#[error("tokens file: {0}")]
pub struct TenantsError(String);

/// Who made a request: a token of a tenant, or the default caller (`COORDINATOR_API_TOKEN`, or
/// no token at all), whose tasks have no tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant, `None` for the default caller.
    pub tenant: Option<Arc<Tenant>>,
    /// The token's name (`token` for `COORDINATOR_API_TOKEN`, `anonymous` with none).
    pub name: String,
}

impl Caller {
    /// The tenant's name, as recorded on its tasks.
    pub fn tenant_name(&self) -> Option<&str> {
        self.tenant.as_deref().map(|t| t.tenant.as_str())
    }
}

/// The tenants of a tokens file, found by the hash of a token.
#[derive(Debug, Default)]
pub struct Tenants {
    by_hash: HashMap<[u8; 32], (String, Arc<Tenant>)>,
    by_name: HashMap<String, Arc<Tenant>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Tenants {
    /// Reads a tokens file's text; refuses a duplicate tenant or token, a hash that is not 64
    /// hex digits and a zero concurrency, naming the entry.
    pub fn from_json(text: &str) -> Result<Self, TenantsError> {
        let file: TokensFile = serde_json::from_str(text).map_err(|e| {
            TenantsError(format!(
                "{e}; expected {{\"tenants\": [{{\"tenant\", \"concurrency\", \
                 \"tasks_per_minute\"?, \"webhook_secret\"?, \"tokens\": [{{\"name\", \"sha256\"}}]}}]}}"
            ))
        })?;
        let mut tenants = Self::default();
        for tenant in file.tenants {
            let tenant = Arc::new(tenant);
            if tenant.concurrency == 0 {
                return Err(TenantsError(format!(
                    "tenant \"{}\" has concurrency 0, so its tasks would never run; give it 1 or more",
                    tenant.tenant
                )));
            }
            if tenants
                .by_name
                .insert(tenant.tenant.clone(), tenant.clone())
                .is_some()
            {
                return Err(TenantsError(format!(
                    "tenant \"{}\" is listed twice; merge its tokens into one entry",
                    tenant.tenant
                )));
            }
            for token in &tenant.tokens {
                let hash = hex::decode(&token.sha256)
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or_else(|| {
                        TenantsError(format!(
                            "token \"{}\": sha256 must be 64 hex digits (`coordinator token new` \
                             prints a token and its hash)",
                            token.name
                        ))
                    })?;
                let entry = (token.name.clone(), tenant.clone());
                if tenants.by_hash.insert(hash, entry).is_some() {
                    return Err(TenantsError(format!(
                        "token \"{}\" has the hash of another token; draw a new one",
                        token.name
                    )));
                }
            }
        }
        Ok(tenants)
    }

    /// The caller a bearer token is, if it is one of the file's.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).map(|(name, tenant)| Caller {
            tenant: Some(tenant.clone()),
            name: name.clone(),
        })
    }

    /// A tenant by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    /// Every tenant's own webhook key.
    pub fn webhook_keys(&self) -> HashMap<String, Vec<u8>> {
        self.by_name
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), t.webhook_secret.clone()?.into_bytes())))
            .collect()
    }

    /// Every tenant's concurrency quota.
    pub fn quotas(&self) -> HashMap<String, usize> {
        self.by_name
            .iter()
            .map(|(name, t)| (name.clone(), t.concurrency))
            .collect()
    }

    /// Takes `n` submissions from the tenant's rate (a bucket of one minute's tasks, refilled
    /// evenly); `Err` is how long until they would fit. A tenant without a rate always passes.
    pub fn take(&self, tenant: &Tenant, n: u32) -> Result<(), Duration> {
        let Some(per_minute) = tenant.tasks_per_minute else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry(tenant.tenant.clone())
            .or_insert_with(|| Bucket::full(per_minute));
        bucket.take(per_minute, n, Instant::now())
    }
}

/// A token bucket of one minute's submissions.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32) -> Self {
        Self {
            tokens: f64::from(per_minute),
            at: Instant::now(),
        }
    }

    fn take(&mut self, per_minute: u32, n: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(per_minute));
        self.at = now;
        let want = f64::from(n);
        if self.tokens >= want {
            self.tokens -= want;
            return Ok(());
        }
        if rate <= 0.0 || n > per_minute {
            return Err(Duration::from_secs(60));
        }
        Err(Duration::from_secs_f64((want - self.tokens) / rate))
    }
}

/// A fresh token (256 random bits, hex, prefixed `wx_`) and the hex SHA-256 that goes in the
/// tokens file.
pub fn new_token() -> (String, String) {
    let random: Vec<u8> = (0..2)
        .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
        .collect();
    let token = format!("wx_{}", hex::encode(random));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_hash_and_a_bad_file_names_the_entry() {
        let (token, hash) = new_token();
        let text = format!(
            r#"{{"tenants": [{{"tenant": "acme", "concurrency": 2, "tasks_per_minute": 60,
                "tokens": [{{"name": "ci", "sha256": "{hash}"}}]}}]}}"#
        );
        let tenants = Tenants::from_json(&text).unwrap();
        let caller = tenants.caller(&token).expect("the token is known");
        assert_eq!(
            (caller.tenant_name(), caller.name.as_str()),
            (Some("acme"), "ci")
        );
        assert!(tenants.caller(&hash).is_none(), "the hash is not a token");
        assert!(tenants.caller("wx_guess").is_none());
        let bad = text.replace(&hash, "abc");
        let e = Tenants::from_json(&bad).unwrap_err().to_string();
        assert!(
            e.contains("token \"ci\"") && e.contains("64 hex digits"),
            "{e}"
        );
        let zero = text.replace("\"concurrency\": 2", "\"concurrency\": 0");
        assert!(
            Tenants::from_json(&zero)
                .unwrap_err()
                .to_string()
                .contains("concurrency 0")
        );
    }

    #[test]
    fn the_rate_refills_evenly_and_says_how_long_to_wait() {
        let start = Instant::now();
        let mut bucket = Bucket {
            tokens: 60.0,
            at: start,
        };
        assert_eq!(bucket.take(60, 60, start), Ok(()));
        let wait = bucket.take(60, 1, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        let later = start + Duration::from_secs(2);
        assert_eq!(bucket.take(60, 2, later), Ok(()));
        assert_eq!(bucket.take(60, 61, later), Err(Duration::from_secs(60)));
    }
}
