//! The chain source (`COORDINATOR_TASK_SOURCE=chain`): tasks from a `TaskRegistry` contract on an
//! EVM chain, results written back on chain with `submitResults`.
//!
//! - Reading: `TaskSubmitted` events are read in bounded block ranges at
//!   `COORDINATOR_CONFIRMATIONS` depth (see [`wasm_exec_chain::scan`]); the scan's checkpoint is
//!   the source's cursor, persisted in the same commit as the tasks it yields, so a restart
//!   neither misses nor re-reads one. A task's id is `eip155-<chain>-<contract>-<on-chain id>`.
//! - Malformed requests (a CID that does not parse, an input that is not a task input, oversize
//!   fields, limits over the operator's maxima) fail the scheduler's intake check
//!   ([`wasm_exec_task::TaskSpec::check`], CIDs only: [`TaskSource::mirror_names`] is false) and
//!   are settled as `bad_input`, which is written back (`ok = false`) like any result.
//! - Writing: the result value (capped at the contract's 1 KiB) and the result's `result_hash`
//!   (docs/RESULT_HASH.md: keccak-256 of its deterministic part, the same for every honest run)
//!   as the contract's `envelopeHash`. Before writing, the task is
//!   read on chain: already completed counts as written (exactly once across restarts), and a task
//!   that is gone or names another request (a reorg deeper than the confirmations) is never
//!   written; the API shows why. See [`wasm_exec_chain::writer`] for nonces and fee bumps.
//! - k-of-n tasks (those with `TaskTerms`) are taken only while they still take commits, and
//!   only when their limits (from the task or the protocol, [`wasm_exec_task::protocol`]) are
//!   within this operator's maxima; they are written back by commit and reveal ([`replica`]).
//!   Every read of a task's state goes through [`progress`], many tasks in one call.
//! - Failures (a dead node, no funds, a key no longer authorised) are logged, counted in
//!   `/metrics` and shown by `/readyz`; reads back off and write-backs wait, none lost.
//!
//! Layout: this file has the settings, the start (waiting for the node, the checks, the saved
//! cursor) and the [`TaskSource`] impl; [`read`]: events to tasks, the cursor, the read backoff;
//! [`write`]: results to values on chain, the on-chain check, the write-back's outcomes;
//! [`replica`]: commit and reveal of a k-of-n task; [`commits`]: the commitments kept on disk;
//! [`progress`]: tasks' state on chain, read in batches.

mod commits;
mod progress;
mod read;
mod replica;
mod write;

pub use commits::CommitStoreError;
pub use read::to_task;
pub use replica::replicated_value;
pub use write::{MAX_RESULT_BYTES, result_value};

use super::{Delivery, Polled, SourceError, TaskSource};
use crate::health::Health;
use crate::metrics::{Metrics, ViaLabel};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use read::ReadState;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasm_exec_chain::heads::{Head, Heads};
use wasm_exec_chain::node::NodeView;
use wasm_exec_chain::scan::ScanOptions;
use wasm_exec_chain::setup::{SetupError, check_registry};
use wasm_exec_chain::writer::{ResultWriter, WriteOptions};
use wasm_exec_chain::{
    Address, ChainError, DynProvider, PrivateKeySigner, Registry, Transport, U256,
};
use wasm_exec_task::{IntakeRules, ResultEnvelope, TaskSpec};

/// First wait before trying the node again at start; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between tries while the node fails (at start, and between reads).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Over a WebSocket reads follow pushed heads; this is the longest time between reads when the
/// node pushes none (a safety net, not the pace).
const PUSHED_SAFETY_READ: Duration = Duration::from_secs(10);

