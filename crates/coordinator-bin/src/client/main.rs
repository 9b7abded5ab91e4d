//! `wasm-exec`: the client CLI of the coordinator's HTTP API (`COORDINATOR_URL`, `COORDINATOR_TOKEN`).
//!
//! A binary of its own rather than a `coordinator` subcommand: it links only an HTTP client,
//! JSON and clap (no wasmtime, kube or alloy), so it builds in seconds and a user's machine
//! needs nothing else; it ships from the same package, so its tests start the real coordinator.
//!
//! # Layout
//! - here: the commands and `main` (exit codes: a task's result kind's, 2 for a usage or API
//!   error; a broken pipe is success).
//! - `http`: the API calls, each error naming the fix; `render`: tables, the live status line.

mod http;
mod render;

use anyhow::Context;
use clap::{Parser, Subcommand};
use http::Client;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use wasm_exec_task::ResultEnvelope;

/// Submit WebAssembly tasks to a wasm-exec coordinator and follow them.
#[derive(Debug, Parser)]
#[command(name = "wasm-exec", version)]
struct Cli {
    /// The coordinator's API.
    #[arg(
        long,
        env = "COORDINATOR_URL",
        default_value = "http://127.0.0.1:18080",
        global = true
    )]
    url: String,
    /// Bearer token: one of COORDINATOR_TOKENS_FILE's, or COORDINATOR_API_TOKEN; unset: none.
    #[arg(long, env = "COORDINATOR_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON (one document per line) instead of tables, even on a terminal.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Uploads the module (idempotent), submits a task of it; with --wait, follows it to its end.
    Submit {
        /// The module: binary Wasm, or WAT text (`.wat`).
        #[arg(long)]
        wasm: PathBuf,
        /// The export to call.
        #[arg(long)]
        entry: String,
        /// The arguments, a JSON array.
        #[arg(long, default_value = "[]")]
        args: String,
        /// The task's id (resubmitting the same id and body is the same task); unset: drawn.
        #[arg(long)]
        id: Option<String>,
        /// Where the coordinator POSTs the result when the task ends (a webhook).
        #[arg(long)]
        callback_url: Option<String>,
        /// Waits for the task's end; the exit code is then its result kind's.
        #[arg(long)]
        wait: bool,
    },
    /// Shows a task.
    Get {
        /// The task's id.
        id: String,
    },
    /// Lists tasks, ordered by id.
    List {
        /// Only tasks in this state (pending, running, succeeded, failed, cancelled, ...).
        #[arg(long)]
        state: Option<String>,
        /// Most tasks shown.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Waits for a task's end; the exit code is its result kind's.
    Wait {
        /// The task's id.
        id: String,
        /// Give up after this many seconds (exit 2).
        #[arg(long, default_value_t = 3600)]
        timeout_sec: u64,
    },
    /// Cancels a task.
    Cancel {
        /// The task's id.
        id: String,
    },
    /// Follows the stream of task changes.
    Events {
        /// Only these states (comma-separated).
        #[arg(long)]
        state: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-exec: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::new(&cli.url, cli.token.clone());
    let table = !cli.json && std::io::stdout().is_terminal();
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Command::Submit {
            wasm,
            entry,
            args,
            id,
            callback_url,
            wait,
        } => {
            let args: Value = serde_json::from_str(&args)
                .with_context(|| format!("--args {args:?} is not JSON; e.g. --args '[12]'"))?;
            let bytes = std::fs::read(&wasm)
                .with_context(|| format!("reading --wasm \"{}\"", wasm.display()))?;
            let wat = wasm.extension().is_some_and(|e| e == "wat");
            let module = client.upload(bytes, wat)?;
            let cid = module["cid_v1"]
                .as_str()
                .context("the upload answered no cid_v1")?;
            let mut body = json!({"wasm_cid": cid, "input": {"entry": entry, "args": args}});
            if let Some(id) = id {
                body["task_id"] = id.into();
            }
            if let Some(url) = callback_url {
                body["callback_url"] = url.into();
            }
            let task = client.submit(&body)?;
            if !wait {
                render::task(out, &task, table)?;
                return Ok(ExitCode::SUCCESS);
            }
            let id = task["task_id"]
                .as_str()
                .context("the submission answered no task_id")?;
            follow(&client, out, id, Duration::from_secs(u64::MAX >> 2), table)
        }
        Command::Get { id } => {
            render::task(out, &client.task(&id, 0)?, table)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List { state, limit } => {
            let tasks = client.list(state.as_deref(), limit)?;
            render::list(out, &tasks, table)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait { id, timeout_sec } => {
            follow(&client, out, &id, Duration::from_secs(timeout_sec), table)
        }
        Command::Cancel { id } => {
            render::task(out, &client.cancel(&id)?, table)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { state } => {
            client.events(state.as_deref(), |event| render::event(out, event, table))
        }
    }
}

/// Waits for task `id`'s end (held answers of `?wait=`, no polling in between), showing each
/// state change on a terminal as one status line; then prints the task (one JSON line when
/// piped) and exits with its result kind's code.
fn follow(
    client: &Client,
    out: &mut impl Write,
    id: &str,
    timeout: Duration,
    table: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut status = render::StatusLine::new(table && std::io::stderr().is_terminal());
    loop {
        let task = client.task(id, 10)?;
        let state = task["state"].as_str().unwrap_or_default().to_owned();
        status.show(&task, started.elapsed());
        if task["result"].is_object() {
            status.done();
            render::task(out, &task, table)?;
            let result: ResultEnvelope = serde_json::from_value(task["result"].clone())
                .context("the task's result is not a result document")?;
            let code = u8::try_from(result.exit_code_for_process()).unwrap_or(1);
            return Ok(ExitCode::from(code));
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "task \"{id}\" is still {state} after {} s; wait longer with --timeout-sec",
            timeout.as_secs()
        );
    }
}
