//! Hostile guests: each ends with the right kind, within its limit, and the executor stays in
//! control (a clean exit code, never a crash by signal).

use crate::util::{assert_failed, assert_ok, exec};
use std::time::Duration;
use wasm_exec_task::ErrorKind;

#[test]
fn infinite_loop_times_out_within_the_limit_plus_one_second() {
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "spin")
        .env("TIMEOUT_SEC", "1")
        .run();
    assert_failed(&out, ErrorKind::Timeout, &["TIMEOUT_SEC"]);
    assert!(
        out.elapsed < Duration::from_secs(2),
        "took {:?}",
        out.elapsed
    );
    assert_eq!(out.envelope.entry.as_deref(), Some("spin"));
    let file: serde_json::Value = serde_json::from_str(&out.file).expect("timeout result written");
    assert_eq!(file["error"]["kind"], "timeout");
}

#[test]
fn infinite_loop_times_out_under_epoch_enforcement_too() {
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "spin")
        .env("TIMEOUT_SEC", "0.5")
        .env("TIMEOUT_ENFORCEMENT", "epoch")
        .run();
    assert_failed(&out, ErrorKind::Timeout, &[]);
    assert!(
        out.elapsed < Duration::from_millis(1500),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn looping_start_function_times_out() {
    let out = exec("testdata/wat/start_loop.wat")
        .env("TIMEOUT_SEC", "0.5")
        .run();
    assert_failed(&out, ErrorKind::Timeout, &[]);
}

#[test]
fn memory_bomb_is_out_of_memory() {
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "membomb")
        .env("MAX_MEMORY_MB", "64")
        .run();
    assert_failed(&out, ErrorKind::OutOfMemory, &["MAX_MEMORY_MB", "67108864"]);
}

#[test]
fn huge_initial_memory_is_refused_at_instantiation() {
    let out = exec("testdata/wat/huge_memory.wat").run();
    assert_failed(&out, ErrorKind::OutOfMemory, &["4294967296"]);
}

#[test]
fn single_huge_grow_is_out_of_memory() {
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "grow")
        .env("ARGS_JSON", "[60000]")
        .run();
    assert_failed(&out, ErrorKind::OutOfMemory, &[]);
}

#[test]
fn table_bomb_is_out_of_memory() {
    let out = exec("testdata/wat/table_bomb.wat").run();
    assert_failed(&out, ErrorKind::OutOfMemory, &["table"]);
}

#[test]
fn deep_recursion_is_a_trap_not_a_crash() {
    let out = exec("testdata/wat/deep_recursion.wat")
        .env("ENTRY", "down")
        .env("ARGS_JSON", "[0]")
        .run();
    assert_failed(
        &out,
        ErrorKind::Trap,
        &["call stack exhausted", "MAX_WASM_STACK_KB"],
    );
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "recurse")
        .env("ARGS_JSON", "[0]")
        .run();
    assert_failed(&out, ErrorKind::Trap, &[]);
}

