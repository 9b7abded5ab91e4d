//! `coordinator chain ...`: deploy a TaskRegistry, authorise an executor, submit a task (1-of-1
//! or k-of-n) and wait for its result (who agreed), show where a task stands. Settings come from the same `COORDINATOR_CHAIN_*` variables as the chain
//! source; the key file is the owner's (deploy, authorize) or a requester's (submit).

use crate::config::{ChainArgs, ChainCommand};
use anyhow::{Context, bail};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;
use wasm_exec_chain::registry::block_time;
use wasm_exec_chain::requester::{
    Completion, Replication, Submitted, TaskRequest, TaskStatus, set_executor, submit_replicated,
    submit_task, task_status, wait_completed,
};
use wasm_exec_chain::{Address, DynProvider, Registry, U256, deploy};

/// Runs one chain command; prints its outcome as one JSON line on stdout.
pub async fn chain(command: &ChainCommand, args: &ChainArgs) -> anyhow::Result<ExitCode> {
    let provider = connect(args).await?;
    match command {
        ChainCommand::Deploy => deploy_registry(&provider).await,
        ChainCommand::Authorize { executor, revoke } => {
            authorize(&registry(args, &provider)?, executor, !revoke).await
        }
        ChainCommand::Submit {
            cid,
            entry,
            args: call_args,
            input,
            fuel,
            timeout_sec,
            replicas,
            quorum,
            fee,
            deadline,
            wait,
            wait_timeout_sec,
        } => {
            let request = TaskRequest {
                wasm_cid: cid.clone(),
                entry: entry.clone(),
                input: task_input(call_args.as_deref(), input.as_deref())?,
                fuel: *fuel,
                timeout_sec: *timeout_sec,
            };
            let registry = registry(args, &provider)?;
            let terms = (*replicas, *quorum, *fee, *deadline);
            let submitted = send_submission(&provider, &registry, &request, terms)
                .await
                .context("submitting the task")?;
            if !wait {
                print_submitted(&submitted);
                return Ok(ExitCode::SUCCESS);
            }
            let poll = Duration::from_millis(args.chain_poll_ms.max(50));
            let timeout = Duration::from_secs(*wait_timeout_sec);
            wait_and_print(&registry, &submitted, poll, timeout).await
        }
        ChainCommand::Status { id } => {
            let status = task_status(&registry(args, &provider)?, U256::from(*id))
                .await
                .with_context(|| format!("reading task {id}"))?;
            println!("{}", status_json(*id, &status));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Submits `request` as a 1-of-1 task, or as k-of-n when `(replicas, quorum, fee, deadline)`
/// ask for more than the default (the deadline in seconds from the chain's newest block).
async fn send_submission(
    provider: &DynProvider,
    registry: &Registry<DynProvider>,
    request: &TaskRequest,
    (replicas, quorum, fee, deadline): (u8, u8, u128, u64),
) -> anyhow::Result<Submitted> {
    if replicas == 1 && quorum == 1 && fee == 0 && deadline == 0 {
        return Ok(submit_task(registry, request).await?);
    }
    if deadline == 0 {
        bail!("a k-of-n task needs --deadline (seconds from now, e.g. --deadline 120)");
    }
    let now = block_time(provider)
        .await
        .context("reading the chain's time")?;
    let replication = Replication {
        replicas,
        quorum,
        deadline: now.saturating_add(deadline),
        fee: U256::from(fee),
    };
    Ok(submit_replicated(registry, request, &replication).await?)
}

/// `chain status`: the task's terms, parts and outcome as one JSON document.
fn status_json(id: u64, status: &TaskStatus) -> serde_json::Value {
    let parts: Vec<_> = status
        .parts
        .iter()
        .map(|p| json!({ "executor": p.executor.to_string(), "part": p.part }))
        .collect();
    json!({
        "task_id": id.to_string(),
        "status": status.status,
        "replicas": status.replicas,
        "quorum": status.quorum,
        "commits": status.commits,
        "deadline": status.deadline,
        "commit_end": status.commit_end,
        "fee": status.fee.to_string(),
        "parts": parts,
        "outcome": status.completion.as_ref().map(completion_json),
    })
}

/// A completion: the agreed result and who agreed.
fn completion_json(done: &Completion) -> serde_json::Value {
    json!({
        "task_id": done.task_id.to_string(),
        "ok": done.ok,
        "result": done.result,
        "result_hash": done.result_hash.to_string(),
        "executor": done.executor.to_string(),
        "agreeing": done.agreeing.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "block": done.block,
    })
}

/// `chain deploy`: deploys a registry owned by the key's account and prints its address.
async fn deploy_registry(provider: &DynProvider) -> anyhow::Result<ExitCode> {
    let address = deploy(provider)
        .await
        .context("deploying the TaskRegistry")?;
    eprintln!("deployed; serve it with COORDINATOR_CONTRACT_ADDRESS={address}");
    println!("{}", json!({ "contract": address.to_string() }));
    Ok(ExitCode::SUCCESS)
}

/// `chain authorize`: allows (or, with `--revoke`, forbids) `executor` to write results.
async fn authorize(
    registry: &Registry<DynProvider>,
    executor: &str,
    allowed: bool,
) -> anyhow::Result<ExitCode> {
    let executor: Address = executor.parse().with_context(|| {
        format!("--executor \"{executor}\" is not an address (0x and 40 hex digits)")
    })?;
    let tx = set_executor(registry, executor, allowed)
        .await
        .context("calling setExecutor (is the key file the registry owner's?)")?;
    println!(
        "{}",
        json!({ "executor": executor.to_string(), "allowed": allowed, "tx": tx.to_string() })
    );
    Ok(ExitCode::SUCCESS)
}

/// The task's input document from `--args` (a JSON array) or `--input` (any JSON); empty for
/// neither.
fn task_input(call_args: Option<&str>, input: Option<&str>) -> anyhow::Result<String> {
    match (call_args, input) {
        (Some(a), _) => {
            let parsed: serde_json::Value = serde_json::from_str(a).with_context(|| {
                format!("--args \"{a}\" is not JSON; give an array, e.g. '[12]'")
            })?;
            if !parsed.is_array() {
                bail!("--args must be a JSON array, e.g. '[12]'; got {a}");
            }
            Ok(a.to_owned())
        }
        (None, Some(i)) => {
            serde_json::from_str::<serde_json::Value>(i)
                .with_context(|| format!("--input \"{i}\" is not JSON"))?;
            Ok(i.to_owned())
        }
        (None, None) => Ok(String::new()),
    }
}

/// `chain submit` without `--wait`: the task id, transaction and block.
fn print_submitted(submitted: &Submitted) {
    println!(
        "{}",
        json!({
            "task_id": submitted.task_id.to_string(),
            "tx": submitted.tx.to_string(),
            "block": submitted.block,
        })
    );
}

/// `chain submit --wait`: waits for the task's `TaskCompleted` (asking every `poll`, at most
/// `timeout`) and prints the result; exit 1 when it is a failure.
async fn wait_and_print(
    registry: &Registry<DynProvider>,
    submitted: &Submitted,
    poll: Duration,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    eprintln!(
        "task {} submitted in block {}; waiting for its result",
        submitted.task_id, submitted.block
    );
    let (contract, id) = (*registry.address(), submitted.task_id);
    let done = wait_completed(
        registry.provider(),
        contract,
        id,
        submitted.block,
        poll,
        timeout,
    )
    .await?;
    println!("{}", completion_json(&done));
    Ok(if done.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn connect(args: &ChainArgs) -> anyhow::Result<DynProvider> {
    let path = args
        .chain_key_file
        .as_ref()
        .context("set COORDINATOR_CHAIN_KEY_FILE (or --chain-key-file) to a file holding the account's private key")?;
    let signer = wasm_exec_chain::key::read_key_file(path)?;
    wasm_exec_chain::connect(&args.chain_rpc_url, signer)
        .await
        .with_context(|| format!("COORDINATOR_CHAIN_RPC_URL={}", args.chain_rpc_url))
}

fn registry(args: &ChainArgs, provider: &DynProvider) -> anyhow::Result<Registry<DynProvider>> {
    let address = contract_address(args)?;
    Ok(Registry::new(address, provider.clone()))
}

/// The registry's address from `COORDINATOR_CONTRACT_ADDRESS`.
pub fn contract_address(args: &ChainArgs) -> anyhow::Result<Address> {
    let text = args
        .contract_address
        .as_deref()
        .context("set COORDINATOR_CONTRACT_ADDRESS to the TaskRegistry's address (`coordinator chain deploy` prints one)")?;
    text.parse().with_context(|| {
        format!("COORDINATOR_CONTRACT_ADDRESS \"{text}\" is not an address (0x and 40 hex digits)")
    })
}