/// Waits from `first` doubling to [`MAX_BACKOFF`], each drawn between half and all of that
/// (jitter, so that coordinators that lost one node do not all retry it in the same instant).
/// Never runs out.
fn backoff(first: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(MAX_BACKOFF / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

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
    /// The database of this operator's k-of-n commitments
    /// (`COORDINATOR_STATE_DIR/chain-commits.redb`).
    pub commits_path: std::path::PathBuf,
    /// The operator's intake rules: a k-of-n task whose limits exceed its maxima is refused
    /// (neither run nor committed), left to operators that can run it.
    pub intake: IntakeRules,
}

/// The chain source.
pub struct ChainSource {
    view: NodeView<DynProvider>,
    writer: ResultWriter,
    settings: ChainSettings,
    options: ScanOptions,
    transport: Transport,
    /// New heads, which wake the scheduler to read ([`TaskSource::news`]).
    announced: tokio::sync::Mutex<tokio::sync::watch::Receiver<Head>>,
    /// The head follower: wakes reads, and reveals waiting for their window.
    heads: Heads,
    /// This operator's k-of-n commitments, durable before each commit is sent.
    commits: commits::CommitStore,
    /// Where tasks stand on chain, many read in one call.
    progress: progress::ProgressReader,
    /// `eip155-<chain>-<contract>-`: every task id of this registry starts with it.
    prefix: String,
    metrics: Arc<Metrics>,
    /// Where failing reads and writes are named for `/readyz`.
    health: Arc<Health>,
    reading: Mutex<ReadState>,
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
    /// The database of k-of-n commitments cannot be opened.
    #[error(transparent)]
    Commits(#[from] CommitStoreError),
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
        health: Arc<Health>,
    ) -> Result<Self, ChainSourceError> {
        let transport = Transport::of(&settings.rpc_url).map_err(url_problem)?;
        let provider = wait_for_registry(&settings, &signer, &health).await?;
        wasm_exec_chain::registry::set_poll_interval(&provider, settings.poll);
        health.source_worked("read");
        let reading = ReadState::resume(saved, &settings)?;
        tracing::info!(
            chain_id = settings.chain_id, contract = %settings.contract, executor = %signer.address(),
            from_block = reading.checkpoint.next_block, confirmations = settings.confirmations,
            "reading tasks from the TaskRegistry"
        );
        let commits = commits::CommitStore::open(&settings.commits_path)?;
        let heads = Heads::follow(provider.clone(), transport, settings.poll);
        let write_options = WriteOptions {
            confirmations: settings.confirmations,
            receipt_timeout: settings.receipt_timeout,
            ..WriteOptions::default()
        };
        let contract = settings.contract;
        let writer = ResultWriter::new(
            provider.clone(),
            contract,
            signer.address(),
            write_options,
            heads.clone(),
        );
        let registry = Registry::new(contract, provider.clone());
        Ok(Self {
            view: NodeView::new(provider, contract),
            progress: progress::ProgressReader::new(registry, signer.address()),
            writer,
            prefix: task_id_prefix(settings.chain_id, contract),
            options: ScanOptions {
                confirmations: settings.confirmations,
                max_range: settings.max_range.max(1),
                remember: 128,
            },
            transport,
            announced: tokio::sync::Mutex::new(heads.watch()),
            heads,
            commits,
            settings,
            metrics,
            health,
            reading: Mutex::new(reading),
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
}

/// A `COORDINATOR_CHAIN_RPC_URL` that cannot be used.
fn url_problem(e: ChainError) -> ChainSourceError {
    ChainSourceError::Settings(format!("COORDINATOR_CHAIN_RPC_URL: {e}"))
}

/// A provider to the node once it answers and the registry passes [`check_registry`]; waits,
/// with [`backoff`] from [`FIRST_BACKOFF`], while the node cannot be reached. A wrong URL, chain
/// id, contract or key fails at once.
async fn wait_for_registry(
    settings: &ChainSettings,
    signer: &PrivateKeySigner,
    health: &Health,
) -> Result<DynProvider, ChainSourceError> {
    let mut waits = backoff(FIRST_BACKOFF);
    loop {
        let problem = match wasm_exec_chain::connect(&settings.rpc_url, signer.clone()).await {
            Ok(provider) => {
                let (contract, chain_id) = (settings.contract, settings.chain_id);
                match check_registry(&provider, contract, chain_id, signer.address()).await {
                    Ok(()) => return Ok(provider),
                    Err(SetupError::Node(e)) => e,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e @ (ChainError::Url(_) | ChainError::Tls(_))) => return Err(url_problem(e)),
            Err(e) => e.to_string(),
        };
        let wait = waits.next().unwrap_or(MAX_BACKOFF);
        health.source_failed("read", problem.clone());
        tracing::warn!(error = %problem, retry_in_ms = wait.as_millis() as u64, "waiting for the chain node");
        tokio::time::sleep(wait).await;
    }
}

/// `eip155-<chain>-<contract, lowercase hex>-`.
fn task_id_prefix(chain_id: u64, contract: Address) -> String {
    format!(
        "eip155-{chain_id}-{}-",
        contract.to_string().to_ascii_lowercase()
    )
}

#[async_trait]
impl TaskSource for ChainSource {
    async fn poll(&self) -> Result<Polled, SourceError> {
        self.read_tasks().await
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
        self.write_back(task, result).await
    }

    fn name(&self) -> &'static str {
        "chain"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn backoff_doubles_to_ten_seconds_with_jitter_under_todays_waits() {
        let waits: Vec<Duration> = backoff(FIRST_BACKOFF).take(12).collect();
        let mut ceiling = FIRST_BACKOFF;
        for wait in &waits {
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_BACKOFF);
        }
        assert!(
            waits[6..].windows(2).any(|w| w[0] != w[1]),
            "jitter makes the waits at the cap differ: {waits:?}"
        );
    }
}
