//! Replays the committed fuzz corpus on stable: every file of `fuzz/corpus/<target>/` and of
//! `fuzz/regressions/<target>/` (inputs that once crashed) through its target's function, so a
//! property the campaign established keeps holding. A target without a corpus fails the test.

use std::path::{Path, PathBuf};
use wasm_exec_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_committed_corpus() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        assert!(
            !inputs(&dir).is_empty(),
            "{} is missing or empty: seed it and run the campaign (docs/FUZZING.md)",
            dir.display()
        );
    }
}

#[test]
fn every_corpus_and_regression_input_holds_its_properties() {
    for (name, run) in TARGETS {
        let mut replayed = 0;
        for sub in ["corpus", "regressions"] {
            for path in inputs(&fuzz_dir().join(sub).join(name)) {
                let data = std::fs::read(&path).expect("a readable input");
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "{name}: nothing replayed");
    }
}
