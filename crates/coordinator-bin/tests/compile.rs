//! Compiling counts against a task's limits in the coordinator, through the real binary: a
//! module that needs a minute to compile ends as `timeout` at the task's time limit, one whose
//! compile needs more memory than the compiler's allowance ends as `out_of_memory`; the
//! coordinator's own memory stays small (the compile runs in a child process), and it serves the
//! next task.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Service, command, get, post, repo, wait_finished};
use wasm_exec_test_peers::hostile::slow_to_compile;

/// A mirror holding the sample `fib.wasm` and `slow.wasm`, `functions` of the costliest
/// functions the shape check allows (about a second of compiling each), as binary Wasm.
fn mirror(dir: &Path, functions: usize) -> PathBuf {
    let mirror = dir.join("mirror");
    std::fs::create_dir_all(&mirror).expect("compile test setup");
    std::fs::copy(repo("host/wasm/fib.wasm"), mirror.join("fib.wasm")).expect("compile test setup");
    let wasm = wat::parse_str(slow_to_compile(functions)).expect("compile test setup");
    std::fs::write(mirror.join("slow.wasm"), wasm).expect("compile test setup");
    mirror
}

/// Submits `task`, waits for its result; the task view and the time from submission to result.
fn submit(svc: &Service, task: &Value) -> (Value, Duration) {
    let started = Instant::now();
    let reply = post(&svc.base, "/v1/tasks", &task.to_string(), None);
    assert_eq!(reply.status, 201, "{reply:?}");
    let id = task["task_id"].as_str().expect("compile test setup");
    (wait_finished(&svc.base, id), started.elapsed())
}

/// The service is healthy and still runs an ordinary task.
fn still_serves(svc: &Service) {
    assert_eq!(get(&svc.base, "/healthz", None).status, 200);
    assert_eq!(get(&svc.base, "/readyz", None).status, 200);
    let (view, _) = submit(
        svc,
        &json!({"task_id": "after", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}}),
    );
    assert_eq!(view["result"]["ok"], true, "{view}");
    assert_eq!(view["result"]["result"], 144, "{view}");
}

#[test]
fn a_module_slow_to_compile_times_out_at_the_task_limit() {
    let dir = tempfile::tempdir().expect("compile test setup");
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", mirror(dir.path(), 60));
    let svc = Service::start(cmd);
    let task = json!({"task_id": "slow", "wasm_cid": "slow.wasm", "limits": {"timeout_sec": 1}});
    let (view, took) = submit(&svc, &task);
    let error = &view["result"]["error"];
    assert_eq!(error["kind"], "timeout", "{view}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("compiling"),
        "{view}"
    );
    let rss = svc.peak_rss_mib();
    eprintln!(
        "a minute of compiling under a 1 s limit: timeout after {took:?}; peak RSS {rss} MiB"
    );
    // The limit plus 0.5 s: the kill, the result's write and the polling.
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    assert!(rss < 150, "peak RSS {rss} MiB");
    still_serves(&svc);
}

#[test]
fn a_compile_over_the_memory_allowance_is_out_of_memory() {
    let dir = tempfile::tempdir().expect("compile test setup");
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", mirror(dir.path(), 4))
        .env("COORDINATOR_COMPILE_MEMORY_MB", "96");
    let svc = Service::start(cmd);
    let task = json!({"task_id": "big", "wasm_cid": "slow.wasm", "limits": {"timeout_sec": 60}});
    let (view, took) = submit(&svc, &task);
    let error = &view["result"]["error"];
    assert_eq!(error["kind"], "out_of_memory", "{view}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("96 MiB"),
        "{view}"
    );
    let rss = svc.peak_rss_mib();
    eprintln!(
        "a compile over a 96 MiB allowance: out_of_memory after {took:?}; peak RSS {rss} MiB"
    );
    assert!(rss < 150, "peak RSS {rss} MiB");
    still_serves(&svc);
}
