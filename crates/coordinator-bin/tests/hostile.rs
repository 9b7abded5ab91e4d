//! Hostile guests in-process, through the real coordinator's API: each ends with its kind within
//! its limit plus a stated margin, the coordinator's peak memory stays bounded, and after each
//! the service is healthy and runs an ordinary task.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Service, command, get, post, repo, wait_finished};
use wasm_exec_test_peers::hostile::{looped_function, module};

/// The hostile tasks: id, module, input, limits, `ok` or the error kind it must end with, and
/// the most milliseconds from submission to result (its limit plus the margin).
const CASES: &[(&str, &str, &str, &str, &str, u64)] = &[
    (
        "spin",
        "spin.wasm",
        r#"{"entry":"spin"}"#,
        r#"{"timeout_sec":1}"#,
        "timeout",
        1_500,
    ),
    (
        "start",
        "start_loop.wasm",
        "{}",
        r#"{"timeout_sec":1}"#,
        "timeout",
        1_500,
    ),
    (
        "sleep",
        "sleep.wasm",
        r#"{"entry":"sleep","args":[-1]}"#,
        "{}",
        "ok",
        500,
    ),
    (
        "memories",
        "many_memories.wasm",
        r#"{"entry":"fill","args":[480]}"#,
        MB32,
        OOM,
        2_000,
    ),
    (
        "tables",
        "many_memories.wasm",
        r#"{"entry":"tables","args":[1000000]}"#,
        MB32,
        OOM,
        2_000,
    ),
    ("table", "table_bomb.wasm", "{}", "{}", OOM, 2_000),
    ("huge", "huge_memory.wasm", "{}", "{}", OOM, 2_000),
    (
        "deep",
        "deep_recursion.wasm",
        r#"{"entry":"down","args":[100000000]}"#,
        "{}",
        "trap",
        2_000,
    ),
    (
        "bomb",
        "compile_bomb.wasm",
        "{}",
        r#"{"timeout_sec":1}"#,
        "bad_module",
        1_500,
    ),
    (
        "flood",
        "control_flood.wasm",
        r#"{"args":[1024]}"#,
        "{}",
        "ok",
        3_000,
    ),
];
const MB32: &str = r#"{"max_memory_mb":32}"#;
const OOM: &str = "out_of_memory";

/// A mirror of the hostile guests as binary Wasm (the mirror takes nothing else), the samples
/// beside them, and the attack review's compiler bomb: 2,000 i64 locals across a loop of
/// 20,000 nested blocks.
fn mirror(dir: &Path) -> std::path::PathBuf {
    let mirror = dir.join("mirror");
    std::fs::create_dir(&mirror).expect("hostile test setup");
    for name in [
        "busy_loop",
        "control_flood",
        "deep_recursion",
        "huge_memory",
        "many_memories",
        "sleep",
        "start_loop",
        "table_bomb",
    ] {
        let wasm =
            wat::parse_file(repo(&format!("testdata/wat/{name}.wat"))).expect("hostile test setup");
        std::fs::write(mirror.join(format!("{name}.wasm")), wasm).expect("hostile test setup");
    }
    for (from, to) in [
        ("testdata/wasm/hostile.wasm", "spin.wasm"),
        ("host/wasm/fib.wasm", "fib.wasm"),
    ] {
        std::fs::copy(repo(from), mirror.join(to)).expect("hostile test setup");
    }
    let bomb =
        wat::parse_str(module(&[looped_function(2_000, 20_000)])).expect("hostile test setup");
    std::fs::write(mirror.join("compile_bomb.wasm"), bomb).expect("hostile test setup");
    mirror
}

/// The service is healthy and runs an ordinary task.
fn still_serves(svc: &Service, after: &str) {
    assert_eq!(
        get(&svc.base, "/healthz", None).status,
        200,
        "after {after}"
    );
    assert_eq!(get(&svc.base, "/readyz", None).status, 200, "after {after}");
    let id = format!("fib-after-{after}");
    let body =
        json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
        201
    );
    assert_eq!(
        wait_finished(&svc.base, &id)["result"]["result"],
        144,
        "after {after}"
    );
}

#[test]
fn hostile_guests_end_within_their_limits_and_the_service_goes_on() {
    let dir = tempfile::tempdir().expect("hostile test setup");
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", mirror(dir.path()));
    let svc = Service::start(cmd);
    for &(id, module, input, limits, outcome, within_ms) in CASES {
        let input: Value = serde_json::from_str(input).expect("hostile test setup");
        let limits: Value = serde_json::from_str(limits).expect("hostile test setup");
        let body = json!({"task_id": id, "wasm_cid": module, "input": input, "limits": limits});
        let within = Duration::from_millis(within_ms);
        let started = Instant::now();
        let reply = post(&svc.base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(reply.status, 201, "{}: {reply:?}", id);
        let view = wait_finished(&svc.base, id);
        let took = started.elapsed();
        let result = &view["result"];
        let kind = if result["ok"] == true {
            "ok"
        } else {
            result["error"]["kind"].as_str().unwrap_or("?")
        };
        let document = result.to_string().len();
        let rss = svc.peak_rss_mib();
        eprintln!(
            "{:<9} {kind:<14} {took:>12.3?} document {document:>8} B  peak RSS {rss} MiB",
            id
        );
        assert_eq!(kind, outcome, "{}: {view:.2000}", id);
        assert!(took < within, "{} took {took:?}, over {:?}", id, within);
        // The budget per task (256 MiB by default) is reserved, not touched, by these guests; what
        // they do touch is 32 MiB at most, and the flood's 2 MiB document.
        assert!(rss < 200, "{}: peak RSS {rss} MiB", id);
        still_serves(&svc, id);
    }
    // The flood's document: 1 MiB of each stream as encoded, plus the rest of the document.
    let flood = wait_finished(&svc.base, "flood");
    assert!(
        flood["result"].to_string().len() < (2 << 20) + 4096,
        "{:.300}",
        flood["result"]
    );
}
