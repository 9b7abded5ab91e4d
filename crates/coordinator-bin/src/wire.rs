//! Wiring: the module store, backend, state store and task source the settings ask for, and the
//! intake rules every task is checked against.

use crate::config::{BackendKind, ChainArgs, Config, SourceKind};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::cached::CachedBackend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::health::Health;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_coordinator::module::ModuleStore;
use wasm_exec_coordinator::module::gateway::{GatewayConfig, GatewayStore};
use wasm_exec_coordinator::module::layered::Layered;
use wasm_exec_coordinator::module::mirror::MirrorStore;
use wasm_exec_coordinator::module::uploads::UploadStore;
use wasm_exec_coordinator::source::TaskSource;
use wasm_exec_coordinator::source::chain::{ChainSettings, ChainSource};
use wasm_exec_coordinator::source::placeholder::{PlaceholderSource, samples};
use wasm_exec_coordinator::source::results_file::ResultsFile;
use wasm_exec_coordinator::state::StateStore;
use wasm_exec_coordinator::state::redb::RedbStore;
use wasm_exec_kube_backend::{KubernetesBackend, KubernetesSettings};
use wasm_exec_runtime::{ChildCompiler, EngineOptions, Inspector, ModuleLimits};
use wasm_exec_task::{IntakeRules, Limits};

/// The module store: the IPFS gateway if `COORDINATOR_IPFS_ENDPOINT` is set, else the mirror.
pub fn module_store(config: &Config) -> anyhow::Result<Arc<dyn ModuleStore>> {
    let max_module_bytes = config.max_module_mb.saturating_mul(1 << 20);
    Ok(match &config.ipfs_endpoint {
        Some(endpoint) => {
            tracing::info!(%endpoint, "modules come from the IPFS gateway");
            Arc::new(GatewayStore::new(GatewayConfig {
                endpoint: endpoint.clone(),
                max_bytes: max_module_bytes,
                connect_timeout: Duration::from_secs(config.ipfs_connect_timeout_sec),
                request_timeout: Duration::from_secs(config.ipfs_timeout_sec),
                retries: config.ipfs_retries,
                backoff: Duration::from_millis(200),
                cache_dir: config.cache_dir.as_ref().map(|d| d.join("modules")),
            })?)
        }
        None => {
            tracing::info!(mirror = %config.ipfs_mirror.display(), "modules come from the local mirror");
            Arc::new(
                MirrorStore::open(&config.ipfs_mirror, max_module_bytes).with_context(|| {
                    format!(
                        "opening the module mirror COORDINATOR_IPFS_MIRROR \"{}\"",
                        config.ipfs_mirror.display()
                    )
                })?,
            )
        }
    })
}

/// The module store tasks fetch from (the uploaded modules, then [`module_store`]), and the
/// uploaded modules' store itself for the API.
pub fn modules(config: &Config) -> anyhow::Result<(Arc<dyn ModuleStore>, Arc<UploadStore>)> {
    let uploads = upload_store(config)?;
    let layered = Layered {
        first: uploads.clone(),
        then: module_store(config)?,
    };
    Ok((Arc::new(layered), uploads))
}

/// The modules uploaded through the API, kept in `COORDINATOR_STATE_DIR/modules` (so they live
/// as long as the tasks that name them) and capped at `COORDINATOR_MAX_MODULE_MB`.
fn upload_store(config: &Config) -> anyhow::Result<Arc<UploadStore>> {
    let dir = config.state_dir.join("modules");
    let inspector = Inspector::new(&EngineOptions::default(), ModuleLimits::default())
        .context("creating the engine that checks uploaded modules")?;
    let max_bytes = config.max_module_mb.saturating_mul(1 << 20);
    let store = UploadStore::open(&dir, max_bytes, inspector)
        .with_context(|| format!("opening the uploaded modules in \"{}\"", dir.display()))?;
    Ok(Arc::new(store))
}

