//! Every error kind, each with its exit code and a message that names the problem and the fix.

use crate::util::{assert_failed, exec};
use wasm_exec_task::ErrorKind;

#[test]
fn missing_entry_lists_exports() {
    let out = exec("host/wasm/fib.wasm").env("ENTRY", "fibb").run();
    assert_failed(
        &out,
        ErrorKind::EntryNotFound,
        &["\"fibb\"", "fib(i64) -> i64", "ENTRY"],
    );
}

#[test]
fn module_without_any_entry_is_entry_not_found() {
    let out = exec("host/wasm/fib.wasm").run();
    assert_failed(
        &out,
        ErrorKind::EntryNotFound,
        &["run, add or _start", "fib(i64) -> i64"],
    );
}

#[test]
fn garbage_module_is_bad_module() {
    let out = exec("testdata/wat/not_a_module.txt").run();
    assert_failed(&out, ErrorKind::BadModule, &["neither a Wasm binary"]);
    assert!(out.envelope.module_sha256.is_some());
}

#[test]
fn unknown_import_is_bad_module() {
    let out = exec("testdata/wat/unknown_import.wat").run();
    assert_failed(&out, ErrorKind::BadModule, &["launch_missiles"]);
}

#[test]
fn missing_module_is_io_naming_wasm_path() {
    let out = exec("testdata/nonexistent.wasm").run();
    assert_failed(&out, ErrorKind::Io, &["WASM_PATH", "nonexistent.wasm"]);
}

#[test]
fn unwritable_output_is_io_but_still_printed() {
    let out = exec("host/wasm/add.wasm")
        .env("OUTPUT_PATH", "/proc/wasm-exec/result.json")
        .run();
    assert_failed(&out, ErrorKind::Io, &["OUTPUT_PATH"]);
    assert_eq!(
        out.envelope.result,
        serde_json::json!(12),
        "the guest's result is kept"
    );
}

#[test]
fn out_of_fuel_and_fuel_is_deterministic() {
    let out = exec("testdata/wat/busy_loop.wat")
        .env("ENTRY", "count")
        .env("ARGS_JSON", "[100000]")
        .env("FUEL", "1000")
        .run();
    assert_failed(&out, ErrorKind::OutOfFuel, &["FUEL", "1000"]);
    let run = || {
        exec("testdata/wat/busy_loop.wat")
            .env("ENTRY", "count")
            .env("ARGS_JSON", "[1000]")
            .env("FUEL", "1000000")
            .run()
    };
    let (a, b) = (run(), run());
    assert!(a.envelope.ok && b.envelope.ok);
    let fuel = a.envelope.fuel_consumed.expect("fuel reported");
    assert!(
        fuel > 1000,
        "a loop of 1000 iterations costs more than 1000 units: {fuel}"
    );
    assert_eq!(a.envelope.fuel_consumed, b.envelope.fuel_consumed);
}

#[test]
fn invalid_setting_is_bad_input() {
    let out = exec("host/wasm/add.wasm").env("TIMEOUT_SEC", "-1").run();
    assert_failed(&out, ErrorKind::BadInput, &["TIMEOUT_SEC"]);
}

#[test]
fn unparsable_flag_value_exits_2_with_usage() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_executor"))
        .env_clear()
        .env("MAX_MEMORY_MB", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MAX_MEMORY_MB")
            || String::from_utf8_lossy(&out.stderr).contains("max-memory-mb")
    );
}

#[test]
fn endless_module_file_is_read_only_up_to_the_size_limit() {
    // /dev/zero never ends: reading it whole would exhaust memory before any check.
    let out = exec("/dev/zero").run();
    assert_failed(
        &out,
        ErrorKind::BadModule,
        &["67108865 bytes, over the maximum of 67108864"],
    );
}
