//! The one check every task passes where it enters (the API, a tasks file, the chain): its id,
//! its module reference, its entry, its input and its limits, each refused with the field at
//! fault and what to do. What passes is a [`CheckedTask`]: the input parsed once, the module
//! reference parsed once, the limits resolved against the operator's defaults and maxima.

use crate::input::TaskInput;
use crate::limits;
use crate::spec::{TaskLimits, TaskSpec};
use serde_json::Value;
use std::time::Duration;
use wasm_exec_ipfs::{Cid, parse_cid};

/// Longest task id, in bytes.
pub const MAX_TASK_ID_BYTES: usize = 128;
/// Longest module reference or entry name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The limits of one run, resolved: every one has a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock limit, compilation included.
    pub timeout: Duration,
    /// Memory budget in MiB, for every memory and table of the task together.
    pub max_memory_mb: u64,
    /// Bytes kept of the guest's stdout, and of its stderr.
    pub max_output_bytes: u64,
    /// Instruction budget; `None` is unmetered.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    /// The seed's defaults: 20 s, 256 MiB, 1 MiB of output, no fuel metering.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs_f64(limits::DEFAULT_TIMEOUT_SEC),
            max_memory_mb: limits::DEFAULT_MEMORY_MB,
            max_output_bytes: limits::DEFAULT_OUTPUT_BYTES,
            fuel: None,
        }
    }
}

/// What the operator allows: the limits a task gets when it sets none, the most it may ask for,
/// and the largest input document.
#[derive(Debug, Clone, PartialEq)]
pub struct IntakeRules {
    /// Limits of a task that sets none (`TIMEOUT_SEC`, `MAX_MEMORY_MB`, `MAX_OUTPUT_BYTES`).
    pub defaults: Limits,
    /// The most a task may set (`COORDINATOR_MAX_TASK_*`); `fuel: None` means no cap on fuel.
    pub maxima: Limits,
    /// Largest input document, in bytes of its JSON text.
    pub max_input_bytes: usize,
    /// Whether a task may name a file of the local mirror (`fib.wasm`) instead of a CID; off for
    /// tasks from a chain, whose requesters must not pick files on the host.
    pub mirror_names: bool,
}

impl Default for IntakeRules {
    /// The seed's defaults; at most 300 s, 1 GiB, 16 MiB of output; 1 MiB of input.
    fn default() -> Self {
        Self {
            defaults: Limits::default(),
            maxima: Limits {
                timeout: Duration::from_secs(300),
                max_memory_mb: 1024,
                max_output_bytes: 16 << 20,
                fuel: None,
            },
            max_input_bytes: 1 << 20,
            mirror_names: true,
        }
    }
}

impl IntakeRules {
    /// The same rules, without mirror names (for a source whose requesters are strangers).
    pub fn cids_only(&self) -> Self {
        Self {
            mirror_names: false,
            ..self.clone()
        }
    }

    /// Checks that the maxima are within the absolute ranges of [`crate::limits`], the defaults
    /// within the maxima, and every value usable; the error names the setting.
    pub fn validate(&self) -> Result<(), CheckError> {
        let (d, m) = (&self.defaults, &self.maxima);
        let absolute = |e: limits::LimitError| CheckError::new(&e.setting.clone(), e.to_string());
        limits::timeout("COORDINATOR_MAX_TASK_TIMEOUT_SEC", m.timeout.as_secs_f64())
            .map_err(absolute)?;
        limits::memory_bytes("COORDINATOR_MAX_TASK_MEMORY_MB", m.max_memory_mb)
            .map_err(absolute)?;
        limits::output_bytes("COORDINATOR_MAX_TASK_OUTPUT_BYTES", m.max_output_bytes)
            .map_err(absolute)?;
        let pairs: [(&str, bool); 3] = [
            (
                "TIMEOUT_SEC",
                d.timeout <= m.timeout && !d.timeout.is_zero(),
            ),
            (
                "MAX_MEMORY_MB",
                d.max_memory_mb <= m.max_memory_mb && d.max_memory_mb > 0,
            ),
            ("MAX_OUTPUT_BYTES", d.max_output_bytes <= m.max_output_bytes),
        ];
        for (setting, ok) in pairs {
            if !ok {
                return Err(CheckError::new(
                    setting,
                    "the default must be positive and at most its COORDINATOR_MAX_TASK_* maximum",
                ));
            }
        }
        if let (Some(default), Some(max)) = (d.fuel, m.fuel)
            && default > max
        {
            return Err(CheckError::new(
                "FUEL",
                "the default is over COORDINATOR_MAX_TASK_FUEL",
            ));
        }
        Ok(())
    }
}

