//! The chain source (`COORDINATOR_TASK_SOURCE=chain`): tasks from a `TaskRegistry` contract on an
//! EVM chain, results written back on chain with `submitResult`.
//!
//! - Reading: `TaskSubmitted` events are read in bounded block ranges at
//!   `COORDINATOR_CONFIRMATIONS` depth (see [`wasm_exec_chain::scan`]); the scan's checkpoint is
//!   the source's cursor, persisted in the same commit as the tasks it yields, so a restart
//!   neither misses nor re-reads one. A task's id is `eip155-<chain>-<contract>-<on-chain id>`.
//! - Malformed requests (a CID that does not parse, an input that is not a task input, oversize
//!   fields, limits over the operator's maxima) fail the scheduler's intake check
//!   ([`wasm_exec_task::TaskSpec::check`], CIDs only: [`TaskSource::mirror_names`] is false) and
//!   are settled as `bad_input`, which is written back (`ok = false`) like any result.
//! - Writing: the result value (capped at the contract's 1 KiB) and the keccak-256 of the full
//!   result document (the bytes `GET /v1/tasks/{id}/result` serves). Before writing, the task is
//!   read on chain: already completed counts as written (exactly once across restarts), and a task
//!   that is gone or names another request (a reorg deeper than the confirmations) is never
//!   written; the API shows why. See [`wasm_exec_chain::writer`] for nonces and fee bumps.
//! - Failures (a dead node, no funds, a key no longer authorised) are logged, counted in
//!   `/metrics` and shown by `/readyz`; reads back off and write-backs wait, none lost.

use super::{Delivery, Polled, SourceError, TaskSource};
use crate::metrics::{BlockLabel, Metrics, OutcomeLabel, ViaLabel};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasm_exec_chain::TaskRegistry::TaskSubmitted;
use wasm_exec_chain::heads::{Head, Heads};
use wasm_exec_chain::node::NodeView;
use wasm_exec_chain::scan::{self, Checkpoint, Found, ScanOptions};
use wasm_exec_chain::setup::{SetupError, check_registry};
use wasm_exec_chain::writer::{OnChainResult, ResultWriter, WriteError, WriteOptions, Written};
use wasm_exec_chain::{
    Address, ChainError, DynProvider, PrivateKeySigner, Registry, Transport, U256, keccak256,
};
use wasm_exec_task::{ResultEnvelope, TaskLimits, TaskSpec};

/// Largest result value written on chain, in bytes (the contract's `MAX_RESULT_BYTES`).
pub const MAX_RESULT_BYTES: usize = 1024;
/// How often the cursor is persisted when no task moves it.
const IDLE_PERSIST: Duration = Duration::from_secs(10);
/// Longest wait between reads while the node fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest a read (one scan step) may take before it counts as a failure.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Over a WebSocket reads follow pushed heads; this is the longest time between reads when the
/// node pushes none (a safety net, not the pace).
const PUSHED_SAFETY_READ: Duration = Duration::from_secs(10);

/// Where the registry is and how to read and write it.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// The node's JSON-RPC URL: http(s), polled every `poll`, or ws(s), which pushes new heads.
    pub rpc_url: String,
    /// The chain id the node must report.
    pub chain_id: u64,
    /// The registry's address.
    pub contract: Address,
    /// Time between reads once caught up, over HTTP.
    pub poll: Duration,
    /// Blocks that must follow a block before its tasks are taken (and a result counts as
    /// written).
    pub confirmations: u64,
    /// The first block scanned when there is no saved cursor.
    pub start_block: u64,
    /// Most blocks in one `eth_getLogs` request.
    pub max_range: u64,
    /// Time a result transaction gets before it is replaced with a higher fee.
    pub receipt_timeout: Duration,
}

/// The cursor as persisted: the scan's checkpoint, with the registry it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedCursor {
    chain_id: u64,
    contract: Address,
    checkpoint: Checkpoint,
}

