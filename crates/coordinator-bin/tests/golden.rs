//! The golden result hashes through the real coordinator's API and its local backend: each of
//! testdata/result_hash/golden.json gives the committed `result_hash`, as the executor binary
//! must too (crates/executor/tests/e2e/golden.rs), and `GET /v1/tasks/{id}` shows it.

mod support;

use serde_json::json;
use support::{Service, command, post, wait_finished};
use wasm_exec_task::ResultEnvelope;
use wasm_exec_test_peers::golden::golden_cases;

#[test]
fn the_local_backend_gives_the_golden_result_hashes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).expect("mirror dir");
    let cases = golden_cases();
    for case in &cases {
        std::fs::write(mirror.join(format!("{}.wasm", case.name)), &case.wasm)
            .expect("write the module");
    }
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let mut mismatches = Vec::new();
    for case in &cases {
        let body = json!({
            "task_id": case.name,
            "wasm_cid": format!("{}.wasm", case.name),
            "input": case.input,
            "limits": case.limits,
        });
        let reply = post(&svc.base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(reply.status, 201, "{}: {reply:?}", case.name);
        let view = wait_finished(&svc.base, &case.name);
        let envelope: ResultEnvelope =
            serde_json::from_value(view["result"].clone()).expect("a result document");
        let outcome = envelope.kind().map_or("ok", |k| k.as_str());
        let hash = envelope.result_hash().to_string();
        assert_eq!(view["result_hash"], hash.as_str(), "the API shows the hash");
        mismatches.extend(case.compare(outcome, &hash, &view["result"].to_string()));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
