//! Where the executor's own log lines go (LOG_STREAM), and that the result document is always
//! the last line of everything the process writes: a container runtime reads stdout and stderr
//! apart and may interleave them, so under two pipes the logs share stdout, ahead of the document.

use crate::util::{assert_failed, assert_ok, exec};
use serde_json::json;
use std::process::Stdio;
use wasm_exec_task::ErrorKind;

#[test]
fn two_pipes_put_the_logs_on_stdout_ahead_of_the_document() {
    let out = exec("host/wasm/fib.wasm")
        .env("ENTRY", "fib")
        .env("ARGS_JSON", "[12]")
        .run();
    assert_ok(&out, json!(144));
    assert_eq!(
        out.stderr, "",
        "nothing on stderr, which a runtime could put last"
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() > 1,
        "the log lines precede the document: {lines:?}"
    );
    assert!(out.logs.contains("task finished"), "{}", out.logs);
    assert!(out.stdout.ends_with(&format!("{}\n", out.last_line)));
}

#[test]
fn log_stream_stderr_keeps_stdout_to_the_document_alone() {
    let out = exec("host/wasm/fib.wasm")
        .env("ENTRY", "fib")
        .env("ARGS_JSON", "[12]")
        .env("LOG_STREAM", "stderr")
        .run();
    assert_ok(&out, json!(144));
    assert_eq!(out.stdout, format!("{}\n", out.last_line));
    assert!(out.stderr.contains("task finished"), "{}", out.stderr);
}

#[test]
fn auto_keeps_stderr_when_it_is_not_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let out = exec("host/wasm/add.wasm")
        .stdio(Stdio::piped(), Stdio::from(file))
        .run();
    assert_ok(&out, json!(12));
    assert_eq!(out.stdout, format!("{}\n", out.last_line));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("task finished"), "{logged}");
}

#[test]
fn stdout_alone_holds_logs_and_document_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let out = exec("host/wasm/add.wasm")
        .env("LOG_STREAM", "stdout")
        .stdio(Stdio::piped(), Stdio::from(file))
        .run();
    assert_ok(&out, json!(12));
    assert!(out.logs.contains("task finished"), "{}", out.logs);
    assert!(out.stdout.lines().count() > 1);
}

#[test]
fn a_bad_log_stream_is_refused_with_the_choices() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .env_clear()
        .env("LOG_STREAM", "both")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auto") && err.contains("stdout") && err.contains("stderr"),
        "{err}"
    );
}

#[test]
fn the_document_stays_last_at_the_watchdog_deadline_with_every_log_on() {
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "spin")
        .env("TIMEOUT_SEC", "1")
        .env("RUST_LOG", "trace")
        .run();
    assert_failed(&out, ErrorKind::Timeout, &["TIMEOUT_SEC"]);
    assert_eq!(out.stderr, "");
    assert!(out.stdout.ends_with(&format!("{}\n", out.last_line)));
    assert!(out.logs.contains("time limit reached"), "{}", out.logs);
}
