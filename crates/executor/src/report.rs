//! Reporting a result: the output file, written atomically, the termination message (when asked
//! for and small enough), and the last line of stdout.
//!
//! [`Reporter`] makes sure exactly one result is reported per process, even when the main thread
//! and the watchdog race at the deadline: the first to report wins, the other never writes.

use crate::output::OutputGate;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasm_exec_task::{ErrorInfo, ErrorKind, ResultEnvelope};

/// Kubernetes keeps at most this many bytes of a container's termination message; a longer
/// document would be cut, so it is not written at all (the pod log still has it).
pub const TERMINATION_MESSAGE_MAX_BYTES: usize = 4096;

/// Reports the one result of this process.
#[derive(Debug)]
pub struct Reporter {
    output_path: PathBuf,
    /// TERMINATION_MESSAGE_PATH, when set.
    termination_message_path: Option<PathBuf>,
    /// True once a result was reported; held while reporting so no second report interleaves.
    reported: Mutex<bool>,
    /// The process's streams: the document is their last line.
    gate: Arc<OutputGate>,
}

impl Reporter {
    /// A reporter writing to `output_path`, and to `termination_message_path` if given, and
    /// printing the document last through `gate`.
    pub fn new(
        output_path: PathBuf,
        termination_message_path: Option<PathBuf>,
        gate: Arc<OutputGate>,
    ) -> Self {
        Self {
            output_path,
            termination_message_path,
            reported: Mutex::new(false),
            gate,
        }
    }

    /// Writes the output file, then the termination message, and prints the compact document as
    /// the last stdout line; returns the process exit code, or `None` if another thread reported
    /// first.
    ///
    /// If the file cannot be written the result becomes an `io` failure (the printed line says
    /// so), keeping the guest's result and output in the document. The termination message never
    /// changes the result. Everything that may log comes before the stdout line, and the gate
    /// drops whatever any thread logs after it: the line stays last (see [`OutputGate`]).
    pub fn report(&self, mut envelope: ResultEnvelope) -> Option<i32> {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if *reported {
            return None;
        }
        *reported = true;
        if let Err(e) = write_atomically(&self.output_path, &render(&self.output_path, &envelope)) {
            tracing::error!(error = format!("{e:#}"), "could not write the result file");
            envelope.ok = false;
            envelope.error = Some(ErrorInfo::new(
                ErrorKind::Io,
                format!("{e:#}; check that OUTPUT_PATH is writable"),
            ));
        }
        let line = envelope.to_line();
        if let Some(path) = &self.termination_message_path {
            write_termination_message(path, &line);
        }
        // If stdout is gone there is nobody left to tell; the file and exit code remain.
        self.gate.write_last_line(&line);
        Some(envelope.exit_code_for_process())
    }
}

/// Writes `line` to the termination message file in place (it is a file the kubelet mounted, or a
/// device: never replaced), if it fits in [`TERMINATION_MESSAGE_MAX_BYTES`]; otherwise writes
/// nothing there. Returns whether it wrote; a failure is logged as a warning and ignored.
pub fn write_termination_message(path: &Path, line: &str) -> bool {
    if line.len() > TERMINATION_MESSAGE_MAX_BYTES {
        tracing::info!(
            bytes = line.len(),
            limit = TERMINATION_MESSAGE_MAX_BYTES,
            "result too large for the termination message; it is in the log and the output file"
        );
        return false;
    }
    match write_in_place(path, line) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "could not write TERMINATION_MESSAGE_PATH; the result is unchanged"
            );
            false
        }
    }
}

/// Opens `path` for writing (creating a regular file if missing, truncating one that exists) and
/// writes `contents` into it: the inode stays, so bind mounts and devices keep working.
fn write_in_place(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
}

/// The output file's contents: the document for `*.json`, else a report ending in the document.
pub fn render(path: &Path, envelope: &ResultEnvelope) -> String {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let pretty = serde_json::to_string_pretty(envelope).unwrap_or_else(|_| envelope.to_line());
        return pretty + "\n";
    }
    let status = match &envelope.error {
        None => "ok".to_string(),
        Some(e) => format!("failed ({}): {}", e.kind, e.message),
    };
    let mut out = String::new();
    out.push_str("wasm-exec result\n");
    out.push_str(&format!("status:        {status}\n"));
    out.push_str(&format!(
        "entry:         {}\n",
        envelope.entry.as_deref().unwrap_or("-")
    ));
    out.push_str(&format!(
        "args:          {}\n",
        serde_json::Value::from(envelope.args.clone())
    ));
    out.push_str(&format!("result:        {}\n", envelope.result));
    out.push_str(&format!("duration:      {} ms\n", envelope.duration_ms));
    if let Some(fuel) = envelope.fuel_consumed {
        out.push_str(&format!("fuel consumed: {fuel}\n"));
    }
    for (name, text) in [("stdout", &envelope.stdout), ("stderr", &envelope.stderr)] {
        if !text.is_empty() {
            out.push_str(&format!("{name} ({} bytes):\n{text}\n", text.len()));
        }
    }
    if envelope.truncated {
        out.push_str("output was truncated at MAX_OUTPUT_BYTES\n");
    }
    out.push_str(&envelope.to_line());
    out.push('\n');
    out
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never half of one.
///
/// A path that exists and is not a regular file (`/dev/null`, `/dev/stdout`, a FIFO) is written
/// directly: renaming over it would replace the device with a file.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        return write_in_place(path, contents)
            .with_context(|| format!("writing OUTPUT_PATH \"{}\"", path.display()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating the directory of OUTPUT_PATH \"{}\"",
            path.display()
        )
    })?;
    let mut file = tempfile::NamedTempFile::new_in(dir).with_context(|| {
        format!(
            "creating a temporary file next to OUTPUT_PATH \"{}\"",
            path.display()
        )
    })?;
    // Readable by the pod's other containers and the node, like any result file (0644).
    file.write_all(contents.as_bytes())
        .and_then(|()| file.flush())
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .with_context(|| format!("writing OUTPUT_PATH \"{}\"", path.display()))?;
    file.persist(path)
        .with_context(|| format!("renaming into OUTPUT_PATH \"{}\"", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_ends_with_the_document() {
        let env = ResultEnvelope::failure(ErrorKind::Trap, "boom");
        let text = render(Path::new("/x/result.txt"), &env);
        assert!(text.contains("failed (trap): boom"));
        assert_eq!(text.lines().last().unwrap(), env.to_line());
        let json = render(Path::new("/x/result.json"), &env);
        let back: ResultEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn special_files_are_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        write_atomically(Path::new("/dev/null"), "x").unwrap();
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn termination_message_is_written_up_to_4096_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        let fits = "x".repeat(TERMINATION_MESSAGE_MAX_BYTES);
        assert!(write_termination_message(&path, &fits));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), fits);
        assert!(write_termination_message(&path, "short"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short");
        let too_big = "x".repeat(TERMINATION_MESSAGE_MAX_BYTES + 1);
        assert!(!write_termination_message(&path, &too_big));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short");
    }

    #[test]
    fn termination_message_failure_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/termination-log");
        assert!(!write_termination_message(&path, "{}"));
        assert!(!path.exists());
    }

    #[test]
    fn atomic_write_replaces_and_creates_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/result.json");
        write_atomically(&path, "one").unwrap();
        write_atomically(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
