//! The module shape check: modules built to blow up the compiler are refused as `bad_module`
//! before compiling, quickly, with a message naming the function, the measure and the maximum;
//! real toolchain output passes.

use std::fmt::Write;
use std::time::{Duration, Instant};
use wasm_exec_runtime::{EngineOptions, ModuleLimits, Runtime, RuntimeError};
use wasm_exec_task::ErrorKind;
use wasm_exec_test_peers::hostile::{looped_function, module};

fn runtime() -> Runtime {
    Runtime::new(EngineOptions::default(), None).expect("runtime")
}

fn refused(runtime: &Runtime, wat: &str) -> (String, Duration) {
    let started = Instant::now();
    let err = runtime.load(wat.as_bytes()).expect_err("refused");
    let elapsed = started.elapsed();
    assert!(matches!(err, RuntimeError::BadModule(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadModule);
    (err.to_string(), elapsed)
}

#[test]
fn thousands_of_locals_across_deep_nesting_are_refused_before_compiling() {
    // The attack review's module: 2,000 i64 locals and a loop of 20,000 nested blocks (21 s,
    // 1.4 GB); refused at depth 101, where the product first passes 200,000.
    let (msg, elapsed) = refused(&runtime(), &module(&[looped_function(2_000, 20_000)]));
    assert!(
        msg.contains("function 0: locals times nesting depth 202000, over the maximum of 200000"),
        "{msg}"
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn deep_nesting_alone_names_the_depth_and_its_maximum() {
    let (msg, _) = refused(&runtime(), &module(&[looped_function(0, 2_001)]));
    assert!(
        msg.contains("function 0: nesting depth 2001, over the maximum of 2000"),
        "{msg}"
    );
}

#[test]
fn too_many_locals_names_the_count_and_its_maximum() {
    let (msg, _) = refused(&runtime(), &module(&[looped_function(50_001, 0)]));
    assert!(
        msg.contains("function 0: locals 50001, over the maximum of 50000"),
        "{msg}"
    );
}

#[test]
fn too_many_exports_memories_or_tables_are_refused() {
    let mut wat = String::from("(module (func $f)");
    for i in 0..20_001 {
        let _ = write!(wat, " (export \"e{i}\" (func $f))");
    }
    wat.push(')');
    let (msg, _) = refused(&runtime(), &wat);
    assert!(
        msg.contains("20001 exports, over the maximum of 20000"),
        "{msg}"
    );

    let memories = format!("(module {})", "(memory 0) ".repeat(17));
    let (msg, _) = refused(&runtime(), &memories);
    assert!(msg.contains("17 memories, over the maximum of 16"), "{msg}");
    let tables = format!("(module {})", "(table 0 funcref) ".repeat(17));
    let (msg, _) = refused(&runtime(), &tables);
    assert!(msg.contains("17 tables, over the maximum of 16"), "{msg}");
}

#[test]
fn big_function_bodies_and_modules_are_refused() {
    let limits = ModuleLimits {
        max_body_bytes: 1_000,
        max_module_bytes: 100_000,
        ..ModuleLimits::default()
    };
    let runtime = runtime().with_module_limits(limits);
    let (msg, _) = refused(&runtime, &module(&[looped_function(1, 100)]));
    assert!(msg.contains("function 0: body bytes"), "{msg}");
    assert!(msg.contains("over the maximum of 1000"), "{msg}");
    let (msg, _) = refused(&runtime, &format!("(module){}", " ".repeat(199_992)));
    assert!(
        msg.contains("200000 bytes, over the maximum of 100000"),
        "{msg}"
    );
}

#[test]
fn many_functions_cannot_add_up_past_the_total() {
    let limits = ModuleLimits {
        max_locals_times_depth_total: 1_000,
        ..ModuleLimits::default()
    };
    let functions = [looped_function(10, 60), looped_function(10, 60)];
    let (msg, _) = refused(&runtime().with_module_limits(limits), &module(&functions));
    assert!(msg.contains("1220 in total (at function 1)"), "{msg}");
}

#[test]
fn a_function_at_the_limits_compiles_in_about_a_second() {
    // 100 locals across a loop and 1,999 blocks: the largest depth and product allowed.
    let runtime = runtime();
    let started = Instant::now();
    runtime
        .load(module(&[looped_function(100, 1_999)]).as_bytes())
        .expect("within the limits");
    let elapsed = started.elapsed();
    eprintln!("100 locals x 2,000 nested blocks in a loop compiled in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn real_toolchain_output_passes() {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/command.wasm"),
    )
    .expect("fixture");
    let shape = ModuleLimits::default().check(&bytes).expect("passes");
    assert!(shape.functions > 10, "{shape:?}");
}

/// The Go toolchain's output (testdata/wasm/go_fib.wasm, guests/go-fib: 4.4 MB, 2,473
/// functions) passes the default limits; real_guests.rs compiles and runs it.
#[test]
fn a_go_wasip1_module_passes() {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/go_fib.wasm"),
    )
    .expect("fixture");
    let shape = ModuleLimits::default().check(&bytes).expect("passes");
    assert!(shape.functions > 2_000, "{shape:?}");
}

#[test]
fn a_cached_module_is_checked_again_under_other_limits() {
    // A cache hit skips the shape check only for the limits the entry was checked under.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let wat = module(&[looped_function(10, 10), looped_function(10, 10)]);
    let loose = Runtime::new(EngineOptions::default(), Some(&cache)).expect("runtime");
    assert_eq!(
        loose.load(wat.as_bytes()).expect("compiles").cache.as_str(),
        "miss"
    );
    assert_eq!(
        loose.load(wat.as_bytes()).expect("cached").cache.as_str(),
        "hit"
    );
    let strict = Runtime::new(EngineOptions::default(), Some(&cache))
        .expect("runtime")
        .with_module_limits(ModuleLimits {
            max_functions: 1,
            ..ModuleLimits::default()
        });
    let (msg, _) = refused(&strict, &wat);
    assert!(msg.contains("functions"), "{msg}");
}
