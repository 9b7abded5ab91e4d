//! The seed's three samples with the seed's inputs, and the shape of what is reported.

use crate::util::{assert_ok, exec, exec_to, repo};
use serde_json::json;
use wasm_exec_task::ResultEnvelope;

#[test]
fn add_fallback_uses_add_x_and_add_y() {
    let out = exec("host/wasm/add.wasm").run();
    assert_ok(&out, json!(12));
    assert_eq!(out.envelope.entry.as_deref(), Some("add"));
    assert_eq!(out.envelope.args, vec![json!(5), json!(7)]);
    let out = exec("host/wasm/add.wasm")
        .env("ADD_X", "40")
        .env("ADD_Y", "2")
        .run();
    assert_ok(&out, json!(42));
}

#[test]
fn fib_12_is_144_from_an_input_file() {
    let out = exec("host/wasm/fib.wasm")
        .env("INPUT_PATH", repo("testdata/input/fib.json"))
        .run();
    assert_ok(&out, json!(144));
}

#[test]
fn affine_13_9_2_is_35() {
    let out = exec("host/wasm/affine.wasm")
        .env("ARGS_JSON", r#"{"entry":"affine","args":[13,9,2]}"#)
        .run();
    assert_ok(&out, json!(35));
}

#[test]
fn json_output_file_holds_the_same_document_as_the_last_line() {
    let out = exec("host/wasm/fib.wasm")
        .env("ARGS_JSON", "[12]")
        .env("ENTRY", "fib")
        .run();
    let from_file: ResultEnvelope = serde_json::from_str(&out.file).expect("file is the document");
    assert_eq!(from_file, out.envelope);
    let sha = out.envelope.module_sha256.as_deref().unwrap();
    assert_eq!(sha.len(), 64);
    assert!(out.envelope.duration_ms >= 0.0);
    assert_eq!(out.envelope.fuel_consumed, None);
    assert!(
        out.logs.contains("task finished"),
        "the log has the run: {}",
        out.logs
    );
}

#[test]
fn text_output_file_is_a_report_ending_in_the_document() {
    let out = exec_to("host/wasm/fib.wasm", "result.txt")
        .env("ARGS_JSON", r#"{"entry":"fib","args":[12]}"#)
        .run();
    assert!(out.file.contains("status:        ok"), "{}", out.file);
    let last: ResultEnvelope = serde_json::from_str(out.file.lines().last().unwrap()).unwrap();
    assert_eq!(last, out.envelope);
}

#[test]
fn every_document_field_is_present() {
    let out = exec("host/wasm/fib.wasm")
        .env("ARGS_JSON", r#"{"entry":"fib","args":[12]}"#)
        .run();
    for field in [
        "ok",
        "entry",
        "args",
        "result",
        "stdout",
        "stderr",
        "truncated",
        "duration_ms",
        "fuel_consumed",
        "module_sha256",
    ] {
        assert!(
            out.line.get(field).is_some(),
            "missing {field}: {}",
            out.line
        );
    }
}
