//! `coordinator --once` end to end: the real binary, the real samples, the local backend.

mod support;

use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use support::repo;

fn coordinator(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.env_clear()
        .current_dir(dir)
        .env("COORDINATOR_IPFS_MIRROR", repo("host/wasm"))
        .env("COORDINATOR_LISTEN", "127.0.0.1:0")
        .arg("--once");
    cmd
}

fn row<'a>(out: &'a Output, task: &str) -> &'a str {
    support::table_row(out, task)
}

#[test]
fn samples_run_from_the_mirror_by_their_real_cids() {
    let dir = tempfile::tempdir().unwrap();
    let out = coordinator(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(row(&out, "add").contains("succeeded") && row(&out, "add").contains(" 12 "));
    assert!(row(&out, "fib").contains("144"), "{}", row(&out, "fib"));
    assert!(
        row(&out, "affine").contains("35"),
        "{}",
        row(&out, "affine")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("task_id=fib") || stderr.contains("task_id=\"fib\""),
        "logs carry the task id: {stderr}"
    );
}

#[test]
fn every_failure_fails_its_task_and_the_rest_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = json!([
        {"task_id": "unknown", "wasm_cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"},
        {"task_id": "bad-input", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": ["twelve"]}},
        {"task_id": "no-entry", "wasm_cid": "fib.wasm", "input": {"entry": "fibb"}},
        {"task_id": "by-name", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [10]}},
        {"task_id": "slow", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}, "limits": {"timeout_sec": 5}},
    ]);
    std::fs::write(dir.path().join("tasks.json"), tasks.to_string()).unwrap();
    let out = coordinator(dir.path())
        .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"))
        .env("COORDINATOR_CONCURRENCY", "2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed task makes --once exit 1: {out:?}"
    );
    assert!(row(&out, "unknown").contains("failed (module_unavailable)"));
    assert!(row(&out, "bad-input").contains("failed (bad_input)"));
    assert!(row(&out, "no-entry").contains("failed (entry_not_found)"));
    assert!(row(&out, "by-name").contains("succeeded") && row(&out, "by-name").contains("55"));
    assert!(row(&out, "slow").contains("succeeded"));
}

#[test]
fn hostile_tasks_end_by_kind_within_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("testdata/wasm/hostile.wasm"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("garbage.wasm"), b"\0asm garbage").unwrap();
    let tasks = json!([
        {"task_id": "spin", "wasm_cid": "hostile.wasm", "entry": "spin", "limits": {"timeout_sec": 0.3}},
        {"task_id": "bomb", "wasm_cid": "hostile.wasm", "entry": "membomb", "limits": {"max_memory_mb": 16}},
        {"task_id": "fuel", "wasm_cid": "hostile.wasm", "entry": "spin", "limits": {"fuel": 100000}},
        {"task_id": "trap", "wasm_cid": "hostile.wasm", "entry": "trap"},
        {"task_id": "garbage", "wasm_cid": "garbage.wasm"},
    ]);
    std::fs::write(dir.path().join("tasks.json"), tasks.to_string()).unwrap();
    let started = std::time::Instant::now();
    let out = coordinator(dir.path())
        .env("COORDINATOR_IPFS_MIRROR", dir.path())
        .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"))
        .output()
        .unwrap();
    assert!(started.elapsed().as_secs() < 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(row(&out, "spin").contains("failed (timeout)"));
    assert!(row(&out, "bomb").contains("failed (out_of_memory)"));
    assert!(row(&out, "fuel").contains("failed (out_of_fuel)"));
    assert!(row(&out, "trap").contains("failed (trap)"));
    let garbage = row(&out, "garbage");
    assert!(garbage.contains("failed (bad_module)"), "{garbage}");
}

#[test]
fn malformed_tasks_file_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tasks.json"), r#"[{"task_id": "x"}]"#).unwrap();
    let out = coordinator(dir.path())
        .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("COORDINATOR_TASKS_FILE") && stderr.contains("wasm_cid"),
        "{stderr}"
    );
}