/// The chain source.
pub struct ChainSource {
    view: NodeView<DynProvider>,
    registry: Registry<DynProvider>,
    writer: ResultWriter,
    settings: ChainSettings,
    options: ScanOptions,
    transport: Transport,
    /// New heads, which wake the scheduler to read ([`TaskSource::news`]).
    announced: tokio::sync::Mutex<tokio::sync::watch::Receiver<Head>>,
    /// Keeps the head follower running.
    _heads: Heads,
    /// `eip155-<chain>-<contract>-`: every task id of this registry starts with it.
    prefix: String,
    metrics: Arc<Metrics>,
    reading: Mutex<ReadState>,
}

/// Where reading stands.
struct ReadState {
    checkpoint: Checkpoint,
    persisted_at: Instant,
    /// Consecutive failed reads, and when to read next.
    failures: u32,
    next_read: Instant,
}

/// Why the chain source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ChainSourceError {
    /// The registry or the key is not usable (the message says how to fix it).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A setting is wrong.
    #[error("{0}")]
    Settings(String),
}

impl ChainSource {
    /// Connects to the node, checks the chain id, the contract and that `signer` is an
    /// authorised executor (waiting, with backoff, while the node cannot be reached), and
    /// resumes reading from `saved` (the cursor the state store kept) or from the start block.
    pub async fn connect(
        settings: ChainSettings,
        signer: PrivateKeySigner,
        saved: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ChainSourceError> {
        let executor = signer.address();
        let url_problem = |e| ChainSourceError::Settings(format!("COORDINATOR_CHAIN_RPC_URL: {e}"));
        let transport = Transport::of(&settings.rpc_url).map_err(url_problem)?;
        let mut wait = Duration::from_millis(200);
        let provider = loop {
            let problem = match wasm_exec_chain::connect(&settings.rpc_url, signer.clone()).await {
                Ok(provider) => {
                    match check_registry(&provider, settings.contract, settings.chain_id, executor)
                        .await
                    {
                        Ok(()) => break provider,
                        Err(SetupError::Node(e)) => e,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e @ (ChainError::Url(_) | ChainError::Tls(_))) => return Err(url_problem(e)),
                Err(e) => e.to_string(),
            };
            metrics.source_failed("read", problem.clone());
            tracing::warn!(error = %problem, retry_in_ms = wait.as_millis() as u64, "waiting for the chain node");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        };
        wasm_exec_chain::registry::set_poll_interval(&provider, settings.poll);
        metrics.source_worked("read");
        let checkpoint = match saved {
            None => Checkpoint::starting_at(settings.start_block),
            Some(text) => {
                let saved: SavedCursor = serde_json::from_str(&text).map_err(|e| {
                    ChainSourceError::Settings(format!(
                        "the chain cursor in COORDINATOR_STATE_DIR does not parse ({e}); use a fresh state directory"
                    ))
                })?;
                if saved.chain_id == settings.chain_id && saved.contract == settings.contract {
                    saved.checkpoint
                } else {
                    tracing::warn!(
                        saved_chain = saved.chain_id, saved_contract = %saved.contract,
                        "the state directory read another registry before; scanning this one from COORDINATOR_CHAIN_START_BLOCK"
                    );
                    Checkpoint::starting_at(settings.start_block)
                }
            }
        };
        tracing::info!(
            chain_id = settings.chain_id, contract = %settings.contract, %executor,
            from_block = checkpoint.next_block, confirmations = settings.confirmations,
            "reading tasks from the TaskRegistry"
        );
        let heads = Heads::follow(provider.clone(), transport, settings.poll);
        let writer = ResultWriter::new(
            provider.clone(),
            settings.contract,
            executor,
            WriteOptions {
                confirmations: settings.confirmations,
                receipt_timeout: settings.receipt_timeout,
                ..WriteOptions::default()
            },
            heads.clone(),
        );
        let options = ScanOptions {
            confirmations: settings.confirmations,
            max_range: settings.max_range.max(1),
            remember: 128,
        };
        let now = Instant::now();
        Ok(Self {
            view: NodeView::new(provider.clone(), settings.contract),
            registry: Registry::new(settings.contract, provider),
            writer,
            prefix: task_id_prefix(settings.chain_id, settings.contract),
            options,
            transport,
            announced: tokio::sync::Mutex::new(heads.watch()),
            _heads: heads,
            settings,
            metrics,
            reading: Mutex::new(ReadState {
                checkpoint,
                persisted_at: now,
                failures: 0,
                next_read: now,
            }),
        })
    }

    /// The coordinator's id of the registry's task `id`.
    pub fn task_id(&self, id: U256) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The registry's id of one of our task ids (`None` for another registry's).
    fn on_chain_id(&self, task_id: &str) -> Option<U256> {
        task_id.strip_prefix(&self.prefix)?.parse().ok()
    }

    fn read_state(&self) -> std::sync::MutexGuard<'_, ReadState> {
        self.reading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the registry's record of a task and says whether it is still the request we ran:
    /// `Ok(None)` if so and it awaits a result, `Ok(Some(delivery))` if nothing is to be sent.
    async fn settled_on_chain(
        &self,
        id: U256,
        task: Option<&TaskSpec>,
    ) -> Result<Option<Delivery>, WriteError> {
        let record = self
            .registry
            .getTask(id)
            .call()
            .await
            .map_err(|e| WriteError::Node(format!("reading task {id}: {e}")))?;
        // Status: 0 none, 1 pending, 2 completed.
        match record.status {
            0 => Ok(Some(Delivery::Undeliverable(format!(
                "the registry has no task {id}: its request was reorganised off the chain, so the result is not written back"
            )))),
            2 => Ok(Some(Delivery::Accepted)),
            _ => {
                let same = task.is_none_or(|t| {
                    t.wasm_cid == record.wasmCid
                        && t.entry.as_deref() == Some(record.entry.as_str())
                        && t.limits.fuel.unwrap_or(0) == record.fuel
                        && t.limits.timeout_sec.map_or(0.0, |s| s) == f64::from(record.timeoutSec)
                });
                if same {
                    Ok(None)
                } else {
                    Ok(Some(Delivery::Undeliverable(format!(
                        "task {id} on chain is another request than the one run (a reorg replaced it), so the result is not written back"
                    ))))
                }
            }
        }
    }
}

/// `eip155-<chain>-<contract, lowercase hex>-`.
fn task_id_prefix(chain_id: u64, contract: Address) -> String {
    format!(
        "eip155-{chain_id}-{}-",
        contract.to_string().to_ascii_lowercase()
    )
}

/// A `TaskSubmitted` event as a task. An input that is not JSON is kept as a string, for the
/// intake check to refuse with its reason.
fn to_task(task_id: String, event: &TaskSubmitted) -> TaskSpec {
    let input = if event.input.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&event.input).unwrap_or_else(|_| Value::String(event.input.clone()))
    };
    TaskSpec {
        task_id,
        wasm_cid: event.wasmCid.clone(),
        entry: Some(event.entry.clone()),
        input,
        limits: TaskLimits {
            timeout_sec: (event.timeoutSec > 0).then(|| f64::from(event.timeoutSec)),
            max_memory_mb: None,
            fuel: (event.fuel > 0).then_some(event.fuel),
            max_output_bytes: None,
        },
    }
}

