//! `FUEL` is a hard limit on every compile path: a budget below what the guest needs ends in
//! `out_of_fuel` reporting the budget as used, one at or above it succeeds with the exact count.
//!
//! fib(40) (an unrolled loop with a long tail after its last loop header) once returned its
//! result with 100 of the 187 units it needs, because wasmtime checks fuel only at function
//! entries and loop headers.

use crate::util::{Exec, Outcome, assert_failed, assert_ok, exec};
use serde_json::{Value, json};
use wasm_exec_task::ErrorKind;

/// A guest, its input and its result.
struct Guest {
    wasm: &'static str,
    args: &'static str,
    result: Value,
}

fn guests() -> [Guest; 2] {
    [
        Guest {
            wasm: "host/wasm/fib.wasm",
            args: r#"{"entry":"fib","args":[40]}"#,
            result: json!(102_334_155),
        },
        Guest {
            wasm: "testdata/wat/busy_loop.wat",
            args: r#"{"entry":"count","args":[50]}"#,
            result: json!(0),
        },
    ]
}

/// One way the executor gets compiled code.
#[derive(Debug, Clone, Copy)]
enum Path<'a> {
    /// A child process compiles it (the default).
    Child,
    /// The executor compiles it itself (`COMPILE_MEMORY_MB=0`).
    InProcess,
    /// From the cache in this directory (one miss, then hits).
    Cache(&'a std::path::Path),
}

impl Path<'_> {
    fn apply(self, e: Exec) -> Exec {
        match self {
            Path::Child => e,
            Path::InProcess => e.env("COMPILE_MEMORY_MB", "0"),
            Path::Cache(dir) => e
                .env("WASM_CACHE_DIR", dir.join("cache"))
                .env("WASM_CACHE_KEY_FILE", dir.join("cache.key")),
        }
    }
}

fn run(guest: &Guest, path: Path<'_>, fuel: u64) -> Outcome {
    path.apply(exec(guest.wasm))
        .env("ARGS_JSON", guest.args)
        .env("FUEL", fuel.to_string())
        .run()
}

#[test]
fn a_budget_below_the_need_is_out_of_fuel_on_every_path() {
    let cache = tempfile::tempdir().expect("cache dir");
    for guest in guests() {
        let need = run(&guest, Path::Child, 1_000_000)
            .envelope
            .fuel_consumed
            .expect("fuel reported");
        for path in [Path::Child, Path::InProcess, Path::Cache(cache.path())] {
            for budget in [1, need / 2, need - 3, need - 2, need - 1] {
                let out = run(&guest, path, budget);
                let what = format!("{} on the {path:?} path, FUEL={budget}", guest.wasm);
                assert_failed(&out, ErrorKind::OutOfFuel, &["FUEL", &budget.to_string()]);
                assert_eq!(out.envelope.fuel_consumed, Some(budget), "{what}");
                assert_eq!(out.envelope.result, Value::Null, "{what}: no result");
            }
            for budget in [need, need + 1, 1_000_000] {
                let out = run(&guest, path, budget);
                assert_ok(&out, guest.result.clone());
                assert_eq!(
                    out.envelope.fuel_consumed,
                    Some(need),
                    "{path:?}, FUEL={budget}"
                );
            }
        }
    }
}

#[test]
fn fib_40_needs_exactly_187_units() {
    let fib = &guests()[0];
    let out = run(fib, Path::Child, 187);
    assert_ok(&out, fib.result.clone());
    assert_eq!(out.envelope.fuel_consumed, Some(187));
    let out = run(fib, Path::Child, 186);
    assert_failed(&out, ErrorKind::OutOfFuel, &["186"]);
}