#[test]
fn a_tasks_file_entry_that_fails_the_intake_check_fails_the_start_with_its_index_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (entry, field) in [
        (
            json!({"task_id": "path", "wasm_cid": "../../etc/passwd"}),
            "wasm_cid",
        ),
        (
            json!({"task_id": "greedy", "wasm_cid": "fib.wasm", "limits": {"max_memory_mb": 4096}}),
            "limits.max_memory_mb",
        ),
        (
            json!({"task_id": "forever", "wasm_cid": "fib.wasm", "limits": {"timeout_sec": 1e20}}),
            "limits.timeout_sec",
        ),
        (
            json!({"task_id": "no spaces", "wasm_cid": "fib.wasm"}),
            "task_id",
        ),
    ] {
        let tasks = json!([{"task_id": "fine", "wasm_cid": "fib.wasm"}, entry]);
        std::fs::write(dir.path().join("tasks.json"), tasks.to_string()).unwrap();
        let out = coordinator(dir.path())
            .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{entry}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("task 1") && stderr.contains(field),
            "{entry}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing ran: {out:?}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_task_id() {
    let dir = tempfile::tempdir().unwrap();
    let out = coordinator(dir.path())
        .env("COORDINATOR_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished: Vec<_> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "task finished")
        .collect();
    assert_eq!(finished.len(), 3, "{stderr}");
    assert!(
        finished.iter().all(|e| e["span"]["task_id"].is_string()),
        "{stderr}"
    );
}

#[test]
fn a_submission_during_a_once_run_is_refused_with_the_reason_not_accepted_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = json!([{
        "task_id": "spin", "wasm_cid": "hostile.wasm",
        "input": {"entry": "spin"}, "limits": {"timeout_sec": 3}
    }]);
    std::fs::write(dir.path().join("tasks.json"), tasks.to_string()).unwrap();
    let mut cmd = coordinator(dir.path());
    cmd.env("COORDINATOR_IPFS_MIRROR", repo("testdata/wasm"))
        .env("COORDINATOR_STATE_DIR", dir.path().join("state"))
        .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"));
    let service = support::Service::start(cmd);
    let body = r#"{"wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}}"#;
    let reply = support::post(&service.base, "/v1/tasks", body, None);
    assert_eq!(reply.status, 503, "{reply:?}");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("--once") && message.contains("without --once"),
        "{reply:?}"
    );
    // The run takes its source's task a moment after the API listens: wait for it, then check
    // that it is the only task there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = support::get(&service.base, "/v1/tasks", None);
        assert_eq!(listed.status, 200, "{listed:?}");
        let ids: Vec<&str> = listed.body["tasks"]
            .as_array()
            .map(|tasks| tasks.iter().filter_map(|t| t["task_id"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            ids.iter().all(|id| *id == "spin"),
            "a refused submission was stored: {listed:?}"
        );
        if !ids.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source's task was never taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The local backend holds a fuel budget as hard as the executor does: fib(40) needs 187 units.
#[test]
fn the_local_backend_enforces_the_fuel_budget_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = [1_u64, 100, 150, 186, 187, 188];
    let tasks: Vec<_> = budgets
        .iter()
        .map(|fuel| {
            json!({"task_id": format!("fuel-{fuel}"), "wasm_cid": "fib.wasm",
                   "input": {"entry": "fib", "args": [40]}, "limits": {"fuel": fuel}})
        })
        .collect();
    std::fs::write(dir.path().join("tasks.json"), json!(tasks).to_string()).unwrap();
    let results = dir.path().join("results.jsonl");
    let out = coordinator(dir.path())
        .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"))
        .env("COORDINATOR_RESULTS_FILE", &results)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "some tasks ran out: {out:?}");
    let results = std::fs::read_to_string(&results).unwrap();
    for fuel in budgets {
        let result = results
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["task_id"] == format!("fuel-{fuel}"))
            .unwrap_or_else(|| panic!("no result for fuel {fuel}: {results}"))["result"]
            .clone();
        if fuel < 187 {
            assert_eq!(result["error"]["kind"], "out_of_fuel", "{fuel}: {result}");
            assert_eq!(result["fuel_consumed"], fuel, "{result}");
        } else {
            assert_eq!(result["result"], 102_334_155, "{fuel}: {result}");
            assert_eq!(result["fuel_consumed"], 187, "{result}");
        }
    }
}
