//! Writing back: a result as its value on chain, the check that the task on chain is still the
//! request that was run, and what each way a write ends means for the scheduler.

use super::ChainSource;
use super::progress::Progress;
use crate::metrics::OutcomeLabel;
use crate::source::{Delivery, SourceError};
use wasm_exec_chain::TaskRegistry;
use wasm_exec_chain::writer::{OnChainResult, WriteError, Written};
use wasm_exec_chain::{B256, U256};
use wasm_exec_task::protocol::replicated_limits;
use wasm_exec_task::{ResultEnvelope, TaskSpec};

/// Largest result value written on chain, in bytes (the contract's `MAX_RESULT_BYTES`).
pub const MAX_RESULT_BYTES: usize = 1024;

impl ChainSource {
    /// Writes `result` back unless the task on chain is settled already; counts the write in
    /// `/metrics` (`op="write"`) whichever way it ends.
    pub(super) async fn write_back(
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
        let outcome = self.write_checked(id, task, result).await;
        self.metrics.writebacks_in_flight.dec();
        match outcome {
            Ok(delivery) => {
                self.health.source_worked("write");
                Ok(delivery)
            }
            Err(e) => {
                self.health.source_failed("write", e.to_string());
                Err(SourceError(format!(
                    "writing the result of task {id} on chain: {e}"
                )))
            }
        }
    }

    /// Checks task `id` on chain, then writes `result` (directly for a 1-of-1 task, by commit
    /// and reveal for a k-of-n one) and says how it was delivered.
    async fn write_checked(
        &self,
        id: U256,
        task: &TaskSpec,
        result: &ResultEnvelope,
    ) -> Result<Delivery, WriteError> {
        let record = self.progress_of(id).await?;
        if let Some(settled) = settled(id, Some(task), &record.task) {
            return Ok(settled);
        }
        if record.task.deadline.to::<u64>() != 0 {
            return self.replicate(id, result, record).await;
        }
        let written = self
            .writer
            .write(&OnChainResult {
                task_id: id,
                ok: result.ok,
                result: result_value(result),
                result_hash: B256::from(result.result_hash().0),
            })
            .await;
        match written {
            Ok(written) => Ok(self.count_written(&written, result.ok)),
            Err(WriteError::UnknownTask(_)) => {
                let record = self.progress_of(id).await?;
                Ok(settled(id, None, &record.task).unwrap_or(Delivery::Accepted))
            }
            Err(WriteError::Refused(why)) => Ok(Delivery::Undeliverable(format!(
                "the registry refused the result: {why}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Where task `id` stands on chain (read with others waiting, [`super::progress`]).
    pub(super) async fn progress_of(&self, id: U256) -> Result<Progress, WriteError> {
        self.progress
            .read(id)
            .await
            .map_err(|e| WriteError::Node(format!("task {id}: {e}")))
    }

    /// Logs and counts a result on chain (`wasm_exec_chain_writebacks_total{outcome}`).
    fn count_written(&self, written: &Written, ok: bool) -> Delivery {
        let outcome = match written {
            Written::Mined {
                tx,
                block,
                replacements,
            } => {
                self.metrics
                    .writeback_replacements
                    .inc_by(u64::from(*replacements));
                tracing::info!(%tx, block, ok, "result written on chain");
                "mined"
            }
            Written::AlreadyCompleted => {
                tracing::info!("the result was already on chain");
                "already_completed"
            }
        };
        self.metrics
            .writebacks
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        Delivery::Accepted
    }
}

/// Whether the registry's `record` of task `id` is still the request we ran: `None` if so and
/// it awaits a result, `Some(delivery)` if nothing is to be sent.
fn settled(id: U256, task: Option<&TaskSpec>, record: &TaskRegistry::Progress) -> Option<Delivery> {
    // Status: 0 none, 1 pending, 2 completed, 3 expired.
    match record.status {
        0 => Some(Delivery::Undeliverable(format!(
            "the registry has no task {id}: its request was reorganised off the chain, so the result is not written back"
        ))),
        2 => Some(Delivery::Accepted),
        3 => Some(Delivery::Undeliverable(format!(
            "task {id} expired on chain (no quorum by its deadline) before this result was written"
        ))),
        _ if task.is_none_or(|t| is_same_request(t, record)) => None,
        _ => Some(Delivery::Undeliverable(format!(
            "task {id} on chain is another request than the one run (a reorg replaced it), so the result is not written back"
        ))),
    }
}

/// Whether the registry's `record` is the request `task` was made from.
fn is_same_request(task: &TaskSpec, record: &TaskRegistry::Progress) -> bool {
    let limits = if record.deadline.to::<u64>() != 0 {
        task.limits == replicated_limits(record.fuel, record.timeoutSec)
    } else {
        task.limits.fuel.unwrap_or(0) == record.fuel
            && task.limits.timeout_sec.map_or(0.0, |s| s) == f64::from(record.timeoutSec)
    };
    task.wasm_cid == record.wasmCid
        && task.entry.as_deref() == Some(record.entry.as_str())
        && limits
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
