//! One compiled-module cache for the coordinator's local backend and the `executor` binary: a
//! module compiled by one is loaded by the other, in either order, without compiling again, when
//! both compile the same code (the executor with `TIMEOUT_ENFORCEMENT=epoch`, as in-process).
//!
//! The local backend keeps its entries in `COORDINATOR_CACHE_DIR/compiled`, its key beside them
//! (`compiled.key`): the executor's `WASM_CACHE_DIR` and default key for that directory. The
//! executor is the workspace's own build, beside this crate's `coordinator` binary.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Service, command, get, post, repo, wait_finished};

/// The `executor` binary built with this crate's (the workspace build puts both in one directory).
fn executor_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_coordinator")).with_file_name("executor");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// What the executor logged about the cache on one fib(12) run over the cache at `dir`, after
/// checking that the run gave 144.
fn executor_cache_outcome(dir: &Path, enforcement: &str) -> String {
    let out = Command::new(executor_bin())
        .env_clear()
        .env("WASM_PATH", repo("host/wasm/fib.wasm"))
        .env("ARGS_JSON", r#"{"entry":"fib","args":[12]}"#)
        .env("WASM_CACHE_DIR", dir.join("compiled"))
        .env("TIMEOUT_ENFORCEMENT", enforcement)
        .env("LOG_STREAM", "stderr")
        .output()
        .expect("running the executor");
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the result document");
    assert_eq!(doc["result"], 144, "{doc}\n{logs}");
    let outcome = logs
        .split("cache=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no cache outcome logged:\n{logs}"));
    outcome.to_owned()
}

/// The local backend's compiled-module cache counts after one fib(12) task over the cache at
/// `dir` (a fresh state directory each time, so the result cache cannot answer instead).
fn coordinator_cache_counts(dir: &Path) -> (String, String) {
    let state = tempfile::tempdir().expect("a state directory");
    let mut cmd = command(state.path());
    cmd.env("COORDINATOR_CACHE_DIR", dir);
    let svc = Service::start(cmd);
    let body =
        json!({"task_id": "fib", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
        201
    );
    let done = wait_finished(&svc.base, "fib");
    assert_eq!(done["result"]["result"], 144, "{done}");
    let metrics = get(&svc.base, "/metrics", None).body;
    let text = metrics.as_str().expect("metrics text");
    let count = |outcome: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "wasm_exec_compiled_module_cache_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("0")
            .to_owned()
    };
    (count("hit"), count("miss"))
}

#[test]
fn a_module_the_local_backend_compiled_is_not_compiled_again_by_the_executor() {
    let dir = tempfile::tempdir().expect("a cache directory");
    assert_eq!(
        coordinator_cache_counts(dir.path()),
        ("0".into(), "1".into()),
        "the first run compiles"
    );
    assert_eq!(executor_cache_outcome(dir.path(), "epoch"), "hit");
    // The executor's default (a watchdog, no epoch checks in the code) is other code: its own
    // entry, beside the backend's, never the backend's taken for its own.
    assert_eq!(executor_cache_outcome(dir.path(), "watchdog"), "miss");
    assert_eq!(executor_cache_outcome(dir.path(), "watchdog"), "hit");
}

#[test]
fn a_module_the_executor_compiled_is_not_compiled_again_by_the_local_backend() {
    let dir = tempfile::tempdir().expect("a cache directory");
    assert_eq!(executor_cache_outcome(dir.path(), "epoch"), "miss");
    assert_eq!(
        coordinator_cache_counts(dir.path()),
        ("1".into(), "0".into()),
        "loaded from the executor's entry"
    );
}