/// Where a task's module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    /// An IPFS CID; the bytes are verified against it.
    Cid(Cid),
    /// A plain file name in the local mirror (`fib.wasm`, the seed's style).
    Name(String),
}

impl ModuleRef {
    /// Parses a task's `wasm_cid`: a CID, or (if `names` is allowed) a plain file name.
    pub fn parse(text: &str, names: bool) -> Result<Self, CheckError> {
        if text.len() > MAX_NAME_BYTES {
            return Err(CheckError::new(
                "wasm_cid",
                format!("is {} bytes; at most {MAX_NAME_BYTES}", text.len()),
            ));
        }
        match parse_cid(text) {
            Ok(cid) => Ok(ModuleRef::Cid(cid)),
            Err(_) if names && is_plain_name(text) => Ok(ModuleRef::Name(text.to_owned())),
            Err(e) if !names => Err(CheckError::new(
                "wasm_cid",
                format!(
                    "{} is not a CID (Qm... or bafy.../bafk...): {e}",
                    quoted(text)
                ),
            )),
            Err(_) => Err(CheckError::new(
                "wasm_cid",
                format!(
                    "{} is not a CID (Qm... or bafy.../bafk...) nor a module file name",
                    quoted(text)
                ),
            )),
        }
    }
}

/// Whether `name` is a plain file name (`fib.wasm`): no directory part, not hidden, no control
/// characters, so a task can name a module in the mirror but never reach a path outside it.
pub fn is_plain_name(name: &str) -> bool {
    std::path::Path::new(name)
        .file_name()
        .is_some_and(|f| f == name)
        && !name.starts_with('.')
        && !name.chars().any(char::is_control)
}

/// A task that passed [`TaskSpec::check`]: what the backends run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedTask {
    /// The task as it was submitted (what is persisted).
    pub spec: TaskSpec,
    /// Its module reference, parsed.
    pub module: ModuleRef,
    /// Its input document, parsed.
    pub input: TaskInput,
    /// The entry to call, if named: the input's, else the task's.
    pub entry: Option<String>,
    /// Its limits, resolved.
    pub limits: Limits,
}

impl CheckedTask {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.spec.task_id
    }
}

/// Why a task was refused: the field at fault and a message that says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CheckError {
    /// The field (`task_id`, `wasm_cid`, `entry`, `input`, `limits.timeout_sec`, ...).
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl CheckError {
    /// An error for `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl TaskSpec {
    /// The one intake check: refuses a task with the field at fault, or returns it checked,
    /// with its input parsed and its limits resolved under `rules`.
    pub fn check(&self, rules: &IntakeRules) -> Result<CheckedTask, CheckError> {
        check_task_id(&self.task_id)?;
        let module = ModuleRef::parse(&self.wasm_cid, rules.mirror_names)?;
        if let Some(entry) = &self.entry {
            check_entry(entry)?;
        }
        let input = check_input(&self.input, rules.max_input_bytes)?;
        let limits = self.limits.resolve(rules)?;
        if let Some(entry) = &input.entry {
            check_entry(entry).map_err(|e| CheckError::new("input.entry", e.message))?;
        }
        let entry = input.entry.clone().or_else(|| self.entry.clone());
        Ok(CheckedTask {
            spec: self.clone(),
            module,
            input,
            entry,
            limits,
        })
    }
}

fn check_task_id(id: &str) -> Result<(), CheckError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_TASK_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(CheckError::new(
            "task_id",
            format!(
                "task_id must be 1-{MAX_TASK_ID_BYTES} characters of letters, digits, '-', '_' or '.'"
            ),
        ))
    }
}

fn check_entry(entry: &str) -> Result<(), CheckError> {
    if entry.is_empty() || entry.len() > MAX_NAME_BYTES {
        return Err(CheckError::new(
            "entry",
            format!("must be 1-{MAX_NAME_BYTES} bytes, got {}", entry.len()),
        ));
    }
    if entry.chars().any(char::is_control) {
        return Err(CheckError::new(
            "entry",
            "must not hold control characters (a newline would forge lines in the log)",
        ));
    }
    Ok(())
}

