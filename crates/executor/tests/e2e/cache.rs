//! The compiled-module cache: a second run skips compilation; an entry that does not authenticate
//! under the key (corrupt, truncated, relabelled, patched with its checksum recomputed, changed
//! after it was stamped) is refused and rebuilt; a directory others can write is refused.

use crate::util::{Outcome, assert_failed, assert_ok, exec};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use wasm_exec_task::ErrorKind;

/// Offsets in a seal: magic (8), module digest (32), engine fingerprint (32), code length (8),
/// code MAC (32).
const MODULE_DIGEST: std::ops::Range<usize> = 8..40;
const MAC: std::ops::Range<usize> = 80..112;

/// A cache directory with its key kept in another directory, both removed after the test.
struct Cache {
    dir: tempfile::TempDir,
    key: tempfile::TempDir,
}

impl Cache {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("cache dir"),
            key: tempfile::tempdir().expect("key dir"),
        }
    }

    fn run(&self, wasm: &str, args: &str) -> Outcome {
        exec(wasm)
            .env("ARGS_JSON", args)
            .env("WASM_CACHE_DIR", self.dir.path())
            .env("WASM_CACHE_KEY_FILE", self.key.path().join("cache.key"))
            .run()
    }

    fn fib(&self) -> Outcome {
        self.run("host/wasm/fib.wasm", r#"{"entry":"fib","args":[12]}"#)
    }

    fn add(&self) -> Outcome {
        self.run("host/wasm/add.wasm", "")
    }

    /// The code files (`.cwasm`); each has its seal beside it ([`seal`]).
    fn entries(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for sub in std::fs::read_dir(self.dir.path()).expect("cache dir") {
            let sub = sub.expect("cache dir entry").path();
            for entry in std::fs::read_dir(sub).expect("engine dir") {
                let path = entry.expect("engine dir entry").path();
                if path.extension().is_some_and(|e| e == "cwasm") {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    }
}

/// The seal of a code file.
fn seal(entry: &Path) -> PathBuf {
    entry.with_extension("seal")
}

fn rebuilt(out: &Outcome, entry: &Path, good: &[u8]) {
    assert!(out.logs.contains("cache=\"miss\""), "{}", out.logs);
    assert!(
        out.logs.contains("MAC does not verify"),
        "the refusal is logged: {}",
        out.logs
    );
    assert_eq!(std::fs::read(entry).expect("entry"), good, "entry rebuilt");
}

#[test]
fn second_run_hits_the_cache() {
    let cache = Cache::new();
    let first = cache.fib();
    assert_ok(&first, json!(144));
    assert!(first.logs.contains("cache=\"miss\""), "{}", first.logs);
    assert_eq!(cache.entries().len(), 1);
    let second = cache.fib();
    assert_ok(&second, json!(144));
    assert!(second.logs.contains("cache=\"hit\""), "{}", second.logs);
    let key = std::fs::metadata(cache.key.path().join("cache.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "key made private");
}

#[test]
fn corrupt_entry_is_ignored_and_rebuilt() {
    let cache = Cache::new();
    assert_ok(&cache.fib(), json!(144));
    let entry = cache.entries().pop().unwrap();
    let good = std::fs::read(&entry).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x55;
    std::fs::write(&entry, &bad).unwrap();
    let out = cache.fib();
    assert_ok(&out, json!(144));
    rebuilt(&out, &entry, &good);

    std::fs::write(&entry, b"not a cache entry").unwrap();
    assert_ok(&cache.fib(), json!(144));
}

#[test]
fn patched_code_with_its_checksum_recomputed_is_refused() {
    // The forger rewrites code and recomputes what an unkeyed checksum would be.
    let cache = Cache::new();
    assert_ok(&cache.fib(), json!(144));
    let entry = cache.entries().pop().unwrap();
    let good = std::fs::read(&entry).unwrap();
    let mut forged = good.clone();
    let middle = forged.len() / 2;
    forged[middle] ^= 0x55;
    let mut forged_seal = std::fs::read(seal(&entry)).unwrap();
    forged_seal[MAC].copy_from_slice(&Sha256::digest(&forged));
    std::fs::write(&entry, &forged).unwrap();
    std::fs::write(seal(&entry), &forged_seal).unwrap();
    let out = cache.fib();
    assert_ok(&out, json!(144));
    rebuilt(&out, &entry, &good);
}

#[test]
fn entry_relabelled_for_another_module_is_refused() {
    // fib's compiled code under add's name, its seal relabelled with add's digest.
    let cache = Cache::new();
    assert_ok(&cache.fib(), json!(144));
    let fib_entry = cache.entries().pop().unwrap();
    assert_ok(&cache.add(), json!(12));
    let add_entry = cache
        .entries()
        .into_iter()
        .find(|p| *p != fib_entry)
        .unwrap();
    let add_good = std::fs::read(&add_entry).unwrap();
    let add_seal = std::fs::read(seal(&add_entry)).unwrap();
    let mut relabelled = std::fs::read(seal(&fib_entry)).unwrap();
    relabelled[MODULE_DIGEST].copy_from_slice(&add_seal[MODULE_DIGEST]);
    std::fs::copy(&fib_entry, &add_entry).unwrap();
    std::fs::write(seal(&add_entry), &relabelled).unwrap();
    let out = cache.add();
    assert_ok(&out, json!(12));
    rebuilt(&out, &add_entry, &add_good);
}

#[test]
fn entry_of_another_module_is_not_trusted() {
    let cache = Cache::new();
    assert_ok(&cache.fib(), json!(144));
    let fib_entry = cache.entries().pop().unwrap();
    assert_ok(&cache.add(), json!(12));
    let add_entry = cache
        .entries()
        .into_iter()
        .find(|p| *p != fib_entry)
        .unwrap();
    std::fs::copy(&fib_entry, &add_entry).unwrap();
    std::fs::copy(seal(&fib_entry), seal(&add_entry)).unwrap();
    let add = cache.add();
    assert_ok(&add, json!(12));
    assert!(add.logs.contains("another module"), "{}", add.logs);
}

/// Runs fib until its entry is stamped: once to store it, and once more after it has settled
/// (the cache's 2 s), which checks it in full and stamps it; the entry and its good bytes.
fn stamped(cache: &Cache) -> (PathBuf, Vec<u8>) {
    assert_ok(&cache.fib(), json!(144));
    let entry = cache.entries().pop().expect("an entry stored");
    let seal_len = || std::fs::metadata(seal(&entry)).expect("seal").len();
    let unstamped = seal_len();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = cache.fib();
    assert!(out.logs.contains("cache=\"hit\""), "{}", out.logs);
    assert!(seal_len() > unstamped, "stamped");
    let good = std::fs::read(&entry).expect("entry");
    (entry, good)
}

#[test]
fn stamped_entry_patched_in_place_is_refused_and_rebuilt() {
    use std::os::unix::fs::FileExt;
    let cache = Cache::new();
    let (entry, good) = stamped(&cache);
    // One byte patched in place (the same inode), its modification time put back.
    let times = std::fs::metadata(&entry).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    let middle = good.len() / 2;
    file.write_all_at(&[good[middle] ^ 0x55], middle as u64)
        .unwrap();
    file.set_modified(times).unwrap();
    drop(file);
    let out = cache.fib();
    assert_ok(&out, json!(144));
    rebuilt(&out, &entry, &good);
}

#[test]
fn stamped_entry_truncated_is_refused_before_it_is_mapped() {
    // A truncated file that were mapped would end the process with SIGBUS at the first touch
    // of a page past its end; it must be refused, not mapped.
    let cache = Cache::new();
    let (entry, good) = stamped(&cache);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    file.set_len(good.len() as u64 / 2).unwrap();
    drop(file);
    let out = cache.fib();
    assert_ok(&out, json!(144));
    assert!(out.logs.contains("cache=\"miss\""), "{}", out.logs);
    assert!(out.logs.contains("truncated or replaced"), "{}", out.logs);
    assert_eq!(std::fs::read(&entry).unwrap(), good, "entry rebuilt");
}

#[test]
fn cache_dir_writable_by_others_is_refused_with_the_fix() {
    let cache = Cache::new();
    std::fs::set_permissions(cache.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = cache.fib();
    let dir = cache.dir.path().display().to_string();
    assert_failed(
        &out,
        ErrorKind::Io,
        &[
            "WASM_CACHE_DIR",
            "writable by group or others",
            "chmod 700",
            &dir,
        ],
    );
    assert!(cache.entries().is_empty(), "nothing written there");
}

#[test]
fn key_file_inside_the_cache_dir_is_refused() {
    let cache = Cache::new();
    let out = exec("host/wasm/add.wasm")
        .env("WASM_CACHE_DIR", cache.dir.path())
        .env("WASM_CACHE_KEY_FILE", cache.dir.path().join("cache.key"))
        .run();
    assert_failed(&out, ErrorKind::BadInput, &["inside WASM_CACHE_DIR"]);
}
