//! Real toolchain output (testdata/wasm: a 4.4 MB Go reactor, a C reactor from zig cc, a 1.2 MB
//! Rust command; sources in guests/) compiled on every core gives the same code as compiled on
//! one, and runs to the same results with the same fuel counts as the serial build did.

use serde_json::json;
use std::path::Path;
use wasm_exec_runtime::{
    EngineOptions, EntryRequest, Interruption, RunLimits, RunRequest, Runtime,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/wasm")
            .join(name),
    )
    .expect("fixture")
}

/// The executor's engine (watchdog timeout) with fuel metering.
fn options() -> EngineOptions {
    EngineOptions {
        interruption: Interruption::External,
        fuel_metering: true,
        ..EngineOptions::default()
    }
}

#[test]
fn parallel_compilation_gives_the_same_code_as_serial() {
    for name in ["go_fib.wasm", "c_fib.wasm", "text_stats.wasm"] {
        let wasm = fixture(name);
        let code = |parallel: bool| {
            let mut config = options().config();
            config.parallel_compilation(parallel);
            wasmtime::Engine::new(&config)
                .expect("engine")
                .precompile_module(&wasm)
                .expect("compiles")
        };
        let (serial, parallel) = (code(false), code(true));
        assert!(
            serial == parallel,
            "{name}: {} bytes serial, {} parallel, not the same",
            serial.len(),
            parallel.len()
        );
    }
}

/// Golden results: each measured with the executor built before parallel compilation
/// (commit 1fb69283, `FUEL=100000000`), e.g. `executor --wasm-path testdata/wasm/go_fib.wasm
/// --args-json '{"entry":"fib","args":[12]}' --fuel 100000000`. Reactors' counts include
/// `_initialize` (the Go runtime's start-up is most of `fib`'s).
#[test]
fn real_guests_give_the_results_and_fuel_counts_of_the_serial_build() {
    let runtime = Runtime::new(options(), None).expect("runtime");
    let limits = RunLimits {
        fuel: Some(100_000_000),
        ..RunLimits::default()
    };
    let text = r#"{"text":"Grüße aus Köln und Zürich","pattern":"\\p{Lu}\\p{Ll}+"}"#;
    let cases = [
        ("go_fib.wasm", "fib", "", json!(144), "", 860_978),
        (
            "go_fib.wasm",
            "fib_json",
            "",
            json!(19),
            "{\"n\":12,\"fib\":144}\n",
            1_316_388,
        ),
        ("c_fib.wasm", "fib", "", json!(144), "", 129),
        (
            "c_fib.wasm",
            "fib_print",
            "",
            json!(14),
            "fib(12) = 144\n",
            2_987,
        ),
        (
            "text_stats.wasm",
            "_start",
            text,
            serde_json::Value::Null,
            "{\"longest\":\"Zürich\",\"matches\":3}\n",
            7_326_727,
        ),
    ];
    for (name, entry, stdin, result, stdout, fuel) in cases {
        let module = runtime.load(&fixture(name)).expect("compiles");
        let request = RunRequest {
            entry: EntryRequest {
                named: Some(entry.to_owned()),
                args: (entry != "_start").then(|| vec![json!(12)]),
                add_fallback: [json!(0), json!(0)],
            },
            stdin: stdin.as_bytes().to_vec(),
            limits: limits.clone(),
            cancel: Default::default(),
        };
        let out = runtime.run(&module, &request);
        assert!(out.ok, "{name} {entry}: {out:?}");
        assert_eq!(out.result, result, "{name} {entry}");
        assert_eq!(out.stdout, stdout, "{name} {entry}");
        assert_eq!(out.fuel_consumed, Some(fuel), "{name} {entry}: fuel");
    }
}