fn check_input(input: &Value, max_bytes: usize) -> Result<TaskInput, CheckError> {
    let text = match input {
        Value::Null => String::new(),
        // A source that could not parse its input as JSON keeps the raw text as a string.
        Value::String(raw) if serde_json::from_str::<Value>(raw).is_err() => {
            return Err(CheckError::new(
                "input",
                format!(
                    "input is not JSON; expected {{\"entry\"?, \"args\": [...]}} or a bare array, got {}",
                    quoted(raw)
                ),
            ));
        }
        other => other.to_string(),
    };
    if text.len() > max_bytes {
        return Err(CheckError::new(
            "input",
            format!("is {} bytes; at most {max_bytes}", text.len()),
        ));
    }
    TaskInput::parse(&text).map_err(|e| CheckError::new("input", e.to_string()))
}

impl TaskLimits {
    /// These limits with every unset one taken from `rules.defaults`; a value that is not
    /// usable, or is over the operator's maximum, is refused naming the field and the maximum.
    pub fn resolve(&self, rules: &IntakeRules) -> Result<Limits, CheckError> {
        let (d, m) = (&rules.defaults, &rules.maxima);
        let timeout = match self.timeout_sec {
            None => d.timeout,
            Some(s) => {
                let max = m.timeout.as_secs_f64();
                if !(s.is_finite() && s > 0.0 && s <= max) {
                    return Err(CheckError::new(
                        "limits.timeout_sec",
                        format!(
                            "must be a positive number of seconds, at most {max} (COORDINATOR_MAX_TASK_TIMEOUT_SEC), got {s}"
                        ),
                    ));
                }
                Duration::try_from_secs_f64(s).unwrap_or(m.timeout)
            }
        };
        let max_memory_mb = within(
            "limits.max_memory_mb",
            self.max_memory_mb,
            d.max_memory_mb,
            (1, m.max_memory_mb),
            "COORDINATOR_MAX_TASK_MEMORY_MB",
        )?;
        let max_output_bytes = within(
            "limits.max_output_bytes",
            self.max_output_bytes,
            d.max_output_bytes,
            (0, m.max_output_bytes),
            "COORDINATOR_MAX_TASK_OUTPUT_BYTES",
        )?;
        let fuel = match (self.fuel.or(d.fuel), m.fuel) {
            (Some(fuel), Some(max)) if fuel > max => {
                return Err(CheckError::new(
                    "limits.fuel",
                    format!("at most {max} (COORDINATOR_MAX_TASK_FUEL), got {fuel}"),
                ));
            }
            (fuel, _) => fuel,
        };
        Ok(Limits {
            timeout,
            max_memory_mb,
            max_output_bytes,
            fuel,
        })
    }
}

/// `value` (or `default` when unset) if it lies in `range`, else an error naming the maximum.
fn within(
    field: &str,
    value: Option<u64>,
    default: u64,
    (min, max): (u64, u64),
    setting: &str,
) -> Result<u64, CheckError> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(CheckError::new(
            field,
            format!("must be {min}-{max} ({setting} is the maximum), got {v}"),
        )),
    }
}

