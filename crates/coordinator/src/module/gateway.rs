//! The IPFS HTTP gateway store (`COORDINATOR_IPFS_ENDPOINT`): fetches a module by CID and
//! verifies every byte against the CID before anything may run it.
//!
//! It asks for the trustless CAR format (`?format=car`, `Accept: application/vnd.ipld.car`) and
//! then checks every block and rebuilds the file from the DAG; a gateway that ignores the format
//! (js-ipfs does) sends the plain file, whose CID is then recomputed with the `ipfs add`
//! defaults. Either way a mismatch is an `integrity` error and the bytes are dropped.
//!
//! Responses are size-capped while they stream in; connect and whole-request timeouts apply;
//! 5xx answers, timeouts and connection errors are retried with backoff, 4xx answers are not.
//! Verified modules are kept on disk by CID (optional), and checked again when read back. Only
//! binary Wasm is served: verified bytes that do not start with `\0asm` (WAT text, anything else
//! a CID may name) are refused as `bad_module`, naming the CID and never quoting the bytes.

use super::{ModuleError, ModuleStore, caused_by_exhaustion, refuse_unless_wasm};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasm_exec_ipfs::Cid;
use wasm_exec_ipfs::{CarLimits, file_from_car};
use wasm_exec_ipfs::{parse_cid, verify_file, verify_raw_block};

/// Longest wait between two attempts at a gateway.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Multicodec of a raw block.
const RAW: u64 = 0x55;

/// How the gateway store talks to its gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Base URL, e.g. `http://127.0.0.1:18480/ipfs`; the CID is appended as a path segment.
    pub endpoint: String,
    /// Largest module accepted, in bytes.
    pub max_bytes: u64,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for a whole request, body included.
    pub request_timeout: Duration,
    /// Retries after a 5xx, a timeout or a connection error (so `retries + 1` attempts).
    pub retries: u32,
    /// First wait between attempts; doubles each time.
    pub backoff: Duration,
    /// Directory where verified modules are kept by CID, if any.
    pub cache_dir: Option<PathBuf>,
}

/// Fetches modules from an IPFS HTTP gateway.
#[derive(Debug, Clone)]
pub struct GatewayStore {
    client: reqwest::Client,
    config: GatewayConfig,
}

/// What one attempt ended with.
enum Attempt {
    /// Verified bytes.
    Done(Vec<u8>),
    /// Worth another try (5xx, timeout, connection error); the message says what happened.
    Retry(String),
    /// Final (4xx, integrity, too large).
    Fail(ModuleError),
}

impl GatewayStore {
    /// A store for `config`. An HTTPS gateway is trusted as the chain RPC is (`wasm-exec-tls`):
    /// the system's store, `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, bundled roots where the
    /// system has none.
    pub fn new(config: GatewayConfig) -> Result<Self, ModuleError> {
        let client = wasm_exec_tls::http_client()
            .map_err(|e| ModuleError::Io(format!("TLS for the gateway {}: {e}", config.endpoint)))?
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("wasm-exec-coordinator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ModuleError::Io(format!("creating the HTTP client: {e}")))?;
        Ok(Self { client, config })
    }

    fn cache_path(&self, cid: &Cid) -> Option<PathBuf> {
        self.config
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(cid.to_string()))
    }