/// The compiler child processes (this executable's hidden `compile-module` command), unless
/// `COORDINATOR_COMPILE_IN_CHILD` is off.
fn child_compiler(config: &Config) -> anyhow::Result<Option<ChildCompiler>> {
    if !config.compile_in_child {
        return Ok(None);
    }
    let program = std::env::current_exe().context("finding this executable to compile in")?;
    Ok(Some(ChildCompiler::new(
        program,
        vec!["compile-module".into()],
        config.compile_memory_mb.saturating_mul(1 << 20),
        "COORDINATOR_COMPILE_MEMORY_MB",
    )))
}

/// The backend (its name logged). `abandon` is cancelled when the shutdown grace runs out: the
/// kubernetes backend then deletes the Jobs still running, and their tasks stay unfinished, to
/// run again later.
pub async fn backend(
    config: &Config,
    metrics: Arc<Metrics>,
    abandon: &CancellationToken,
) -> anyhow::Result<Arc<dyn Backend>> {
    let mut backend: Arc<dyn Backend> = match config.backend {
        BackendKind::Local => Arc::new(local_backend(config, metrics.clone())?),
        BackendKind::Kubernetes => {
            let settings = KubernetesSettings::new(
                &config.namespace,
                &config.executor_image,
                config.job_template.clone(),
            );
            Arc::new(KubernetesBackend::connect(settings, abandon.clone()).await?)
        }
    };
    if config.result_cache_mb > 0 {
        let budget = config.result_cache_mb.saturating_mul(1 << 20);
        backend = Arc::new(CachedBackend::new(backend, budget, metrics));
    }
    tracing::info!(
        backend = backend.name(),
        concurrency = config.concurrency,
        result_cache_mb = config.result_cache_mb,
        "coordinator starting"
    );
    Ok(backend)
}