/// `text` as a JSON string, cut to 80 characters, so a message never carries control characters
/// or much of what a stranger sent.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{}{more}", Value::String(cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIB_CID: &str = "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je";

    fn task(value: Value) -> TaskSpec {
        serde_json::from_value(value).unwrap()
    }

    fn refused(value: Value, rules: &IntakeRules) -> CheckError {
        task(value).check(rules).unwrap_err()
    }

    #[test]
    fn a_good_task_comes_out_parsed_and_with_every_limit_resolved() {
        let checked = task(json!({
            "task_id": "t1", "wasm_cid": FIB_CID,
            "input": {"entry": "fib", "args": [12]}, "limits": {"fuel": 1000}
        }))
        .check(&IntakeRules::default())
        .unwrap();
        assert!(matches!(checked.module, ModuleRef::Cid(_)));
        assert_eq!(checked.entry.as_deref(), Some("fib"));
        assert_eq!(checked.input.args, Some(vec![json!(12)]));
        assert_eq!(checked.limits.timeout, Duration::from_secs(20));
        assert_eq!(checked.limits.max_memory_mb, 256);
        assert_eq!(checked.limits.fuel, Some(1000));
    }

    #[test]
    fn limits_over_the_operator_maxima_are_refused_naming_the_maximum() {
        let rules = IntakeRules::default();
        for (limits, field) in [
            (json!({"max_memory_mb": 4096}), "limits.max_memory_mb"),
            (json!({"max_memory_mb": u64::MAX}), "limits.max_memory_mb"),
            (json!({"max_memory_mb": 0}), "limits.max_memory_mb"),
            (json!({"timeout_sec": 1e20}), "limits.timeout_sec"),
            (json!({"timeout_sec": 0}), "limits.timeout_sec"),
            (json!({"timeout_sec": -1}), "limits.timeout_sec"),
            (
                json!({"max_output_bytes": 1u64 << 40}),
                "limits.max_output_bytes",
            ),
        ] {
            let e = refused(
                json!({"task_id": "t", "wasm_cid": "fib.wasm", "limits": limits}),
                &rules,
            );
            assert_eq!(e.field, field, "{limits}: {e}");
            assert!(e.message.contains("COORDINATOR_MAX_TASK_"), "{e}");
        }
        let capped = IntakeRules {
            maxima: Limits {
                fuel: Some(10),
                ..rules.maxima
            },
            ..rules
        };
        let e = refused(
            json!({"task_id": "t", "wasm_cid": "fib.wasm", "limits": {"fuel": 11}}),
            &capped,
        );
        assert!(e.message.contains("COORDINATOR_MAX_TASK_FUEL"), "{e}");
    }

    #[test]
    fn each_bad_field_is_named() {
        let rules = IntakeRules::default();
        let cases = [
            (json!({"task_id": "a b", "wasm_cid": "fib.wasm"}), "task_id"),
            (
                json!({"task_id": "t", "wasm_cid": "../etc/passwd"}),
                "wasm_cid",
            ),
            (
                json!({"task_id": "t", "wasm_cid": "fib\n.wasm"}),
                "wasm_cid",
            ),
            (
                json!({"task_id": "t", "wasm_cid": "fib.wasm", "entry": ""}),
                "entry",
            ),
            (
                json!({"task_id": "t", "wasm_cid": "fib.wasm", "input": "{oops"}),
                "input",
            ),
            (
                json!({"task_id": "t", "wasm_cid": "fib.wasm", "input": {"args": 1}}),
                "input",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(refused(value.clone(), &rules).field, field, "{value}");
        }
    }

    #[test]
    fn a_source_of_strangers_may_not_name_mirror_files() {
        let rules = IntakeRules::default().cids_only();
        let e = refused(json!({"task_id": "t", "wasm_cid": "fib.wasm"}), &rules);
        assert_eq!(e.field, "wasm_cid");
        assert!(e.message.contains("is not a CID"), "{e}");
        assert!(
            task(json!({"task_id": "t", "wasm_cid": FIB_CID}))
                .check(&rules)
                .is_ok()
        );
    }

    #[test]
    fn an_oversized_input_is_refused_and_messages_stay_short() {
        let rules = IntakeRules {
            max_input_bytes: 100,
            ..IntakeRules::default()
        };
        let big =
            json!({"task_id": "t", "wasm_cid": "fib.wasm", "input": {"args": [ "x".repeat(200) ]}});
        assert_eq!(refused(big, &rules).field, "input");
        let long = "y".repeat(10_000);
        let e = refused(
            json!({"task_id": "t", "wasm_cid": "fib.wasm", "input": long}),
            &rules,
        );
        assert!(e.message.len() < 300, "{}", e.message.len());
    }

    #[test]
    fn defaults_over_their_maxima_are_refused_at_start() {
        let mut rules = IntakeRules::default();
        assert_eq!(rules.validate(), Ok(()));
        rules.defaults.max_memory_mb = 2048;
        assert_eq!(rules.validate().unwrap_err().field, "MAX_MEMORY_MB");
        let mut rules = IntakeRules::default();
        rules.maxima.max_memory_mb = u64::MAX;
        let e = rules.validate().unwrap_err();
        assert_eq!(e.field, "COORDINATOR_MAX_TASK_MEMORY_MB", "{e}");
    }
}
