//! `coordinator verify <receipt.json>`: checks an operator's receipt: the signature (and so the
//! signer), the input against its hash, then reruns the task here under the receipt's limits on
//! the module fetched by CID (verified by the module store) and compares the `result_hash`.

use crate::config::Config;
use crate::wire;
use anyhow::Context;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use wasm_exec_chain::result_receipt::{Receipt, SignedReceipt};
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_task::{TaskLimits, TaskSpec};

/// Verifies the receipt in `path`: exit 0 when the rerun gives its `result_hash`, 1 when not;
/// an error (exit 2) when it cannot be checked (bad signature, module not found, ...).
pub async fn run(config: &Config, path: &Path) -> anyhow::Result<ExitCode> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading \"{shown}\""))?;
    let json = serde_json::from_str(&text).with_context(|| format!("\"{shown}\" is not JSON"))?;
    let signed = SignedReceipt::from_json(&json).with_context(|| format!("reading \"{shown}\""))?;
    let signer = signed
        .verify()
        .with_context(|| format!("checking the signature of \"{shown}\""))?;
    println!("signer: {signer}");
    let receipt = &signed.receipt;
    let task = rerun_task(receipt, &signed.input)?;
    let checked = task
        .check(&wire::intake_rules(config)?)
        .context("the receipt's task does not pass this coordinator's intake check")?;
    let modules = wire::module_store(config)?;
    let module = modules
        .fetch(&receipt.moduleCid)
        .await
        .with_context(|| format!("fetching module {}", receipt.moduleCid))?;
    let backend = wire::local_backend(config, Arc::new(Metrics::default()))?;
    let result = backend.run(&checked, module).await;
    let hash = result.result_hash();
    let matches = hash.0 == receipt.resultHash.0;
    println!(
        "{}",
        json!({
            "task_id": receipt.taskId,
            "signer": signer.to_string(),
            "claimed_result_hash": receipt.resultHash.to_string(),
            "result_hash": hash.to_string(),
            "fuel_consumed": result.fuel_consumed,
            "matches": matches,
        })
    );
    if matches {
        println!("verified: the rerun gives the receipt's result_hash");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "coordinator verify: MISMATCH: the receipt claims result_hash {} but the rerun of task \"{}\" gives {hash} (result {}); the operator {signer} signed a result this module and input do not give",
            receipt.resultHash, receipt.taskId, result.result
        );
        Ok(ExitCode::from(1))
    }
}

/// The task as the receipt describes it, every limit set from the receipt (0 is unset).
fn rerun_task(receipt: &Receipt, input: &str) -> anyhow::Result<TaskSpec> {
    let input = if input.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(input).context("the receipt's input is not JSON")?
    };
    let set = |v: u64| (v != 0).then_some(v);
    let mut task = TaskSpec::new(receipt.taskId.clone(), receipt.moduleCid.clone(), input);
    task.entry = (!receipt.entry.is_empty()).then(|| receipt.entry.clone());
    task.limits = TaskLimits {
        timeout_sec: set(receipt.timeoutMs).map(|ms| ms as f64 / 1000.0),
        max_memory_mb: set(receipt.maxMemoryMb),
        fuel: set(receipt.fuelLimit),
        max_output_bytes: set(receipt.maxOutputBytes),
    };
    Ok(task)
}