    /// A module from the disk cache, if present and still matching its CID.
    fn cached(&self, cid: &Cid) -> Option<Vec<u8>> {
        let path = self.cache_path(cid)?;
        let bytes = std::fs::read(&path).ok()?;
        match verify_file(cid, &bytes) {
            // Bytes cached before the Wasm check (WAT text) are fetched again and refused then.
            Ok(()) if refuse_unless_wasm(&cid.to_string(), &bytes).is_err() => None,
            Ok(()) => Some(bytes),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a cached module that no longer matches its CID");
                None
            }
        }
    }

    fn keep(&self, cid: &Cid, bytes: &[u8]) {
        let Some(path) = self.cache_path(cid) else {
            return;
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let dir = path.parent().unwrap_or(std::path::Path::new("."));
                let mut file = tempfile::NamedTempFile::new_in(dir)?;
                std::io::Write::write_all(&mut file, bytes)?;
                file.persist(&path).map(|_| ()).map_err(|e| e.error)
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not cache a fetched module");
        }
    }

    async fn attempt(&self, cid: &Cid, url: &str) -> Attempt {
        let response = match self
            .client
            .get(url)
            .header(
                ACCEPT,
                "application/vnd.ipld.car, application/vnd.ipld.raw;q=0.5, */*;q=0.1",
            )
            .send()
            .await
        {
            Ok(r) => r,
            // No socket for want of descriptors: this process's shortage, not the gateway's.
            Err(e) if caused_by_exhaustion(&e) => {
                return Attempt::Fail(ModuleError::Exhausted(format!(
                    "requesting {url}: {}",
                    with_causes(&e)
                )));
            }
            Err(e) => return Attempt::Retry(format!("requesting {url}: {}", with_causes(&e))),
        };
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Attempt::Retry(format!("{url} answered {status}"));
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Attempt::Fail(ModuleError::NotFound {
                cid: cid.to_string(),
                place: format!("the gateway {}", self.config.endpoint),
            });
        }
        if !status.is_success() {
            return Attempt::Fail(ModuleError::Unavailable(format!(
                "{url} answered {status}; not retried"
            )));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        // A CAR carries some framing besides the file's bytes; allow for it.
        let cap = self
            .config
            .max_bytes
            .saturating_mul(2)
            .saturating_add(1 << 20);
        let body = match read_capped(response, cap, self.config.max_bytes).await {
            Ok(body) => body,
            Err(Capped::TooLarge(bytes)) => {
                return Attempt::Fail(ModuleError::TooLarge {
                    bytes,
                    limit: self.config.max_bytes,
                });
            }
            Err(Capped::Failed(e)) => {
                return Attempt::Retry(format!("reading {url}: {}", with_causes(&e)));
            }
        };
        let verified = if content_type.starts_with("application/vnd.ipld.car") {
            let limits = CarLimits {
                max_file_bytes: self.config.max_bytes,
                ..CarLimits::default()
            };
            file_from_car(cid, &body, &limits)
        } else if content_type.starts_with("application/vnd.ipld.raw") && cid.codec() == RAW {
            verify_raw_block(cid, &body).map(|()| body)
        } else {
            verify_file(cid, &body).map(|()| body)
        };
        match verified {
            Ok(bytes) if bytes.len() as u64 > self.config.max_bytes => {
                Attempt::Fail(ModuleError::TooLarge {
                    bytes: bytes.len() as u64,
                    limit: self.config.max_bytes,
                })
            }
            Ok(bytes) => match refuse_unless_wasm(&cid.to_string(), &bytes) {
                Ok(()) => Attempt::Done(bytes),
                Err(e) => Attempt::Fail(e),
            },
            Err(e) => Attempt::Fail(ModuleError::Integrity(format!(
                "the gateway {} sent bytes that do not match the CID {cid}: {e}; the module was not run",
                self.config.endpoint
            ))),
        }
    }
}

/// `error` and its causes, joined by `: ` (reqwest's own message leaves out why a connection
/// failed, e.g. the certificate check's `UnknownIssuer`).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Why a body was not read whole.
enum Capped {
    /// Over the cap (the size announced or read so far).
    TooLarge(u64),
    /// The connection failed mid-body.
    Failed(reqwest::Error),
}

/// Reads a body of at most `cap` bytes, refusing early when Content-Length already says more
/// than `max_file` (a plain file) or than `cap`.
async fn read_capped(
    mut response: reqwest::Response,
    cap: u64,
    max_file: u64,
) -> Result<Vec<u8>, Capped> {
    if let Some(len) = response.content_length() {
        let is_car = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/vnd.ipld.car"));
        if len > cap || (!is_car && len > max_file) {
            return Err(Capped::TooLarge(len));
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Capped::Failed)? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(Capped::TooLarge((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[async_trait]
impl ModuleStore for GatewayStore {
    async fn fetch(&self, name: &str) -> Result<Arc<Vec<u8>>, ModuleError> {
        let cid = parse_cid(name).map_err(|e| {
            ModuleError::BadCid(format!(
                "\"{name}\" is not a CID the gateway can serve ({e}); give a CIDv0 (Qm...) or CIDv1 (bafy.../bafk...)"
            ))
        })?;
        if let Some(bytes) = self.cached(&cid) {
            return Ok(Arc::new(bytes));
        }
        let url = format!(
            "{}/{cid}?format=car",
            self.config.endpoint.trim_end_matches('/')
        );
        // The first wait, doubling, each with jitter (backon); at most 30 s.
        let mut waits = ExponentialBuilder::new()
            .with_min_delay(self.config.backoff)
            .with_max_delay(MAX_BACKOFF)
            .with_jitter()
            .without_max_times()
            .build();
        let mut last = String::new();
        for attempt in 0..=self.config.retries {
            match self.attempt(&cid, &url).await {
                Attempt::Done(bytes) => {
                    self.keep(&cid, &bytes);
                    return Ok(Arc::new(bytes));
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(why) => {
                    tracing::warn!(attempt, %why, "fetching a module failed");
                    last = why;
                    if attempt < self.config.retries {
                        tokio::time::sleep(waits.next().unwrap_or(MAX_BACKOFF)).await;
                    }
                }
            }
        }
        Err(ModuleError::Unavailable(format!(
            "could not fetch {cid} from the gateway {} after {} attempts: {last}; check COORDINATOR_IPFS_ENDPOINT and that the node has the module",
            self.config.endpoint,
            self.config.retries + 1
        )))
    }
}
