//! Every input form and the entry-selection rules.

use crate::util::{assert_failed, assert_ok, exec, repo};
use serde_json::json;
use wasm_exec_task::ErrorKind;

#[test]
fn bare_array_takes_entry_from_env() {
    let out = exec("host/wasm/fib.wasm")
        .env("ENTRY", "fib")
        .env("ARGS_JSON", "[10]")
        .run();
    assert_ok(&out, json!(55));
}

#[test]
fn input_entry_wins_over_env_entry() {
    let out = exec("testdata/wat/run_and_add.wat")
        .env("ENTRY", "run")
        .env("ARGS_JSON", r#"{"entry":"add","args":[1,2]}"#)
        .run();
    assert_ok(&out, json!(3));
}

#[test]
fn default_run_is_preferred_over_the_add_fallback() {
    assert_ok(&exec("testdata/wat/run_and_add.wat").run(), json!(7));
}

#[test]
fn explicit_add_without_args_takes_add_x_and_add_y() {
    let out = exec("host/wasm/add.wasm")
        .env("ENTRY", "add")
        .env("ADD_X", "18446744073709551615")
        .env("ADD_Y", "2")
        .run();
    assert_ok(&out, json!(1));
}

#[test]
fn both_input_path_and_args_json_is_an_error_naming_both() {
    let out = exec("host/wasm/fib.wasm")
        .env("INPUT_PATH", repo("testdata/input/fib.json"))
        .env("ARGS_JSON", "[12]")
        .run();
    assert_failed(
        &out,
        ErrorKind::BadInput,
        &["INPUT_PATH", "ARGS_JSON", "not both"],
    );
}

#[test]
fn empty_args_json_counts_as_unset() {
    let out = exec("host/wasm/add.wasm").env("ARGS_JSON", "").run();
    assert_ok(&out, json!(12));
}

#[test]
fn malformed_input_is_bad_input() {
    let out = exec("host/wasm/fib.wasm")
        .env("ARGS_JSON", "{\"entry\": \"fib\", ")
        .run();
    assert_failed(&out, ErrorKind::BadInput, &["not valid JSON"]);
    let out = exec("host/wasm/fib.wasm")
        .env("ARGS_JSON", r#"{"entry":"fib","args":12}"#)
        .run();
    assert_failed(&out, ErrorKind::BadInput, &["\"args\" must be an array"]);
}

#[test]
fn missing_input_file_is_io_naming_the_path() {
    let out = exec("host/wasm/fib.wasm")
        .env("INPUT_PATH", "/nonexistent/input.json")
        .run();
    assert_failed(
        &out,
        ErrorKind::Io,
        &["INPUT_PATH", "/nonexistent/input.json"],
    );
}

#[test]
fn wrong_argument_count_names_the_signature() {
    let out = exec("host/wasm/affine.wasm")
        .env("ARGS_JSON", r#"{"entry":"affine","args":[1,2]}"#)
        .run();
    assert_failed(
        &out,
        ErrorKind::BadInput,
        &["affine(i64, i64, i64) -> i64", "takes 3", "got 2"],
    );
}

#[test]
fn initialize_runs_once_before_the_entry() {
    assert_ok(
        &exec("testdata/wat/reactor.wat").env("ENTRY", "get").run(),
        json!(42),
    );
    assert_ok(
        &exec("testdata/wat/reactor.wat").env("ENTRY", "inits").run(),
        json!(1),
    );
}

#[test]
fn start_command_reads_the_input_document_on_stdin() {
    let out = exec("testdata/wasm/command.wasm")
        .env("ARGS_JSON", r#"{"mode":"sum","args":[1,2,39]}"#)
        .run();
    assert_ok(&out, json!(null));
    assert_eq!(out.envelope.stdout, "sum=42\n");
    assert_eq!(out.envelope.entry.as_deref(), Some("_start"));
    assert_eq!(out.envelope.exit_code, Some(0));
}

#[test]
fn command_exit_status_is_reported() {
    let out = exec("testdata/wasm/command.wasm")
        .env("ARGS_JSON", r#"{"mode":"exit","code":3}"#)
        .run();
    assert_failed(&out, ErrorKind::Trap, &["status 3"]);
    assert_eq!(out.envelope.exit_code, Some(3));
}