/// The first `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The value written on chain: the result's JSON (`144`), or `<kind>: <message>` for a failure,
/// cut to [`MAX_RESULT_BYTES`] with a marker (the full document is served by the API and pinned
/// by its hash).
pub fn result_value(result: &ResultEnvelope) -> String {
    const CUT: &str = "... (cut; the full result is in the coordinator's API)";
    let text = match &result.error {
        None => result.result.to_string(),
        Some(e) => format!("{}: {}", e.kind, e.message),
    };
    if text.len() <= MAX_RESULT_BYTES {
        return text;
    }
    format!("{}{CUT}", truncate(&text, MAX_RESULT_BYTES - CUT.len()))
}

#[async_trait]
impl TaskSource for ChainSource {
    async fn poll(&self) -> Result<Polled, SourceError> {
        let checkpoint = {
            let state = self.read_state();
            if Instant::now() < state.next_read {
                return Ok(Polled::default());
            }
            state.checkpoint.clone()
        };
        let step = tokio::time::timeout(
            READ_TIMEOUT,
            scan::step(&self.view, &checkpoint, self.options),
        )
        .await
        .unwrap_or_else(|_| {
            Err(scan::ScanError::Node(format!(
                "the node did not answer within {} s",
                READ_TIMEOUT.as_secs()
            )))
        });
        let step = match step {
            Ok(step) => step,
            Err(e) => {
                let mut state = self.read_state();
                state.failures += 1;
                let wait = (self.settings.poll * 2u32.saturating_pow(state.failures.min(16)))
                    .min(MAX_BACKOFF);
                state.next_read = Instant::now() + wait;
                self.metrics.source_failed("read", e.to_string());
                return Err(SourceError(format!(
                    "reading tasks from the chain (next try in {} ms): {e}",
                    wait.as_millis()
                )));
            }
        };
        self.metrics.source_worked("read");
        let gauge = |block| {
            self.metrics
                .chain_block
                .get_or_create(&BlockLabel { block })
        };
        gauge("head").set(i64::try_from(step.head).unwrap_or(i64::MAX));
        gauge("scanned").set(i64::try_from(step.checkpoint.next_block).unwrap_or(i64::MAX) - 1);
        if let Some(block) = step.rewound_to {
            tracing::warn!(
                block,
                "the chain was reorganised under blocks already read; reading again from this block"
            );
        }
        let tasks: Vec<TaskSpec> = step
            .found
            .iter()
            .map(|Found { event, .. }| to_task(self.task_id(event.taskId), event))
            .collect();
        let mut state = self.read_state();
        state.failures = 0;
        state.next_read = Instant::now();
        let persist = !tasks.is_empty()
            || step.rewound_to.is_some()
            || state.persisted_at.elapsed() >= IDLE_PERSIST;
        let cursor = if persist {
            state.persisted_at = Instant::now();
            let saved = SavedCursor {
                chain_id: self.settings.chain_id,
                contract: self.settings.contract,
                checkpoint: step.checkpoint.clone(),
            };
            Some(serde_json::to_string(&saved).map_err(|e| SourceError(e.to_string()))?)
        } else {
            None
        };
        state.checkpoint = step.checkpoint;
        if !tasks.is_empty() {
            tracing::info!(
                tasks = tasks.len(),
                through_block = state.checkpoint.next_block - 1,
                "tasks read from the chain"
            );
        }
        Ok(Polled {
            tasks,
            cursor,
            more: !step.caught_up,
        })
    }

