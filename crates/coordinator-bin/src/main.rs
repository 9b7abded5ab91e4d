//! `coordinator`: wires the configured source, module store and backend into the scheduler, then
//! serves until SIGINT/SIGTERM, or with `--once` runs what the source has and prints a table.
//!
//! # Layout
//! - `config`: every setting (one clap struct, each with its variable and default).
//! - `wire`: the module store, backend, state and source the settings ask for; the intake rules.
//! - `serve`: the API's listener, the `--once` pass, serving under supervision until a signal.
//! - `edge`: the API's HTTP edge (connection cap, header, body and idle timeouts);
//!   `fd_limit`: the file-descriptor limit raised at start, the cap fitted under it.
//! - `commands`: `coordinator chain deploy|authorize|submit`; `state_command`: `coordinator
//!   state check|salvage`.
//! - `verify`: `coordinator verify <receipt.json>`, a receipt checked and its task rerun.
//! - `table`: the `--once` summary; `telemetry`: logging; `webhooks`: the webhook settings.

use crate::config::{Command, Config, TokenCommand};
use crate::edge::EdgeLimits;
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::health::Health;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_coordinator::scheduler::{INBOX_CAPACITY, Scheduler};
use wasm_exec_coordinator::state::StateStore;

/// The static (musl) build's allocator: musl's own slows compiling modules and contends between
/// the runtime's threads.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod config;
mod edge;
mod fd_limit;
mod serve;
mod state_command;
mod table;
mod telemetry;
mod verify;
mod webhooks;
mod wire;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::CompileModule) = config.command {
        return wasm_exec_runtime::compile_child::serve();
    }
    telemetry::init_logging(config.log_format);
    match run(config) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("coordinator: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(config: Config) -> anyhow::Result<ExitCode> {
    // Before anything opens descriptors: the connection cap is fitted under the raised limit.
    let limits = config.edge_limits(fd_limit::raise());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async_main(config, limits))
}

/// Runs the subcommand, if one is given (other than the compiler child, handled before).
async fn subcommand(config: &Config) -> anyhow::Result<Option<ExitCode>> {
    Ok(Some(match &config.command {
        Some(Command::Chain(command)) => commands::chain(command, &config.chain).await?,
        Some(Command::State(command)) => state_command::run(command, &config.state_dir)?,
        Some(Command::Verify { receipt }) => verify::run(config, receipt).await?,
        Some(Command::Token(TokenCommand::New { name })) => {
            let (token, sha256) = wasm_exec_coordinator::tenant::new_token();
            println!("{token}");
            println!("{}", serde_json::json!({ "name": name, "sha256": sha256 }));
            ExitCode::SUCCESS
        }
        Some(Command::Openapi) => {
            print!("{}", wasm_exec_coordinator::api::openapi_json());
            ExitCode::SUCCESS
        }
        Some(Command::CompileModule) | None => return Ok(None),
    }))
}

/// What the API shares with the rest of the process.
struct ApiParts {
    submit: tokio::sync::mpsc::Sender<wasm_exec_coordinator::scheduler::Admitted>,
    tenants: Option<Arc<wasm_exec_coordinator::tenant::Tenants>>,
    health: Arc<Health>,
    uploads: Arc<wasm_exec_coordinator::module::uploads::UploadStore>,
}

/// The API's router from the settings, the scheduler's state and the parts.
fn app(config: &Config, scheduler: &Scheduler, parts: ApiParts) -> anyhow::Result<axum::Router> {
    let api = wasm_exec_coordinator::api::Api {
        state: scheduler.state.clone(),
        // A --once run takes its source's tasks and exits: nothing would run a submission.
        submit: (!config.once).then_some(parts.submit),
        rules: Arc::new(scheduler.rules.clone()),
        token: config.api_token.as_deref().map(Arc::from),
        tenants: parts.tenants,
        metrics: scheduler.metrics.clone(),
        health: parts.health,
        receipt_key: Arc::new(wire::receipt_key(config)?),
        uploads: Some(parts.uploads),
        live: (!config.once).then(|| scheduler.live.clone()),
        callbacks: config.webhook.webhook_secret.is_some(),
    };
    let max_body = config.max_body_kb.saturating_mul(1024);
    Ok(wasm_exec_coordinator::api::router(api, max_body))
}

async fn async_main(config: Config, limits: EdgeLimits) -> anyhow::Result<ExitCode> {
    if let Some(code) = subcommand(&config).await? {
        return Ok(code);
    }
    let (modules, uploads) = wire::modules(&config)?;
    let rules = wire::intake_rules(&config)?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(&metrics));
    let abandon = CancellationToken::new();
    let backend = wire::backend(&config, metrics.clone(), &abandon).await?;
    let state = wire::state_store(&config)?;
    let source = wire::task_source(&config, &rules, state.as_ref(), &metrics, &health).await?;
    let tenants = wire::tenants(&config)?;
    let scheduler = Scheduler {
        source,
        modules,
        backend,
        state: state.clone(),
        metrics,
        concurrency: config.concurrency,
        rules,
        quarantine_after: config.quarantine_after,
        live: Arc::default(),
        quotas: tenants.as_ref().map(|t| t.quotas()).unwrap_or_default(),
    };
    let keys = tenants.as_deref();
    let webhooks = config.webhook.deliverer(state.clone(), keys)?;
    let (submit, inbox) = tokio::sync::mpsc::channel(INBOX_CAPACITY);
    let parts = ApiParts {
        submit,
        tenants,
        health,
        uploads,
    };
    let app = app(&config, &scheduler, parts)?;
    let (shutdown, auth) = (CancellationToken::new(), config.auth());
    let api = serve::api(&config.listen, config.once, auth, app, limits, &shutdown).await?;
    if config.once {
        return serve::once(&scheduler).await;
    }
    webhooks::spawn(webhooks, &shutdown);
    let scheduler = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { scheduler.serve(inbox, shutdown).await }
    });
    serve::Serving {
        scheduler,
        api,
        fatal: Box::pin(async move { state.corrupted().await }),
        shutdown,
        abandon,
        grace: Duration::from_secs(config.shutdown_grace_sec),
    }
    .until_signal()
    .await
}
