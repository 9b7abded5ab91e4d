//! A task as a source hands it over: which module (by CID), which entry, what input, what limits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One unit of work. The `input` document is what the executor gets as its input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique id, chosen by the source (or the caller, which makes submission idempotent).
    pub task_id: String,
    /// IPFS CID of the module (CIDv0 `Qm...` or CIDv1 `bafy...`/`bafk...`), or a file name in the
    /// local mirror for the seed's old style (`fib.wasm`).
    pub wasm_cid: String,
    /// Entry function, unless the input names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The input document, e.g. `{"entry": "fib", "args": [12]}`; `null` for none.
    #[serde(default)]
    pub input: Value,
    /// Limits for this task; unset ones take the coordinator's defaults. An object only.
    #[serde(default, deserialize_with = "crate::object::only")]
    pub limits: TaskLimits,
    /// Whether a stored result of an identical finished task (same module bytes, entry, input
    /// and limits) may answer this one, and this one's result be stored; `false` always runs it.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub cache: bool,
}

/// The default of [`TaskSpec::cache`].
fn yes() -> bool {
    true
}

/// Whether `cache` is the default (which is then left out of the record).
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_yes(cache: &bool) -> bool {
    *cache
}

/// Per-task limits as submitted; each `None` means "the operator's default" (see
/// [`TaskLimits::resolve`](crate::check)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskLimits {
    /// Wall-clock limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_sec: Option<f64>,
    /// Largest linear memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Instruction budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Bytes kept of the guest's stdout, and of its stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

impl TaskSpec {
    /// A task with this id, module and input, no entry and default limits.
    pub fn new(task_id: impl Into<String>, wasm_cid: impl Into<String>, input: Value) -> Self {
        Self {
            task_id: task_id.into(),
            wasm_cid: wasm_cid.into(),
            entry: None,
            input,
            limits: TaskLimits::default(),
            cache: true,
        }
    }

    /// The input document's text, as written to the executor's input file (empty for `null`).
    pub fn input_text(&self) -> String {
        match &self.input {
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_submission_shape_and_rejects_unknown_fields() {
        let spec: TaskSpec = serde_json::from_value(json!({
            "task_id": "t1", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]},
            "limits": {"fuel": 1000}
        }))
        .unwrap();
        assert_eq!(spec.limits.fuel, Some(1000));
        assert_eq!(spec.input_text(), r#"{"args":[12],"entry":"fib"}"#);
        let err = serde_json::from_value::<TaskSpec>(
            json!({"task_id": "t", "wasm_cid": "x", "inptu": 1}),
        );
        assert!(err.unwrap_err().to_string().contains("inptu"));
    }
}