    fn mirror_names(&self) -> bool {
        false // requesters on a chain must not pick files on the host
    }

    fn poll_interval(&self) -> Duration {
        match self.transport {
            Transport::Http => self.settings.poll,
            Transport::WebSocket => PUSHED_SAFETY_READ,
        }
    }

    async fn news(&self) {
        let mut announced = self.announced.lock().await;
        if announced.changed().await.is_err() {
            // The follower stopped (never while the source lives): only the polls remain.
            std::future::pending::<()>().await;
        }
        let via = if announced.borrow_and_update().pushed {
            "pushed"
        } else {
            "polled"
        };
        self.metrics
            .chain_heads
            .get_or_create(&ViaLabel { via })
            .inc();
    }

    async fn report(
        &self,
        task: &TaskSpec,
        result: &ResultEnvelope,
    ) -> Result<Delivery, SourceError> {
        let Some(id) = self.on_chain_id(&task.task_id) else {
            return Ok(Delivery::Undeliverable(format!(
                "task \"{}\" is not from the registry this coordinator reads ({}); its result stays in the API",
                task.task_id, self.prefix
            )));
        };
        self.metrics.writebacks_in_flight.inc();
        let outcome = async {
            if let Some(settled) = self.settled_on_chain(id, Some(task)).await? {
                return Ok(settled);
            }
            let written = self
                .writer
                .write(&OnChainResult {
                    task_id: id,
                    ok: result.ok,
                    result: result_value(result),
                    envelope_hash: keccak256(result.to_line().as_bytes()),
                })
                .await;
            match written {
                Ok(Written::Mined {
                    tx,
                    block,
                    replacements,
                }) => {
                    self.metrics
                        .writeback_replacements
                        .inc_by(u64::from(replacements));
                    self.metrics
                        .writebacks
                        .get_or_create(&OutcomeLabel {
                            outcome: "mined".into(),
                        })
                        .inc();
                    tracing::info!(%tx, block, ok = result.ok, "result written on chain");
                    Ok(Delivery::Accepted)
                }
                Ok(Written::AlreadyCompleted) => {
                    self.metrics
                        .writebacks
                        .get_or_create(&OutcomeLabel {
                            outcome: "already_completed".into(),
                        })
                        .inc();
                    tracing::info!("the result was already on chain");
                    Ok(Delivery::Accepted)
                }
                Err(WriteError::UnknownTask(_)) => self
                    .settled_on_chain(id, None)
                    .await
                    .map(|s| s.unwrap_or(Delivery::Accepted)),
                Err(WriteError::Refused(why)) => Ok(Delivery::Undeliverable(format!(
                    "the registry refused the result: {why}"
                ))),
                Err(e) => Err(e),
            }
        }
        .await;
        self.metrics.writebacks_in_flight.dec();
        match outcome {
            Ok(delivery) => {
                self.metrics.source_worked("write");
                Ok(delivery)
            }
            Err(e) => {
                self.metrics.source_failed("write", e.to_string());
                Err(SourceError(format!(
                    "writing the result of task {id} on chain: {e}"
                )))
            }
        }
    }

