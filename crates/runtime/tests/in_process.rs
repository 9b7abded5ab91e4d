//! The runtime in-process, as the coordinator's local backend uses it: one engine with epoch
//! interruption shared by many runs. Hostile guests must end with the right kind, within their
//! limits, and the host must go on serving the next task.

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use wasm_exec_runtime::{
    EngineOptions, EntryRequest, Interruption, LoadedModule, RunLimits, RunRequest, Runtime,
};
use wasm_exec_task::ErrorKind;

fn load(runtime: &Runtime, path: &str) -> LoadedModule {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path),
    )
    .expect("fixture");
    runtime.load(&bytes).expect("compiles")
}

fn request(entry: &str, args: serde_json::Value, limits: RunLimits) -> RunRequest {
    RunRequest {
        entry: EntryRequest {
            named: Some(entry.to_owned()),
            args: args.as_array().cloned(),
            add_fallback: [json!(5), json!(7)],
        },
        stdin: Vec::new(),
        limits,
        cancel: Default::default(),
    }
}

fn epoch_runtime(fuel_metering: bool) -> Runtime {
    let options = EngineOptions {
        interruption: Interruption::Epoch,
        fuel_metering,
        ..EngineOptions::default()
    };
    Runtime::new(options, None).expect("runtime")
}

#[test]
fn hostile_guests_fail_by_kind_and_the_host_keeps_serving() {
    let runtime = epoch_runtime(false);
    let hostile = load(&runtime, "testdata/wasm/hostile.wasm");
    let fib = load(&runtime, "host/wasm/fib.wasm");
    let limits = RunLimits {
        timeout: Duration::from_millis(300),
        max_memory_bytes: 32 << 20,
        ..RunLimits::default()
    };
    let cases = [
        ("spin", json!([]), ErrorKind::Timeout),
        ("membomb", json!([]), ErrorKind::OutOfMemory),
        ("trap", json!([]), ErrorKind::Trap),
        ("recurse", json!([0]), ErrorKind::Trap),
        ("divide", json!([1, 0]), ErrorKind::Trap),
    ];
    for round in 0..2 {
        for (entry, args, kind) in &cases {
            let started = Instant::now();
            let out = runtime.run(&hostile, &request(entry, args.clone(), limits.clone()));
            assert_eq!(out.kind(), Some(*kind), "round {round}, {entry}: {out:?}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{entry} took {:?}",
                started.elapsed()
            );
            let ok = runtime.run(&fib, &request("fib", json!([12]), limits.clone()));
            assert_eq!(
                ok.result,
                json!(144),
                "the next task still runs after {entry}"
            );
        }
    }
}

#[test]
fn epoch_deadline_stops_a_loop_near_its_limit() {
    let runtime = epoch_runtime(false);
    let hostile = load(&runtime, "testdata/wasm/hostile.wasm");
    let limits = RunLimits {
        timeout: Duration::from_millis(200),
        ..RunLimits::default()
    };
    let started = Instant::now();
    let out = runtime.run(&hostile, &request("spin", json!([]), limits));
    let elapsed = started.elapsed();
    assert_eq!(out.kind(), Some(ErrorKind::Timeout));
    assert!(
        elapsed >= Duration::from_millis(200),
        "stopped early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(700),
        "stopped late: {elapsed:?}"
    );
}

#[test]
fn fuel_is_metered_identically_on_every_run() {
    let runtime = epoch_runtime(true);
    let module = load(&runtime, "testdata/wat/busy_loop.wat");
    let limits = RunLimits {
        fuel: Some(10_000_000),
        ..RunLimits::default()
    };
    let runs: Vec<_> = (0..3)
        .map(|_| runtime.run(&module, &request("count", json!([5000]), limits.clone())))
        .collect();
    assert!(runs.iter().all(|r| r.ok));
    assert!(runs[0].fuel_consumed.is_some_and(|f| f > 5000));
    assert!(
        runs.iter()
            .all(|r| r.fuel_consumed == runs[0].fuel_consumed)
    );
    let starved = RunLimits {
        fuel: Some(100),
        ..RunLimits::default()
    };
    let out = runtime.run(&module, &request("count", json!([5000]), starved));
    assert_eq!(out.kind(), Some(ErrorKind::OutOfFuel));
}

