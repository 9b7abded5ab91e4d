//! The result document: one shape for every run, written by the executor and stored by the
//! coordinator, so a task gives the same document in-process and in a Kubernetes Job.

use crate::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The outcome of one task run. Serialised compactly it is the last line of the executor's stdout.
///
/// Integer results are rendered as signed decimal JSON integers (a Wasm `i64` holding
/// 2^64 - 1 reads `-1`); floats as JSON numbers, except NaN and the infinities, which are the
/// strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultEnvelope {
    /// True when the entry returned normally (or a command exited with status 0).
    pub ok: bool,
    /// The function that was called (or would have been), e.g. `fib` or `_start`.
    pub entry: Option<String>,
    /// The arguments the entry was called with, as JSON.
    pub args: Vec<Value>,
    /// The return value: a scalar for one result, an array for several, `null` for none.
    pub result: Value,
    /// The guest's stdout (UTF-8, invalid bytes replaced), at most `MAX_OUTPUT_BYTES` bytes as
    /// encoded in this document (a control character counts six: `\u0001`).
    pub stdout: String,
    /// The guest's stderr, bounded the same way.
    pub stderr: String,
    /// True when stdout or stderr was cut at `MAX_OUTPUT_BYTES`.
    pub truncated: bool,
    /// Wall time of instantiation and the call, in milliseconds (compilation excluded).
    pub duration_ms: f64,
    /// Instructions metered when `FUEL` is set (`null` otherwise, or when unknown after a timeout).
    pub fuel_consumed: Option<u64>,
    /// Hex SHA-256 of the module bytes that ran.
    pub module_sha256: Option<String>,
    /// A WASI command's exit status (`_start` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the task failed; absent when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Where the time went around the run, when a backend schedules it (a Kubernetes Job); the
    /// executor never sets it, so its documents do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
}

/// The stages of a run on a cluster, as the coordinator saw them, in milliseconds: tells a slow
/// cluster from a slow module. A stage not seen (the pod went straight past it) counts 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Phases {
    /// From the Job's creation (or adoption) to its pod being bound to a node.
    pub scheduling_ms: f64,
    /// From scheduling to the container running: image pull, volume mounts, container start.
    pub starting_ms: f64,
    /// From the container running to its end (or the Job's end) being seen.
    pub running_ms: f64,
}

/// A failure: a stable machine-readable kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    /// The stable kind (`trap`, `timeout`, ...).
    pub kind: ErrorKind,
    /// What went wrong and, where there is one, the fix; at most [`MAX_ERROR_MESSAGE_BYTES`] as
    /// encoded when made by [`ErrorInfo::new`].
    pub message: String,
}

/// Longest error message, in bytes as encoded in the document; longer ones are cut (and say so),
/// so no failure, however many exports or frames it would list, can inflate the document.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

impl ErrorInfo {
    /// An error of `kind`, its message cut to [`MAX_ERROR_MESSAGE_BYTES`] as encoded.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        const CUT: &str = " ... (message cut)";
        let mut message = message.into();
        if crate::text::truncate_encoded(&mut message, MAX_ERROR_MESSAGE_BYTES - CUT.len()) {
            message.push_str(CUT);
        }
        Self { kind, message }
    }
}

impl ResultEnvelope {
    /// A failed result with nothing run yet: the starting point for errors before the call.
    pub fn failure(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            entry: None,
            args: Vec::new(),
            result: Value::Null,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 0.0,
            fuel_consumed: None,
            module_sha256: None,
            exit_code: None,
            error: Some(ErrorInfo::new(kind, message)),
            phases: None,
        }
    }

    /// The error kind, if the run failed.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|e| e.kind)
    }

    /// The process exit code that reports this result: 0 when ok, else the kind's code.
    pub fn exit_code_for_process(&self) -> i32 {
        self.kind().map_or(0, ErrorKind::exit_code)
    }

    /// The compact one-line JSON form (the executor's last stdout line).
    pub fn to_line(&self) -> String {
        // Serialising plain data (strings, numbers, `Value`) cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":{{"kind":"io","message":"serialising result: {e}"}}}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failure_round_trips_and_names_kind() {
        let env = ResultEnvelope::failure(ErrorKind::Timeout, "took too long");
        let line = env.to_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"]["kind"], json!("timeout"));
        assert_eq!(v["ok"], json!(false));
        let back: ResultEnvelope = serde_json::from_str(&line).unwrap();
        assert_eq!(back, env);
        assert_eq!(env.exit_code_for_process(), 21);
    }

    #[test]
    fn long_error_messages_are_cut_by_their_encoded_size() {
        let env = ResultEnvelope::failure(ErrorKind::EntryNotFound, "\u{1}".repeat(100_000));
        let message = &env.error.as_ref().unwrap().message;
        assert!(message.ends_with("(message cut)"), "{message}");
        let encoded = serde_json::to_string(message).unwrap();
        assert!(
            encoded.len() <= MAX_ERROR_MESSAGE_BYTES + 2,
            "{}",
            encoded.len()
        );
    }

    #[test]
    fn success_has_no_error_field() {
        let mut env = ResultEnvelope::failure(ErrorKind::Trap, "x");
        env.ok = true;
        env.error = None;
        env.result = json!(144);
        let v: Value = serde_json::from_str(&env.to_line()).unwrap();
        assert!(v.get("error").is_none());
        assert_eq!(v["result"], json!(144));
        assert_eq!(env.exit_code_for_process(), 0);
    }

    #[test]
    fn phases_are_absent_unless_set_and_round_trip() {
        let mut env = ResultEnvelope::failure(ErrorKind::Trap, "x");
        assert!(!env.to_line().contains("phases"));
        env.phases = Some(Phases {
            scheduling_ms: 1.5,
            starting_ms: 20.0,
            running_ms: 3.0,
        });
        let v: Value = serde_json::from_str(&env.to_line()).unwrap();
        assert_eq!(v["phases"]["starting_ms"], json!(20.0));
        let back: ResultEnvelope = serde_json::from_str(&env.to_line()).unwrap();
        assert_eq!(back, env);
    }
}
