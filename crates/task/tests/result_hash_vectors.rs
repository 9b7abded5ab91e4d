//! The committed result_hash vectors recomputed by an implementation apart from ours:
//! scripts/check-result-hash, written from docs/RESULT_HASH.md (Python, pycryptodome's Keccak).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn an_independent_implementation_recomputes_the_vectors() {
    let python = repo("peers/hash/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-peers",
        python.display()
    );
    let out = Command::new(&python)
        .arg(repo("scripts/check-result-hash"))
        .arg(repo("testdata/result_hash/vectors.json"))
        .output()
        .expect("run scripts/check-result-hash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12 of 12 vectors match"), "{stdout}");
}

#[test]
fn the_independent_check_fails_on_a_wrong_vector() {
    let python = repo("peers/hash/.venv/bin/python");
    let text = std::fs::read_to_string(repo("testdata/result_hash/vectors.json")).expect("vectors");
    // One digit of fib_minimal's result (144 -> 145): its committed encoding no longer fits.
    let tampered = text.replacen(r#""result":144"#, r#""result":145"#, 1);
    assert_ne!(tampered, text);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vectors.json");
    std::fs::write(&path, tampered).expect("write vectors");
    let out = Command::new(&python)
        .arg(repo("scripts/check-result-hash"))
        .arg(&path)
        .output()
        .expect("run scripts/check-result-hash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("fib_minimal: encoding differs"), "{stdout}");
}
