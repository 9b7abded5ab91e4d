//! `GET /v1/tasks/{id}/receipt`: the operator's signed receipt of a finished task (EIP-712, see
//! [`wasm_exec_chain::result_receipt`]), which anyone can check and rerun (`coordinator verify`).

use super::{Api, ApiError};
use crate::state::TaskRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use wasm_exec_chain::keccak256;
use wasm_exec_chain::result_receipt::{Receipt, SignedReceipt};
use wasm_exec_task::{IntakeRules, ResultEnvelope};

/// The schema of a signed receipt as [`SignedReceipt::to_json`] writes it (EIP-712 typed data,
/// every integer as a decimal string, every hash and address as `0x` hex).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReceiptDoc {
    /// The EIP-712 domain: `{"name": "wasm-exec receipt", "version": "1"}`.
    domain: ReceiptDomain,
    /// Always `Receipt`.
    #[serde(rename = "primaryType")]
    primary_type: String,
    /// What is signed.
    message: ReceiptMessage,
    /// The task's input document as text (its keccak-256 is `message.inputHash`).
    input: String,
    /// The operator's address, which signed it.
    signer: String,
    /// The 65-byte signature, `0x` hex.
    signature: String,
}

/// A receipt's EIP-712 domain.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReceiptDomain {
    /// `wasm-exec receipt`.
    name: String,
    /// `1`.
    version: String,
}

/// What a receipt signs: the task, the limits it ran under, and its result's hash.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReceiptMessage {
    /// `api`, `eip155:<chain id>` or the source's name.
    origin: String,
    /// The task's id.
    task_id: String,
    /// The module's CID.
    module_cid: String,
    /// The function called.
    entry: String,
    /// keccak-256 of the input text.
    input_hash: String,
    /// Fuel limit (0: none), decimal.
    fuel_limit: String,
    /// Memory limit in MiB, decimal.
    max_memory_mb: String,
    /// Wall-clock limit in ms, decimal.
    timeout_ms: String,
    /// Output limit in bytes, decimal.
    max_output_bytes: String,
    /// The result's `result_hash`.
    result_hash: String,
    /// Fuel consumed (0 when not metered), decimal.
    fuel_consumed: String,
}

/// The operator's signed receipt of a finished task, which `coordinator verify` checks by
/// rerunning it.
#[utoipa::path(get, path = "/v1/tasks/{id}/receipt", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    responses(
        (status = 200, description = "The receipt.", body = ReceiptDoc),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 404, description = "No such task (or another tenant's).", body = super::ErrorBody),
        (status = 409, description = "The task has not ended yet: no receipt so far.", body = super::ErrorBody),
        (status = 503, description = "The state store is recovering; retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_receipt(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<crate::tenant::Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = super::read::task_or_404(&api, &caller, &id)?;
    let Some(result) = &record.result else {
        return Err(ApiError::not_ended(&id, "receipt", record.state.as_str()));
    };
    let receipt = receipt_of(&record, result, &api.rules);
    let input = record.task.input_text();
    let signed =
        SignedReceipt::sign(&api.receipt_key, receipt, input).map_err(ApiError::internal)?;
    Ok(Json(signed.to_json()).into_response())
}

/// What the receipt of `record` says. The limits are the ones the task ran under: its own, the
/// rest the operator's defaults (`rules`); a task its intake refused ran under none, shown as 0.
pub fn receipt_of(record: &TaskRecord, result: &ResultEnvelope, rules: &IntakeRules) -> Receipt {
    let task = &record.task;
    let checked = task.check(rules).ok();
    let limits = checked.as_ref().map(|c| c.limits);
    let entry = checked
        .and_then(|c| c.entry)
        .or_else(|| task.entry.clone())
        .unwrap_or_default();
    Receipt {
        origin: origin(record),
        taskId: task.task_id.clone(),
        moduleCid: task.wasm_cid.clone(),
        entry,
        inputHash: keccak256(task.input_text().as_bytes()),
        fuelLimit: limits.as_ref().and_then(|l| l.fuel).unwrap_or(0),
        maxMemoryMb: limits.as_ref().map_or(0, |l| l.max_memory_mb),
        timeoutMs: limits.as_ref().map_or(0, |l| {
            u64::try_from(l.timeout.as_millis()).unwrap_or(u64::MAX)
        }),
        maxOutputBytes: limits.as_ref().map_or(0, |l| l.max_output_bytes),
        resultHash: result.result_hash().0.into(),
        fuelConsumed: result.fuel_consumed.unwrap_or(0),
    }
}

/// `api` for a submission, `eip155:<chain id>` for a task from a registry
/// (`eip155-<chain>-<contract>-<id>`), else the source's name.
fn origin(record: &TaskRecord) -> String {
    let chain = record
        .task
        .task_id
        .strip_prefix("eip155-")
        .and_then(|rest| rest.split('-').next());
    match chain {
        Some(chain) if record.origin != "api" => format!("eip155:{chain}"),
        _ => record.origin.clone(),
    }
}
