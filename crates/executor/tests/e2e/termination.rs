//! TERMINATION_MESSAGE_PATH: the compact document, byte for byte, when it fits in 4096 bytes;
//! nothing when it does not or when the setting is off; never a change of result or exit code.

use crate::util::{assert_failed, assert_ok, exec, repo};
use serde_json::json;
use wasm_exec_task::ErrorKind;

#[test]
fn small_result_is_the_termination_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("termination-log");
    let out = exec("host/wasm/fib.wasm")
        .env("INPUT_PATH", repo("testdata/input/fib.json"))
        .env("TERMINATION_MESSAGE_PATH", &path)
        .run();
    assert_ok(&out, json!(144));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), out.last_line);
}

#[test]
fn failed_result_is_the_termination_message_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("termination-log");
    // Longer than the new document: what is left of it must go.
    std::fs::write(&path, "stale ".repeat(1000)).unwrap();
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "trap")
        .env("TERMINATION_MESSAGE_PATH", &path)
        .run();
    assert_failed(&out, ErrorKind::Trap, &["unreachable"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), out.last_line);
}

#[test]
fn result_over_4096_bytes_writes_nothing_there() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("termination-log");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("never-created");
    for path in [&empty, &missing] {
        let out = exec("testdata/wasm/command.wasm")
            .env("ARGS_JSON", r#"{"mode":"flood","bytes":3000}"#)
            .env("TERMINATION_MESSAGE_PATH", path)
            .run();
        assert_ok(&out, json!(null));
        assert!(out.last_line.len() > 4096, "{}", out.last_line.len());
        assert!(out.logs.contains("too large"), "{}", out.logs);
    }
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
    assert!(!missing.exists());
}

#[test]
fn unset_or_empty_writes_no_termination_message() {
    for value in [None, Some("")] {
        let cwd = tempfile::tempdir().unwrap();
        let mut run = exec("host/wasm/add.wasm").current_dir(cwd.path());
        if let Some(value) = value {
            run = run.env("TERMINATION_MESSAGE_PATH", value);
        }
        let out = run.run();
        assert_ok(&out, json!(12));
        assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
        assert!(!out.logs.contains("TERMINATION"), "{}", out.logs);
    }
}

#[test]
fn unwritable_termination_message_is_a_warning_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir/termination-log");
    let out = exec("host/wasm/add.wasm")
        .env("TERMINATION_MESSAGE_PATH", &path)
        .run();
    assert_ok(&out, json!(12));
    assert!(
        out.logs.contains("WARN") && out.logs.contains("TERMINATION_MESSAGE_PATH"),
        "{}",
        out.logs
    );
    assert!(!path.exists());
}

#[test]
fn timeout_reported_by_the_watchdog_is_the_termination_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("termination-log");
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "spin")
        .env("TIMEOUT_SEC", "0.3")
        .env("TERMINATION_MESSAGE_PATH", &path)
        .run();
    assert_failed(&out, ErrorKind::Timeout, &[]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), out.last_line);
}