/// The in-process backend (also what `coordinator verify` reruns a task on).
pub fn local_backend(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<LocalBackend> {
    LocalBackend::new(
        config.cache_dir.clone(),
        metrics,
        config.concurrency.max(1),
        child_compiler(config)?,
    )
}

/// The state store in `COORDINATOR_STATE_DIR`.
pub fn state_store(config: &Config) -> anyhow::Result<Arc<RedbStore>> {
    let store = RedbStore::open(&config.state_dir).with_context(|| {
        format!(
            "opening COORDINATOR_STATE_DIR \"{}\"",
            config.state_dir.display()
        )
    })?;
    let watermark = config.state_low_watermark_mb.saturating_mul(1 << 20);
    Ok(Arc::new(store.with_low_watermark(watermark)))
}

/// The key that signs receipts: `COORDINATOR_RECEIPT_KEY_FILE`, else the chain key, else
/// `receipt.key` in the state directory (made on the first start; the state store made the
/// directory).
pub fn receipt_key(config: &Config) -> anyhow::Result<wasm_exec_chain::PrivateKeySigner> {
    use wasm_exec_chain::key::{read_key_file, read_or_create_key_file};
    let (key, whence) = if let Some(path) = &config.receipt_key_file {
        let key = read_key_file(path).context("reading COORDINATOR_RECEIPT_KEY_FILE")?;
        (key, "COORDINATOR_RECEIPT_KEY_FILE")
    } else if let Some(path) = &config.chain.chain_key_file {
        let key = read_key_file(path).context("reading COORDINATOR_CHAIN_KEY_FILE")?;
        (key, "COORDINATOR_CHAIN_KEY_FILE")
    } else {
        let path = config.state_dir.join("receipt.key");
        let (key, created) = read_or_create_key_file(&path).with_context(|| {
            format!(
                "the receipt key in COORDINATOR_STATE_DIR \"{}\"",
                path.display()
            )
        })?;
        let whence = if created {
            "made in the state directory"
        } else {
            "the state directory's"
        };
        (key, whence)
    };
    tracing::info!(signer = %key.address(), key = whence, "receipts are signed");
    Ok(key)
}

/// The task source: the placeholder (samples or `COORDINATOR_TASKS_FILE`, checked under
/// `rules`) or the chain.
pub async fn task_source(
    config: &Config,
    rules: &IntakeRules,
    state: &dyn StateStore,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> anyhow::Result<Arc<dyn TaskSource>> {
    Ok(match config.task_source {
        SourceKind::Placeholder => {
            let mut source = match &config.tasks_file {
                Some(path) => PlaceholderSource::from_file(path, rules)?,
                None => PlaceholderSource::new(samples()),
            };
            if let Some(path) = &config.results_file {
                source = source.with_results_file(ResultsFile::open(path)?);
            }
            Arc::new(source)
        }
        SourceKind::Chain => Arc::new(
            chain_source(
                &config.chain,
                &config.state_dir,
                rules,
                state,
                metrics.clone(),
                health.clone(),
            )
            .await
            .context("starting the chain source (COORDINATOR_TASK_SOURCE=chain)")?,
        ),
    })
}

/// The chain source from its settings, resuming from the cursor the state store kept.
async fn chain_source(
    args: &ChainArgs,
    state_dir: &std::path::Path,
    rules: &IntakeRules,
    state: &dyn StateStore,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> anyhow::Result<ChainSource> {
    let contract = crate::commands::contract_address(args)?;
    let chain_id = args.chain_id.context(
        "set COORDINATOR_CHAIN_ID to the chain's id (31337 for anvil); it is checked against the node",
    )?;
    let key_file = args.chain_key_file.as_ref().context(
        "set COORDINATOR_CHAIN_KEY_FILE to a file (mode 600) holding the executor account's private key",
    )?;
    let signer = wasm_exec_chain::key::read_key_file(key_file)?;
    let settings = ChainSettings {
        rpc_url: args.chain_rpc_url.clone(),
        chain_id,
        contract,
        poll: Duration::from_millis(args.chain_poll_ms.max(10)),
        confirmations: args.confirmations,
        start_block: args.chain_start_block,
        max_range: args.chain_max_range,
        receipt_timeout: Duration::from_secs(args.chain_receipt_timeout_sec.max(1)),
        commits_path: state_dir.join("chain-commits.redb"),
        intake: rules.cids_only(),
    };
    let saved = state.cursor("chain")?;
    Ok(ChainSource::connect(settings, signer, saved, metrics, health).await?)
}

/// The intake check's rules from the settings: the default limits and the operator's maxima,
/// checked once (a default over its maximum fails the start, naming both settings).
pub fn intake_rules(config: &Config) -> anyhow::Result<IntakeRules> {
    let seconds = |value: f64, setting: &str| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("{setting} must be a positive number of seconds, got {value}"))
    };
    let rules = IntakeRules {
        defaults: Limits {
            timeout: seconds(config.timeout_sec, "TIMEOUT_SEC")?,
            max_memory_mb: config.max_memory_mb,
            max_output_bytes: config.max_output_bytes,
            fuel: None,
        },
        maxima: Limits {
            timeout: seconds(
                config.max_task_timeout_sec,
                "COORDINATOR_MAX_TASK_TIMEOUT_SEC",
            )?,
            max_memory_mb: config.max_task_memory_mb,
            max_output_bytes: config.max_task_output_bytes,
            fuel: config.max_task_fuel,
        },
        max_input_bytes: config.max_task_input_bytes,
        mirror_names: true,
    };
    rules.validate().map_err(|e| {
        anyhow::anyhow!("{e}; lower the default or raise COORDINATOR_MAX_TASK_* to match")
    })?;
    Ok(rules)
}

/// The tenants of `COORDINATOR_TOKENS_FILE`, if set.
pub fn tenants(
    config: &Config,
) -> anyhow::Result<Option<Arc<wasm_exec_coordinator::tenant::Tenants>>> {
    let Some(path) = &config.tokens_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading COORDINATOR_TOKENS_FILE \"{}\"", path.display()))?;
    let tenants = wasm_exec_coordinator::tenant::Tenants::from_json(&text)
        .with_context(|| format!("COORDINATOR_TOKENS_FILE \"{}\"", path.display()))?;
    Ok(Some(Arc::new(tenants)))
}
