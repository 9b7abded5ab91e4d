//! The compiled-module cache: a second run skips compilation; a corrupt entry is rebuilt.

use crate::util::{assert_ok, exec};
use serde_json::json;
use std::path::{Path, PathBuf};

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for sub in std::fs::read_dir(dir).expect("cache dir") {
        let sub = sub.expect("cache dir entry").path();
        for entry in std::fs::read_dir(sub).expect("engine dir") {
            found.push(entry.expect("engine dir entry").path());
        }
    }
    found
}

fn run_fib(cache: &Path) -> crate::util::Outcome {
    exec("host/wasm/fib.wasm")
        .env("ARGS_JSON", r#"{"entry":"fib","args":[12]}"#)
        .env("WASM_CACHE_DIR", cache)
        .run()
}

#[test]
fn second_run_hits_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let first = run_fib(cache.path());
    assert_ok(&first, json!(144));
    assert!(first.stderr.contains("cache=\"miss\""), "{}", first.stderr);
    assert_eq!(entries(cache.path()).len(), 1);
    let second = run_fib(cache.path());
    assert_ok(&second, json!(144));
    assert!(second.stderr.contains("cache=\"hit\""), "{}", second.stderr);
}

#[test]
fn corrupt_entry_is_ignored_and_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    assert_ok(&run_fib(cache.path()), json!(144));
    let entry = entries(cache.path()).pop().unwrap();
    let good = std::fs::read(&entry).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x55;
    std::fs::write(&entry, &bad).unwrap();

    let out = run_fib(cache.path());
    assert_ok(&out, json!(144));
    assert!(out.stderr.contains("cache=\"miss\""), "{}", out.stderr);
    assert!(
        out.stderr.contains("checksum"),
        "the rejection is logged: {}",
        out.stderr
    );
    assert_eq!(std::fs::read(&entry).unwrap(), good, "entry rebuilt");

    std::fs::write(&entry, b"not a cache entry").unwrap();
    assert_ok(&run_fib(cache.path()), json!(144));
}

#[test]
fn entry_of_another_module_is_not_trusted() {
    let cache = tempfile::tempdir().unwrap();
    assert_ok(&run_fib(cache.path()), json!(144));
    let fib_entry = entries(cache.path()).pop().unwrap();
    let add = exec("host/wasm/add.wasm")
        .env("WASM_CACHE_DIR", cache.path())
        .run();
    assert_ok(&add, json!(12));
    let add_entry = entries(cache.path())
        .into_iter()
        .find(|p| *p != fib_entry)
        .unwrap();
    std::fs::copy(&fib_entry, &add_entry).unwrap();
    let add = exec("host/wasm/add.wasm")
        .env("WASM_CACHE_DIR", cache.path())
        .run();
    assert_ok(&add, json!(12));
    assert!(add.stderr.contains("another module"), "{}", add.stderr);
}
