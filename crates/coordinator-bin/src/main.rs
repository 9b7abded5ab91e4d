//! `coordinator`: wires the configured source, module store and backend into the scheduler, then
//! serves until SIGINT/SIGTERM, or with `--once` runs what the source has and prints a table.

use crate::config::{BackendKind, ChainArgs, Command, Config, LogFormat, SourceKind};
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_coordinator::module::ModuleStore;
use wasm_exec_coordinator::module::gateway::{GatewayConfig, GatewayStore};
use wasm_exec_coordinator::module::mirror::MirrorStore;
use wasm_exec_coordinator::scheduler::Scheduler;
use wasm_exec_coordinator::source::TaskSource;
use wasm_exec_coordinator::source::chain::{ChainSettings, ChainSource};
use wasm_exec_coordinator::source::placeholder::{PlaceholderSource, samples};
use wasm_exec_coordinator::source::results_file::ResultsFile;
use wasm_exec_coordinator::state::StateStore;
use wasm_exec_coordinator::state::redb::RedbStore;
use wasm_exec_kube_backend::{KubernetesBackend, KubernetesSettings};
use wasm_exec_task::{IntakeRules, Limits};

/// The static (musl) build's allocator: musl's own slows compiling modules and contends between
/// the runtime's threads.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod config;
mod table;

fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    match run(config) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("coordinator: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async_main(config))
}

async fn async_main(config: Config) -> anyhow::Result<ExitCode> {
    if let Some(Command::Chain(command)) = &config.command {
        return commands::chain(command, &config.chain).await;
    }
    let max_module_bytes = config.max_module_mb.saturating_mul(1 << 20);
    let modules: Arc<dyn ModuleStore> = match &config.ipfs_endpoint {
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
    };
    let rules = intake_rules(&config)?;
    let metrics = Arc::new(Metrics::default());
    // Cancelled when the shutdown grace runs out: the kubernetes backend then deletes the Jobs
    // still running, and their tasks stay unfinished, to run again after a restart.
    let abandon = CancellationToken::new();
    let backend: Arc<dyn Backend> = match config.backend {
        BackendKind::Local => Arc::new(LocalBackend::new(
            config.cache_dir.clone(),
            metrics.clone(),
            config.concurrency.max(1),
        )?),
        BackendKind::Kubernetes => {
            let settings = KubernetesSettings::new(
                &config.namespace,
                &config.executor_image,
                config.job_template.clone(),
            );
            Arc::new(KubernetesBackend::connect(settings, abandon.clone()).await?)
        }
    };
    tracing::info!(
        backend = backend.name(),
        concurrency = config.concurrency,
        "coordinator starting"
    );
    let state = Arc::new(RedbStore::open(&config.state_dir).with_context(|| {
        format!(
            "opening COORDINATOR_STATE_DIR \"{}\"",
            config.state_dir.display()
        )
    })?);
    let source: Arc<dyn TaskSource> = match config.task_source {
        SourceKind::Placeholder => {
            let mut source = match &config.tasks_file {
                Some(path) => PlaceholderSource::from_file(path, &rules)?,
                None => PlaceholderSource::new(samples()),
            };
            if let Some(path) = &config.results_file {
                source = source.with_results_file(ResultsFile::open(path)?);
            }
            Arc::new(source)
        }
        SourceKind::Chain => Arc::new(
            chain_source(&config.chain, state.as_ref(), metrics.clone())
                .await
                .context("starting the chain source (COORDINATOR_TASK_SOURCE=chain)")?,
        ),
    };
    let scheduler = Scheduler {
        source,
        modules,
        backend,
        state: state.clone(),
        metrics: metrics.clone(),
        concurrency: config.concurrency,
        rules: rules.clone(),
    };
    let (submit, inbox) =
        tokio::sync::mpsc::channel(wasm_exec_coordinator::scheduler::INBOX_CAPACITY);
    let api = wasm_exec_coordinator::api::Api {
        state,
        // A --once run takes its source's tasks and exits: nothing would run a submission.
        submit: (!config.once).then_some(submit),
        rules: Arc::new(rules),
        token: config.api_token.as_deref().map(Arc::from),
        metrics,
    };
    let shutdown = CancellationToken::new();
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => Some(listener),
        Err(e) if config.once => {
            tracing::warn!(listen = %config.listen, error = %e, "the API is off for this --once run: cannot listen (set COORDINATOR_LISTEN)");
            None
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("listening on COORDINATOR_LISTEN \"{}\"", config.listen));
        }
    };
    if let Some(listener) = listener {
        let address = listener.local_addr().context("reading the API address")?;
        tracing::info!(%address, token = config.api_token.is_some(), "API listening");
        let app = wasm_exec_coordinator::api::router(api, config.max_body_kb.saturating_mul(1024));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the API stopped");
            }
        });
    }
    if config.once {
        let outcomes = scheduler.run_once().await?;
        print!("{}", table::render(&outcomes));
        let failed = outcomes.iter().filter(|o| !o.result.ok).count();
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let mut serving = tokio::spawn({
        let (scheduler, shutdown) = (scheduler.clone(), shutdown.clone());
        async move { scheduler.serve(inbox, shutdown).await }
    });
    shutdown_signal().await;
    tracing::info!(
        grace_sec = config.shutdown_grace_sec,
        "shutting down: finishing running tasks"
    );
    shutdown.cancel();
    let grace = Duration::from_secs(config.shutdown_grace_sec);
    match tokio::time::timeout(grace, &mut serving).await {
        Ok(joined) => joined.context("the scheduler failed")??,
        Err(_) => {
            tracing::warn!("grace period over; tasks still running are abandoned");
            abandon.cancel();
            if tokio::time::timeout(ABANDON_GRACE, serving).await.is_err() {
                tracing::warn!("abandoned tasks did not clean up in time");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The chain source from its settings, resuming from the cursor the state store kept.
async fn chain_source(
    args: &ChainArgs,
    state: &dyn StateStore,
    metrics: Arc<Metrics>,
) -> anyhow::Result<ChainSource> {
    let contract = commands::contract_address(args)?;
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
    };
    let saved = state.cursor("chain")?;
    Ok(ChainSource::connect(settings, signer, saved, metrics).await?)
}

/// The intake check's rules from the settings: the default limits and the operator's maxima,
/// checked once (a default over its maximum fails the start, naming both settings).
fn intake_rules(config: &Config) -> anyhow::Result<IntakeRules> {
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
