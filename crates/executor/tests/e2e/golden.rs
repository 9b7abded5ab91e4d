//! The golden result hashes: the samples and the hostile guests, every limit set, must give the
//! committed `result_hash` (testdata/result_hash/golden.json), as the coordinator's local backend
//! must too (crates/coordinator-bin/tests/golden.rs): the same task, the same hash, either way.

use crate::util::exec;
use wasm_exec_test_peers::golden::golden_cases;

#[test]
fn the_executor_gives_the_golden_result_hashes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mismatches = Vec::new();
    for case in golden_cases() {
        let wasm = dir.path().join(format!("{}.wasm", case.name));
        std::fs::write(&wasm, &case.wasm).expect("write the module");
        let mut run = exec(wasm.to_str().expect("a UTF-8 temp path"))
            .env("ARGS_JSON", case.input.to_string());
        for (var, value) in case.limit_env() {
            run = run.env(var, value);
        }
        let out = run.run();
        let envelope = &out.envelope;
        let outcome = envelope.kind().map_or("ok", |k| k.as_str());
        let hash = envelope.result_hash().to_string();
        mismatches.extend(case.compare(outcome, &hash, &out.last_line));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
