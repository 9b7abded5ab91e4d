//! The web dashboard in a real browser: `peers/browser/dashboard.mjs` (playwright-core) drives
//! Debian's chromium, headless, against the real coordinator with two tenants. Through the page
//! it submits fib(12) and sees 144, cancels a running `loop` task and sees `cancelled`, checks a
//! narrow screen and keeps two screenshots in `WASM_EXEC_ARTIFACTS` (default `target/artifacts`);
//! any console error or failed request fails it.
//!
//! Without chromium (`CHROMIUM`, default `/usr/bin/chromium`) it says so in one line and passes,
//! unless `WASM_EXEC_BROWSER=1` (scripts/test sets it once chromium is installed), where it fails.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Service, command, get, new_token, post, repo};

/// The chromium to drive, or `None` (with the reason) when the suite has none.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    if path.is_file() {
        return Some(path);
    }
    let must = std::env::var("WASM_EXEC_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !must,
        "WASM_EXEC_BROWSER=1 but there is no chromium at {}",
        path.display()
    );
    eprintln!(
        "dashboard browser test skipped: no chromium at {} (apt-get install chromium, or set CHROMIUM)",
        path.display()
    );
    None
}

fn artifacts() -> PathBuf {
    std::env::var_os("WASM_EXEC_ARTIFACTS").map_or_else(|| repo("target/artifacts"), PathBuf::from)
}

/// A coordinator with tenants `a` and `b`; returns it with their tokens.
fn start(dir: &Path) -> (Service, String, String) {
    let (a, a_entry) = new_token(dir, "a-ui");
    let (b, b_entry) = new_token(dir, "b-ui");
    let tokens = json!({"tenants": [
        {"tenant": "a", "concurrency": 2, "tokens": [a_entry]},
        {"tenant": "b", "concurrency": 2, "tokens": [b_entry]},
    ]});
    let tokens_file = dir.join("tokens.json");
    std::fs::write(&tokens_file, tokens.to_string()).expect("the tokens file");
    let mut cmd = command(&dir.join("state"));
    cmd.env("COORDINATOR_TOKENS_FILE", &tokens_file);
    (Service::start(cmd), a, b)
}

/// Runs `peers/browser/dashboard.mjs` with `config`; returns what it saw, failing on any
/// problem it reports.
fn drive(dir: &Path, config: &Value) -> Value {
    let config_file = dir.join("browser.json");
    std::fs::write(&config_file, config.to_string()).expect("the browser's config");
    let out = Command::new("node")
        .arg(repo("peers/browser/dashboard.mjs"))
        .arg(&config_file)
        .current_dir(repo("peers/browser"))
        .output()
        .expect("run node (Node.js 20)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from dashboard.mjs:\n{stdout}\n{stderr}"));
    assert_eq!(report["problems"], json!([]), "{report:#}\n{stderr}");
    assert!(out.status.success(), "{report:#}\n{stderr}");
    report["seen"].clone()
}

#[test]
fn the_dashboard_submits_cancels_and_shows_only_the_tenants_tasks_in_chromium() {
    let Some(chromium) = chromium() else { return };
    assert!(
        repo("peers/browser/node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/install-test-peers"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (svc, a, b) = start(dir.path());
    // One task of each tenant before the page opens: a's is listed, b's never is.
    for (id, token) in [("fib-of-a", &a), ("fib-of-b", &b)] {
        let body =
            json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [10]}});
        let r = post(&svc.base, "/v1/tasks", &body.to_string(), Some(token));
        assert_eq!(r.status, 201, "{r:?}");
    }
    wait_finished_as(&svc.base, "fib-of-a", &a);
    let seen = drive(
        dir.path(),
        &json!({
            "base": svc.base,
            "token": a,
            "chromium": chromium,
            "fib_wasm": repo("host/wasm/fib.wasm"),
            "loop_wat": repo("testdata/wat/loop.wat"),
            "artifacts": artifacts(),
            "present": ["fib-of-a"],
            "absent": ["fib-of-b"],
        }),
    );
    served_and_accessible(&seen);
    tasks_shown(&seen);
    // The token went in a header, never into the coordinator's log.
    let log = svc.log.lock().expect("the log").clone();
    assert!(!log.contains(&a), "the token is in the log");
}

/// How the page was served, and what it offers keyboard and screen-reader users.
fn served_and_accessible(seen: &Value) {
    // Served right: HTML, revalidated, under a policy that allows no inline script.
    assert_eq!(seen["content_type"], "text/html; charset=utf-8");
    assert_eq!(seen["cache_control"], "no-cache");
    assert!(
        seen["csp"]
            .as_str()
            .is_some_and(|p| p.contains("script-src 'self'")),
        "{seen}"
    );
    // Keyboard and labels.
    assert_eq!(seen["focused"], "token", "two Tabs reach the token field");
    assert_eq!(seen["focus_outline"], "solid", "focus is visible");
    assert_eq!(seen["unlabelled"], json!([]), "every control has a label");
    assert_eq!(seen["token_in_session"], true);
    // A narrow screen: nothing wider than it.
    assert_eq!(seen["narrow_overflow"], 0, "{seen}");
    assert_eq!(seen["narrow_header_hidden"], true);
    for shot in ["screenshot", "narrow_screenshot"] {
        let path = PathBuf::from(seen[shot].as_str().expect("a path"));
        let png = std::fs::read(&path).expect("the screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{}", path.display());
        eprintln!("dashboard screenshot: {}", path.display());
    }
}

/// What the page showed of the tasks: the tenant's only, fib(12)'s 144, the loop cancelled.
fn tasks_shown(seen: &Value) {
    // The tenant's tasks only.
    assert_eq!(
        seen["absent_shown"],
        json!([]),
        "b's task is not on a's page"
    );
    // fib(12) through the form, and the loop cancelled from its row.
    assert!(
        seen["fib_exports"]
            .as_array()
            .is_some_and(|x| x.iter().any(|s| s == "fib(i64) -> i64")),
        "{seen}"
    );
    assert_eq!(seen["fib_result"], "144");
    assert!(seen["fib_timeline"].as_u64() >= Some(3), "{seen}");
    assert_eq!(seen["loop_state"], "cancelled");
    assert_eq!(seen["cancelled_rows"], 1);
    // The header: a's three tasks (fib(10), fib(12), the loop), all ended within the minute.
    assert_eq!(seen["counts"]["succeeded"], 2, "{seen}");
    assert_eq!(seen["counts"]["cancelled"], 1, "{seen}");
    assert_eq!(seen["throughput"], "3 finished in the last minute");
    assert_eq!(seen["health"], "ready");
}

/// Holds (`?wait=`) until a tenant's task has succeeded, 10 s at most.
fn wait_finished_as(base: &str, id: &str, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = get(base, &format!("/v1/tasks/{id}?wait=5"), Some(token));
        if r.body["state"] == "succeeded" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "task {id}: {r:?}");
    }
}
