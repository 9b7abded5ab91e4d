//! The golden result hashes (`testdata/result_hash/golden.json`): the samples and the hostile
//! guests with their inputs and every limit set, and the `result_hash` each must give wherever it
//! runs. The executor's and the coordinator's tests both compare against them, so the two agree
//! with each other, and a change of the encoding or of fuel metering fails both.

use crate::hostile::{looped_function, module};
use crate::repo;
use serde_json::Value;

/// One golden task.
#[derive(Debug, Clone)]
pub struct GoldenCase {
    /// Its name, also the module's file name (`<name>.wasm`) in a mirror.
    pub name: String,
    /// The module's binary bytes (WAT fixtures compiled, the compiler bomb generated).
    pub wasm: Vec<u8>,
    /// The input document, `{"entry": ..., "args": [...]}` or `{}`.
    pub input: Value,
    /// Every limit that decides the result: `fuel`, `max_memory_mb`, `timeout_sec`,
    /// `max_output_bytes`.
    pub limits: Value,
    /// `ok` or the error kind it ends with.
    pub outcome: String,
    /// The `result_hash` it must give, `0x...`.
    pub result_hash: String,
}

impl GoldenCase {
    /// Prints the case's `outcome` and `hash` as a run gave them, and says how they differ from
    /// the golden ones, if they do (`shown`: the run's result, the first 400 characters kept).
    pub fn compare(&self, outcome: &str, hash: &str, shown: &str) -> Option<String> {
        eprintln!("{:<18} {outcome:<14} {hash}", self.name);
        (outcome != self.outcome || hash != self.result_hash).then(|| {
            format!(
                "{}: {outcome} {hash}, golden {} {} ({shown:.400})",
                self.name, self.outcome, self.result_hash
            )
        })
    }

    /// The limits as the executor's environment variables (`FUEL=...`).
    pub fn limit_env(&self) -> Vec<(&'static str, String)> {
        let names = [
            ("fuel", "FUEL"),
            ("max_memory_mb", "MAX_MEMORY_MB"),
            ("timeout_sec", "TIMEOUT_SEC"),
            ("max_output_bytes", "MAX_OUTPUT_BYTES"),
        ];
        names
            .iter()
            .filter_map(|(key, var)| self.limits.get(key).map(|v| (*var, v.to_string())))
            .collect()
    }
}

/// Every golden case, modules built; panics naming the file if it is malformed.
pub fn golden_cases() -> Vec<GoldenCase> {
    let path = repo("testdata/result_hash/golden.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let cases: Vec<Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    cases
        .iter()
        .map(|case| {
            let field = |key: &str| {
                case[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a case without {key}: {case}", path.display()))
                    .to_owned()
            };
            GoldenCase {
                name: field("name"),
                wasm: module_bytes(&field("module")),
                input: case["input"].clone(),
                limits: case["limits"].clone(),
                outcome: field("outcome"),
                result_hash: field("result_hash"),
            }
        })
        .collect()
}

/// A module named in the golden file: a path under the repository (`.wasm` or `.wat`), or
/// `generated:compile_bomb`, the attack review's 2,000 i64 locals across 20,000 nested blocks.
fn module_bytes(module_ref: &str) -> Vec<u8> {
    if module_ref == "generated:compile_bomb" {
        return wat::parse_str(module(&[looped_function(2_000, 20_000)]))
            .expect("the generated compiler bomb is valid WAT");
    }
    let path = repo(module_ref);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if module_ref.ends_with(".wat") {
        wat::parse_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .into_owned()
    } else {
        bytes
    }
}