/// Writes "hi" through WASI after a stretch of straight-line code that no fuel check covers.
const TALKER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi")
  (func (export "run") (result i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (i32.add (i32.add (i32.add (i32.const 1) (i32.const 2)) (i32.const 3)) (i32.const 4)))
    (drop (i32.add (i32.add (i32.add (i32.const 1) (i32.const 2)) (i32.const 3)) (i32.const 4)))
    (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#;

#[test]
fn a_guest_over_its_budget_never_reaches_the_host() {
    let runtime = epoch_runtime(true);
    let module = runtime.load(TALKER.as_bytes()).expect("compiles");
    let with = |fuel| RunLimits {
        fuel: Some(fuel),
        ..RunLimits::default()
    };
    let full = runtime.run(&module, &request("run", json!([]), with(1_000)));
    assert!(full.ok && full.stdout == "hi", "{full:?}");
    let need = full.fuel_consumed.expect("metered");
    for budget in [need / 2, need - 2, need - 1] {
        let out = runtime.run(&module, &request("run", json!([]), with(budget)));
        assert_eq!(out.kind(), Some(ErrorKind::OutOfFuel), "{budget}: {out:?}");
        assert_eq!(
            out.stdout, "",
            "FUEL={budget}: the write came after the budget ran out"
        );
        assert_eq!(out.fuel_consumed, Some(budget));
    }
    let exact = runtime.run(&module, &request("run", json!([]), with(need)));
    assert_eq!(
        (exact.stdout.as_str(), exact.fuel_consumed),
        ("hi", Some(need))
    );
}

#[test]
fn runs_share_nothing_between_stores() {
    let runtime = epoch_runtime(false);
    let module = load(&runtime, "testdata/wat/reactor.wat");
    for _ in 0..3 {
        let out = runtime.run(&module, &request("inits", json!([]), RunLimits::default()));
        assert_eq!(out.result, json!(1), "each run gets a fresh instance");
    }
}

#[test]
fn guest_randomness_and_clocks_are_deterministic() {
    let runtime = epoch_runtime(false);
    let module = load(&runtime, "testdata/wasm/command.wasm");
    let run = || {
        let mut req = request("_start", json!([]), RunLimits::default());
        req.stdin = br#"{"mode":"entropy"}"#.to_vec();
        runtime.run(&module, &req)
    };
    let (a, b) = (run(), run());
    assert!(a.ok, "{a:?}");
    assert_eq!(a.stdout, b.stdout, "same module, same randomness and time");
    assert!(a.stdout.contains("wall: Ok(946684800s)"), "{}", a.stdout);
}

#[test]
fn sleeps_advance_virtual_time_and_return_at_once() {
    let runtime = epoch_runtime(false);
    let module = load(&runtime, "testdata/wat/sleep.wat");
    let limits = RunLimits {
        timeout: Duration::from_secs(2),
        ..RunLimits::default()
    };
    let started = Instant::now();
    let out = runtime.run(&module, &request("sleep", json!([-1]), limits.clone()));
    assert!(out.ok, "{out:?}");
    assert_eq!(out.result, json!(-1), "the clock saturates at u64::MAX");
    let out = runtime.run(
        &module,
        &request("sleep", json!([60_000_000_000u64]), limits),
    );
    assert_eq!(out.result, json!(60_000_001_000u64), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn memories_and_tables_of_one_task_share_its_budget() {
    let runtime = epoch_runtime(false);
    let module = load(&runtime, "testdata/wat/many_memories.wat");
    let limits = RunLimits {
        max_memory_bytes: 8 << 20,
        ..RunLimits::default()
    };
    // Two memories of 5 MiB each under 8 MiB: the second one fails.
    let out = runtime.run(&module, &request("fill", json!([80]), limits.clone()));
    assert_eq!(out.kind(), Some(ErrorKind::OutOfMemory), "{out:?}");
    // Sixteen of 512 KiB fill the 8 MiB exactly.
    let out = runtime.run(&module, &request("fill", json!([8]), limits.clone()));
    assert_eq!(out.result, json!(16), "{out:?}");
    // Tables of 300,000 elements take 2.4 MB each: the fourth one fails.
    let out = runtime.run(&module, &request("tables", json!([300_000]), limits));
    assert_eq!(out.kind(), Some(ErrorKind::OutOfMemory), "{out:?}");
}

#[test]
fn text_that_is_not_wat_is_refused_without_quoting_it() {
    let runtime = epoch_runtime(false);
    for text in [
        "SECRET=hunter2\nHOME=/root\n",
        "(module (func $hunter2 (call $hunter3)))",
        "(module (func (i32.const 1) hunter2))",
    ] {
        let err = runtime.load(text.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadModule, "{err}");
        let message = err.to_string();
        assert!(message.contains("nor valid WAT text"), "{message}");
        assert!(
            !message.contains("hunter"),
            "the text was quoted: {message}"
        );
    }
    assert!(
        runtime.load(b"(module (func (export \"f\")))").is_ok(),
        "WAT text still loads"
    );
}

#[test]
fn a_cancelled_run_stops_with_its_own_kind_and_a_timeout_still_times_out() {
    let runtime = Runtime::new(EngineOptions::default(), None).unwrap();
    let module = runtime
        .load(br#"(module (func (export "spin") (loop br 0)))"#)
        .unwrap();
    let limits = RunLimits {
        timeout: Duration::from_secs(30),
        ..RunLimits::default()
    };
    let req = request("spin", json!([]), limits);
    let flag = req.cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        flag.cancel();
        Instant::now()
    });
    let result = runtime.run(&module, &req);
    let stopped = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert_eq!(
        result.kind(),
        Some(ErrorKind::CancelledByRequest),
        "{result:?}"
    );
    assert!(stopped.duration_since(cancelled_at) < Duration::from_secs(5));

    let limits = RunLimits {
        timeout: Duration::from_millis(100),
        ..RunLimits::default()
    };
    let result = runtime.run(&module, &request("spin", json!([]), limits));
    assert_eq!(result.kind(), Some(ErrorKind::Timeout), "{result:?}");
}