#[test]
fn traps_are_reported_by_kind() {
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ENTRY", "trap")
        .run();
    assert_failed(&out, ErrorKind::Trap, &["unreachable"]);
    let out = exec("testdata/wasm/hostile.wasm")
        .env("ARGS_JSON", r#"{"entry":"divide","args":[1,0]}"#)
        .run();
    assert_failed(&out, ErrorKind::Trap, &[]);
    assert!(
        out.envelope.stderr.contains("divide by zero"),
        "guest stderr kept: {:?}",
        out.envelope.stderr
    );
}

#[test]
fn stdout_flood_is_truncated_at_max_output_bytes() {
    let out = exec("testdata/wasm/command.wasm")
        .env("ARGS_JSON", r#"{"mode":"flood","bytes":50000000}"#)
        .env("MAX_OUTPUT_BYTES", "4096")
        .run();
    assert_ok(&out, serde_json::json!(null));
    assert!(out.envelope.truncated);
    assert_eq!(out.envelope.stdout.len(), 4096);
    assert_eq!(out.envelope.stderr.len(), 4096);
    assert!(
        out.file.len() < 20_000,
        "result file stays small: {}",
        out.file.len()
    );
}

#[test]
fn guest_sees_no_host_files_env_or_network() {
    let out = exec("testdata/wasm/command.wasm")
        .env("ARGS_JSON", r#"{"mode":"snoop"}"#)
        .run();
    assert_ok(&out, serde_json::json!(null));
    let seen = &out.envelope.stdout;
    assert!(seen.contains("env: []"), "{seen}");
    assert!(!seen.contains("must-not-leak"), "{seen}");
    assert!(seen.contains("args: [\"module.wasm\"]"), "{seen}");
    for line in seen.lines().filter(|l| {
        l.starts_with("read ")
            || l.starts_with("list ")
            || l.starts_with("create")
            || l.starts_with("tcp")
    }) {
        assert!(line.contains("Err("), "guest reached the host: {line}");
    }
    assert!(!std::path::Path::new("/tmp/wasm-exec-escape").exists());
}

#[test]
fn deep_recursion_traps_even_with_a_small_main_stack() {
    // With RLIMIT_STACK below what the Wasm stack needs, the guest must run on its own thread.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -s 1024 && exec \"$0\"")
        .arg(env!("CARGO_BIN_EXE_executor"))
        .env_clear()
        .env(
            "WASM_PATH",
            crate::util::repo("testdata/wat/deep_recursion.wat"),
        )
        .env("ARGS_JSON", r#"{"entry":"down","args":[0]}"#)
        .env("OUTPUT_PATH", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(ErrorKind::Trap.exit_code()),
        "{out:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("call stack exhausted"), "{stdout}");
}

#[test]
fn many_memories_share_one_budget_and_peak_rss_stays_near_it() {
    // 16 memories, each grown by 30 MiB and written: with a budget per memory this held 480 MiB.
    const LIMIT_MB: u64 = 32;
    let (out, peak) = exec("testdata/wat/many_memories.wat")
        .env("MAX_MEMORY_MB", LIMIT_MB.to_string())
        .env("ARGS_JSON", r#"{"entry":"fill","args":[480]}"#)
        .run_measuring_peak_rss();
    assert_failed(
        &out,
        ErrorKind::OutOfMemory,
        &["linear memory", "memories and tables together", "33554432"],
    );
    // The executor itself (engine, compiler, logs) takes some tens of MiB besides the guest.
    let margin = 48 << 20;
    assert!(
        peak < (LIMIT_MB << 20) + margin,
        "peak RSS {} MiB for a {LIMIT_MB} MiB budget",
        peak >> 20
    );
    eprintln!(
        "peak RSS: {} MiB under MAX_MEMORY_MB={LIMIT_MB}",
        peak >> 20
    );
}

#[test]
fn many_tables_share_the_memory_budget() {
    // 16 tables of 1,000,000 elements (8 MB each) under a 32 MiB budget: the fifth one fails.
    let out = exec("testdata/wat/many_memories.wat")
        .env("MAX_MEMORY_MB", "32")
        .env("ARGS_JSON", r#"{"entry":"tables","args":[1000000]}"#)
        .run();
    assert_failed(&out, ErrorKind::OutOfMemory, &["table", "33554432"]);
}

#[test]
fn sleeping_for_ever_returns_at_once_on_virtual_time() {
    let out = exec("testdata/wat/sleep.wat")
        .env("ARGS_JSON", r#"{"entry":"sleep","args":[-1]}"#)
        .env("TIMEOUT_SEC", "5")
        .run();
    // The clock jumped to u64::MAX (rendered signed) and stays there.
    assert_ok(&out, serde_json::json!(-1));
    assert!(
        out.elapsed < Duration::from_secs(2),
        "took {:?}",
        out.elapsed
    );
    let out = exec("testdata/wat/sleep.wat")
        .env("ARGS_JSON", r#"{"entry":"sleep","args":[3000000000]}"#)
        .env("TIMEOUT_SEC", "1")
        .run();
    // Three virtual seconds plus the one microsecond the reading itself takes.
    assert_ok(&out, serde_json::json!(3_000_001_000u64));
}

#[test]
fn control_character_flood_keeps_the_document_within_twice_max_output_bytes() {
    // 1 MiB of byte 0x01 on stdout and on stderr: raw-byte truncation made a 12.5 MB document.
    const MAX: usize = 1 << 20;
    let out = exec("testdata/wat/control_flood.wat")
        .env("ARGS_JSON", "[1024]")
        .env("MAX_OUTPUT_BYTES", MAX.to_string())
        .run();
    assert_ok(&out, serde_json::json!(null));
    assert!(out.envelope.truncated);
    let kept = out.envelope.stdout.chars().count();
    assert_eq!(kept, MAX / 6, "as many characters as fit as \\u0001");
    let line = out.last_line.len();
    let file = out.file.len();
    eprintln!("document: {line} bytes on stdout, {file} bytes in the file");
    assert!(line <= 2 * MAX + 1024, "stdout line is {line} bytes");
    assert!(file <= 2 * MAX + 1024, "result file is {file} bytes");
}

#[test]
fn entry_not_found_lists_a_few_exports_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("exports.wat");
    let exports: String = (0..20_000)
        .map(|i| format!(" (export \"{}{i}\" (func $f))", "x".repeat(200)))
        .collect();
    std::fs::write(&wat, format!("(module (func $f){exports})")).unwrap();
    let out = exec(wat.to_str().unwrap()).env("ENTRY", "missing").run();
    assert_failed(&out, ErrorKind::EntryNotFound, &["\"missing\"", " more"]);
    let bytes = out.message().len();
    assert!(bytes <= 4096, "message is {bytes} bytes");
    assert!(!out.message().contains("message cut"), "{}", out.message());
}

/// `functions` of the costliest functions the shape check allows, as binary Wasm in `dir`.
fn slow_to_compile(dir: &std::path::Path, functions: usize) -> std::path::PathBuf {
    let path = dir.join("slow.wasm");
    let wat = wasm_exec_test_peers::hostile::slow_to_compile(functions);
    std::fs::write(&path, wat::parse_str(wat).expect("hostile module")).expect("hostile module");
    path
}

#[test]
fn a_minute_of_compiling_stops_at_the_time_limit_outside_the_executor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = slow_to_compile(dir.path(), 60);
    let (out, peak) = exec(wasm.to_str().expect("a UTF-8 path"))
        .env("TIMEOUT_SEC", "1")
        .run_measuring_peak_rss();
    assert_failed(&out, ErrorKind::Timeout, &["time limit"]);
    eprintln!(
        "a minute of compiling under TIMEOUT_SEC=1: {:?}; executor peak RSS {} MiB",
        out.elapsed,
        peak >> 20
    );
    // The limit plus 0.5 s to kill the compiler and report.
    assert!(
        out.elapsed < Duration::from_millis(1_500),
        "took {:?}",
        out.elapsed
    );
    // The compile runs in a child process; the executor itself stays small.
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn a_compile_needing_more_than_its_allowance_is_out_of_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = slow_to_compile(dir.path(), 4);
    let out = exec(wasm.to_str().expect("a UTF-8 path"))
        .env("COMPILE_MEMORY_MB", "96")
        .env("TIMEOUT_SEC", "60")
        .run();
    assert_failed(
        &out,
        ErrorKind::OutOfMemory,
        &["96 MiB", "COMPILE_MEMORY_MB"],
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    // The same module compiles in the default allowance.
    let out = exec(wasm.to_str().expect("a UTF-8 path"))
        .env("TIMEOUT_SEC", "60")
        .env("ARGS_JSON", r#"{"args":[0]}"#)
        .run();
    // Each of the 1,999 blocks adds one to a local; `run` returns their sum.
    assert_ok(&out, serde_json::json!(1999));
}
