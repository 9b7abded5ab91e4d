//! Runs the built `executor` binary as a Kubernetes Job would: a clean environment, settings in
//! env vars, a fresh output directory; then reads back its last stdout line and output file.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use wasm_exec_task::{ErrorKind, ResultEnvelope};

/// A path under the repository root (fixtures live in `host/wasm` and `testdata`).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// One executor invocation being set up.
pub struct Exec {
    cmd: Command,
    /// Holds the output directory for the life of the test.
    pub _dir: tempfile::TempDir,
    /// Where the result file goes.
    pub output: PathBuf,
}

/// What one executor process did.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit code (`None` if killed by a signal: a crash).
    pub code: Option<i32>,
    /// The parsed last stdout line.
    pub envelope: ResultEnvelope,
    /// The raw last stdout line, as JSON.
    pub line: Value,
    /// The last stdout line, byte for byte.
    pub last_line: String,
    /// The output file's contents.
    pub file: String,
    /// Its stdout, whole.
    pub stdout: String,
    /// Its stderr, whole.
    pub stderr: String,
    /// The executor's own log lines, wherever LOG_STREAM sent them: stdout before the last
    /// line, then stderr.
    pub logs: String,
    /// Wall time of the whole process.
    pub elapsed: Duration,
}

impl Outcome {
    /// The error kind, panicking with the whole outcome if the run succeeded.
    pub fn kind(&self) -> ErrorKind {
        self.envelope
            .kind()
            .unwrap_or_else(|| panic!("expected a failure, got {self:#?}"))
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.envelope.error.as_ref().expect("an error").message
    }
}

/// An executor run of `wasm` (relative to the repo root), output to `result.json`.
pub fn exec(wasm: &str) -> Exec {
    exec_to(wasm, "result.json")
}

/// An executor run of `wasm` writing its result to `file_name` in a fresh directory.
pub fn exec_to(wasm: &str, file_name: &str) -> Exec {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join(file_name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_executor"));
    cmd.env_clear()
        .env("WASM_PATH", repo(wasm))
        .env("OUTPUT_PATH", &output)
        .env("SECRET_HOST_VALUE", "must-not-leak");
    Exec {
        cmd,
        _dir: dir,
        output,
    }
}

impl Exec {
    /// Runs the process in `dir` instead of the test's working directory.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Sends the process's stdout and stderr where given (both piped apart by default).
    pub fn stdio(mut self, stdout: Stdio, stderr: Stdio) -> Self {
        self.cmd.stdout(stdout).stderr(stderr);
        self
    }

    /// Runs the process to its end and parses what it reported.
    pub fn run(mut self) -> Outcome {
        let started = Instant::now();
        let out = self.cmd.output().expect("start executor");
        let file = std::fs::read_to_string(&self.output).unwrap_or_default();
        outcome(out, file, started.elapsed())
    }

    /// Runs the process to its end and also returns its peak resident set (VmHWM), in bytes.
    ///
    /// The peak is read from `/proc/<pid>/status` while the process is held alive after its run:
    /// OUTPUT_PATH and TERMINATION_MESSAGE_PATH are FIFOs, so the executor blocks opening the
    /// termination message until this side opens it, which happens only after VmHWM is read.
    pub fn run_measuring_peak_rss(mut self) -> (Outcome, u64) {
        let output = self._dir.path().join("result.json");
        let termination = self._dir.path().join("termination-log");
        for fifo in [&output, &termination] {
            let made = Command::new("mkfifo").arg(fifo).status().expect("mkfifo");
            assert!(made.success(), "mkfifo {}", fifo.display());
        }
        self.cmd
            .env("OUTPUT_PATH", &output)
            .env("TERMINATION_MESSAGE_PATH", &termination)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = self.cmd.spawn().expect("start executor");
        // Returns once the executor wrote its result (the run is over) and closed the FIFO; it is
        // then blocked on the termination message, so it is alive for the read below.
        let file = std::fs::read_to_string(&output).expect("read the result FIFO");
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .expect("the executor's /proc status");
        let peak_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {status}"));
        let _ = std::fs::read_to_string(&termination).expect("read the termination FIFO");
        let out = child.wait_with_output().expect("wait for the executor");
        (outcome(out, file, started.elapsed()), peak_kb * 1024)
    }
}

/// Parses what an executor process reported.
fn outcome(out: Output, file: String, elapsed: Duration) -> Outcome {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; code {:?}; stderr:\n{stderr}", out.status.code()));
    let line: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}\nstderr:\n{stderr}"));
    let envelope: ResultEnvelope = serde_json::from_value(line.clone()).expect("envelope shape");
    let before = stdout
        .trim_end_matches('\n')
        .strip_suffix(last)
        .unwrap_or("");
    let logs = format!("{before}{stderr}");
    Outcome {
        code: out.status.code(),
        envelope,
        line,
        last_line: last.to_owned(),
        file,
        stdout,
        stderr,
        logs,
        elapsed,
    }
}

/// Asserts a successful run with this result, and that the exit code and file agree.
pub fn assert_ok(outcome: &Outcome, result: Value) {
    assert!(outcome.envelope.ok, "expected ok, got {outcome:#?}");
    assert_eq!(outcome.envelope.result, result, "{outcome:#?}");
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
}

/// Asserts a failed run of this kind with the kind's exit code, and a message containing `words`.
pub fn assert_failed(outcome: &Outcome, kind: ErrorKind, words: &[&str]) {
    assert_eq!(outcome.kind(), kind, "{outcome:#?}");
    assert!(!outcome.envelope.ok);
    assert_eq!(outcome.code, Some(kind.exit_code()), "{outcome:#?}");
    for word in words {
        assert!(
            outcome.message().contains(word),
            "message lacks {word:?}: {}",
            outcome.message()
        );
    }
}
