//! The `wasm-exec` client CLI end to end, against the real coordinator binary: `submit --wait`
//! uploads the module and exits with the result kind's code, `list --state`, `get`, `cancel`,
//! `wait` and `events` print one JSON line per item when piped, and errors name the fix.

mod support;

use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{Service, command, repo};
use wasm_exec_task::ErrorKind;

/// `wasm-exec ARGS` against `base` (with `token`, if given), piped.
fn cli(base: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasm-exec"));
    cmd.env_clear().env("COORDINATOR_URL", base).args(args);
    if let Some(token) = token {
        cmd.env("COORDINATOR_TOKEN", token);
    }
    cmd.output().expect("run wasm-exec")
}

/// The output's stdout as JSON lines.
fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn spin_module(dir: &Path) -> String {
    let path = dir.join("spin.wat");
    std::fs::write(&path, r#"(module (func (export "spin") (loop br 0)))"#).expect("write");
    path.display().to_string()
}

#[test]
fn submit_wait_prints_one_json_line_and_exits_with_the_result_kinds_code() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let fib = repo("host/wasm/fib.wasm").display().to_string();
    let args = [
        "submit", "--wasm", &fib, "--entry", "fib", "--args", "[12]", "--wait",
    ];
    let out = cli(&svc.base, None, &args);
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one JSON line when piped");
    assert_eq!(lines[0]["result"]["result"], 144, "{}", lines[0]);

    let args = [
        "submit", "--wasm", &fib, "--entry", "fibb", "--args", "[12]", "--wait",
    ];
    let out = cli(&svc.base, None, &args);
    assert_eq!(
        out.status.code(),
        Some(ErrorKind::EntryNotFound.exit_code()),
        "{out:?}"
    );
    let failed = json_lines(&out)[0]["task_id"].clone();

    let listed = json_lines(&cli(&svc.base, None, &["list", "--state", "failed"]));
    let ids: Vec<&Value> = listed.iter().map(|t| &t["task_id"]).collect();
    assert_eq!(ids, [&failed]);
    let got = cli(&svc.base, None, &["get", failed.as_str().unwrap()]);
    assert_eq!(json_lines(&got)[0]["state"], "failed");
}

#[test]
fn cancel_and_wait_follow_a_running_task_to_its_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let spin = spin_module(dir.path());
    let args = [
        "submit", "--wasm", &spin, "--entry", "spin", "--id", "spinner",
    ];
    let out = cli(&svc.base, None, &args);
    assert!(out.status.success(), "{out:?}");
    let cancelled = cli(&svc.base, None, &["cancel", "spinner"]);
    assert_eq!(
        json_lines(&cancelled)[0]["state"],
        "cancelled",
        "{cancelled:?}"
    );
    let waited = cli(&svc.base, None, &["wait", "spinner"]);
    let code = ErrorKind::CancelledByRequest.exit_code();
    assert_eq!(waited.status.code(), Some(code), "{waited:?}");
}

#[test]
fn events_prints_each_change_as_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let mut events = Command::new(env!("CARGO_BIN_EXE_wasm-exec"))
        .env_clear()
        .env("COORDINATOR_URL", &svc.base)
        .args(["events", "--state", "succeeded"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("wasm-exec events");
    let stdout = events.stdout.take().expect("its stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // The stream's subscription is not observable from here: submit until an event arrives.
    let fib = repo("host/wasm/fib.wasm").display().to_string();
    let mut seen = None;
    for i in 0..50 {
        let id = format!("e{i}");
        let args = [
            "submit", "--wasm", &fib, "--entry", "fib", "--args", "[5]", "--id", &id,
        ];
        assert!(cli(&svc.base, None, &args).status.success());
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let event: Value = serde_json::from_str(&seen.expect("an event line")).unwrap();
    assert_eq!(event["state"], "succeeded", "{event}");
    assert!(
        event["task_id"].as_str().unwrap().starts_with('e'),
        "{event}"
    );
}

#[test]
fn errors_name_the_setting_to_fix() {
    let out = cli("http://127.0.0.1:1", None, &["list"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COORDINATOR_URL"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_API_TOKEN", "s3cret");
    let svc = Service::start(cmd);
    let out = cli(&svc.base, Some("wrong"), &["list"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COORDINATOR_TOKEN"), "{stderr}");
    let out = cli(&svc.base, Some("s3cret"), &["get", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no task \"nope\"") && stderr.contains("404"),
        "{stderr}"
    );
    let out = cli(
        &svc.base,
        Some("s3cret"),
        &["submit", "--wasm", "/nonexistent.wasm", "--entry", "f"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--wasm \"/nonexistent.wasm\""), "{stderr}");
}
