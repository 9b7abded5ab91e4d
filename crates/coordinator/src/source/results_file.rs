//! An append-only results file (`COORDINATOR_RESULTS_FILE`): where the placeholder source writes
//! each result back, one JSON line `{"task_id", "result"}` per task.
//!
//! The sink is idempotent: the ids already in the file are read at open, and a result for one of
//! them is acknowledged without writing again. That is what turns the scheduler's at-least-once
//! report (a crash between writing back and recording it means one more report after restart)
//! into exactly one line per task. Each line is flushed to disk before the report is acknowledged.

use super::SourceError;
use serde_json::json;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasm_exec_task::ResultEnvelope;

/// The open results file and the ids it holds.
#[derive(Debug)]
pub struct ResultsFile {
    path: PathBuf,
    state: Mutex<(File, HashSet<String>)>,
}

impl ResultsFile {
    /// Opens (or creates) the file and reads the ids already written.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let fail = |e: std::io::Error| {
            SourceError(format!(
                "opening COORDINATOR_RESULTS_FILE \"{}\": {e}",
                path.display()
            ))
        };
        let mut written = HashSet::new();
        if path.exists() {
            for line in BufReader::new(File::open(path).map_err(fail)?).lines() {
                let line = line.map_err(fail)?;
                // A torn last line (crash mid-write) has no complete id: that task is written again.
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(id) = entry["task_id"].as_str()
                {
                    written.insert(id.to_owned());
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((file, written)),
        })
    }

    /// Appends the result unless the task is already in the file; durable when it returns.
    pub fn write(&self, task_id: &str, result: &ResultEnvelope) -> Result<(), SourceError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (file, written) = &mut *state;
        if written.contains(task_id) {
            return Ok(());
        }
        let mut line = json!({"task_id": task_id, "result": result}).to_string();
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| {
                SourceError(format!(
                    "writing COORDINATOR_RESULTS_FILE \"{}\": {e}",
                    self.path.display()
                ))
            })?;
        written.insert(task_id.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_written_once_even_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let result = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Trap, "x");
        let sink = ResultsFile::open(&path).unwrap();
        sink.write("a", &result).unwrap();
        sink.write("a", &result).unwrap();
        drop(sink);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"task_id\":\"torn")
            .unwrap();
        let sink = ResultsFile::open(&path).unwrap();
        sink.write("a", &result).unwrap();
        sink.write("b", &result).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"task_id\":\"a\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"task_id\":\"b\"").count(), 1, "{text}");
    }
}