    fn name(&self) -> &'static str {
        "chain"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(cid: &str, entry: &str, input: &str) -> TaskSubmitted {
        TaskSubmitted {
            taskId: U256::from(7),
            requester: Address::ZERO,
            wasmCid: cid.into(),
            entry: entry.into(),
            input: input.into(),
            fuel: 0,
            timeoutSec: 3,
        }
    }

    const FIB: &str = crate::source::placeholder::FIB_CID;

    #[test]
    fn a_task_id_names_chain_contract_and_id_and_fits_the_api_rules() {
        let prefix = task_id_prefix(31337, Address::repeat_byte(0xAB));
        let id = format!("{prefix}{}", U256::MAX);
        assert!(id.starts_with("eip155-31337-0xabab"), "{id}");
        assert!(id.len() <= 160, "{}", id.len());
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn an_event_becomes_a_task_with_its_limits() {
        let task = to_task("t".into(), &event(FIB, "fib", "[12]"));
        assert_eq!(task.input, json!([12]));
        assert_eq!(task.entry.as_deref(), Some("fib"));
        assert_eq!(task.limits.timeout_sec, Some(3.0));
        assert_eq!(task.limits.fuel, None, "0 means the default");
        let rules = wasm_exec_task::IntakeRules::default().cids_only();
        assert!(task.check(&rules).is_ok());
    }

    #[test]
    fn malformed_requests_fail_the_cids_only_intake_check_naming_why() {
        let rules = wasm_exec_task::IntakeRules::default().cids_only();
        let cases = [
            (event("not a cid!", "fib", "[1]"), "not a CID"),
            (event("fib.wasm", "fib", "[1]"), "not a CID"),
            (event(FIB, "fib", "{oops"), "not JSON"),
            (event(FIB, "fib", r#"{"args": 5}"#), "input"),
            (event(&"b".repeat(300), "fib", "[1]"), "300 bytes"),
            (
                event(FIB, &"e".repeat(300), "[1]"),
                "entry: must be 1-256 bytes, got 300",
            ),
        ];
        for (event, expected) in cases {
            let why = to_task("t".into(), &event)
                .check(&rules)
                .expect_err("malformed")
                .to_string();
            assert!(why.contains(expected), "{why} should say {expected}");
        }
    }

    #[test]
    fn the_value_on_chain_is_capped_at_the_contracts_limit() {
        let mut result = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Trap, "x");
        assert_eq!(result_value(&result), "trap: x");
        result.ok = true;
        result.error = None;
        result.result = json!(144);
        assert_eq!(result_value(&result), "144");
        result.result = json!("é".repeat(2000));
        let value = result_value(&result);
        assert!(value.len() <= MAX_RESULT_BYTES, "{}", value.len());
        assert!(value.ends_with("coordinator's API)"), "{value}");
    }
}
