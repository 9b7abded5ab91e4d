//! The seed's placeholder source: the sample tasks add / fib / affine, or the tasks of a JSON file
//! (`COORDINATOR_TASKS_FILE`). Results written back are kept in memory and logged.
//!
//! The samples name their modules by the real CIDs of the committed `host/wasm/*.wasm` files
//! (CIDv1, raw leaves: what `ipfs add --cid-version 1 --raw-leaves` prints), so the same tasks
//! run unchanged against the local mirror or a real IPFS node.

use super::results_file::ResultsFile;
use super::{Delivery, Polled, SourceError, TaskSource};
use async_trait::async_trait;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use wasm_exec_task::{IntakeRules, Object, ResultEnvelope, TaskSpec};

/// CID of `host/wasm/add.wasm`.
pub const ADD_CID: &str = "bafkreic4y3temla33obbacyznk4penucufbdtaq5mcfju3jljlgm2lvhbi";
/// CID of `host/wasm/fib.wasm`.
pub const FIB_CID: &str = "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je";
/// CID of `host/wasm/affine.wasm`.
pub const AFFINE_CID: &str = "bafkreih3zqdpzwgscygcphpnxxmbabqpqncebxwbnzqwy2wplcbvwhj5ty";

/// The seed's sample tasks, in the seed's order, with the seed's inputs.
pub fn samples() -> Vec<TaskSpec> {
    vec![
        TaskSpec::new("add", ADD_CID, serde_json::Value::Null),
        TaskSpec::new("fib", FIB_CID, json!({"entry": "fib", "args": [12]})),
        TaskSpec::new(
            "affine",
            AFFINE_CID,
            json!({"entry": "affine", "args": [13, 9, 2]}),
        ),
    ]
}

/// Hands out a fixed list of tasks once and keeps the results written back.
#[derive(Debug)]
pub struct PlaceholderSource {
    pending: Mutex<Vec<TaskSpec>>,
    results: Mutex<BTreeMap<String, ResultEnvelope>>,
    /// Where results are also written durably, if configured.
    sink: Option<ResultsFile>,
}

impl PlaceholderSource {
    /// A source of the given tasks.
    pub fn new(tasks: Vec<TaskSpec>) -> Self {
        Self {
            pending: Mutex::new(tasks),
            results: Mutex::default(),
            sink: None,
        }
    }

    /// Also writes every result to `sink` (exactly one line per task; see [`ResultsFile`]).
    pub fn with_results_file(mut self, sink: ResultsFile) -> Self {
        self.sink = Some(sink);
        self
    }

    /// A source of the tasks in a JSON file: an array of `{"task_id", "wasm_cid", "entry"?,
    /// "input"?, "limits"?}`. Every task must pass the intake check under `rules` and ids must be
    /// unique (an id names one task): the first that does not is refused with its index and
    /// field, so a bad file fails the start rather than its tasks.
    pub fn from_file(path: &Path, rules: &IntakeRules) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SourceError(format!(
                "reading COORDINATOR_TASKS_FILE \"{}\": {e}",
                path.display()
            ))
        })?;
        let tasks: Vec<Object<TaskSpec>> = serde_json::from_str(&text).map_err(|e| {
            SourceError(format!(
                "COORDINATOR_TASKS_FILE \"{}\" is not a JSON array of tasks ({e}); each task is {{\"task_id\", \"wasm_cid\", \"entry\"?, \"input\"?, \"limits\"?}}",
                path.display()
            ))
        })?;
        let tasks: Vec<TaskSpec> = tasks.into_iter().map(|Object(task)| task).collect();
        let mut seen = std::collections::HashSet::new();
        for (index, task) in tasks.iter().enumerate() {
            if let Err(e) = task.check(rules) {
                return Err(SourceError(format!(
                    "COORDINATOR_TASKS_FILE \"{}\": task {index} (\"{}\") is refused: {e}",
                    path.display(),
                    task.task_id.escape_debug()
                )));
            }
            if !seen.insert(task.task_id.as_str()) {
                return Err(SourceError(format!(
                    "COORDINATOR_TASKS_FILE \"{}\" has task_id \"{}\" twice; ids must be unique",
                    path.display(),
                    task.task_id
                )));
            }
        }
        Ok(Self::new(tasks))
    }

    /// The results written back so far, by task id.
    pub fn results(&self) -> BTreeMap<String, ResultEnvelope> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl TaskSource for PlaceholderSource {
    async fn poll(&self) -> Result<Polled, SourceError> {
        Ok(Polled::tasks(std::mem::take(
            &mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()),
        )))
    }

    async fn report(
        &self,
        task: &TaskSpec,
        result: &ResultEnvelope,
    ) -> Result<Delivery, SourceError> {
        let task_id = task.task_id.as_str();
        if let Some(sink) = &self.sink {
            sink.write(task_id, result)?;
        }
        tracing::info!(task_id, ok = result.ok, result = %result.result, "result written back to the placeholder source");
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id.to_owned(), result.clone());
        Ok(Delivery::Accepted)
    }

    fn name(&self) -> &'static str {
        "placeholder"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_exec_ipfs::file_cids;

    #[test]
    fn sample_cids_are_the_real_cids_of_the_committed_modules() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/wasm");
        for (task, file) in samples()
            .iter()
            .zip(["add.wasm", "fib.wasm", "affine.wasm"])
        {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            assert_eq!(
                task.wasm_cid,
                file_cids(&bytes).v1.to_string(),
                "{file} changed: update its CID in placeholder.rs"
            );
        }
    }

    #[test]
    fn tasks_file_reads_tasks_and_their_limits_as_objects_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.json");
        for text in [
            r#"[["a", "add.wasm"]]"#,
            r#"[{"task_id":"a","wasm_cid":"add.wasm","limits":[null, 64]}]"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = PlaceholderSource::from_file(&path, &IntakeRules::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("expected an object"), "{text}: {err}");
        }
    }

    #[test]
    fn tasks_file_with_duplicate_ids_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.json");
        std::fs::write(
            &path,
            r#"[{"task_id":"a","wasm_cid":"x"},{"task_id":"a","wasm_cid":"y"}]"#,
        )
        .unwrap();
        let err = PlaceholderSource::from_file(&path, &IntakeRules::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"a\" twice"), "{err}");
    }

    #[tokio::test]
    async fn yields_its_tasks_once_and_keeps_results() {
        let source = PlaceholderSource::new(samples());
        assert_eq!(source.poll().await.unwrap().tasks.len(), 3);
        assert!(source.poll().await.unwrap().tasks.is_empty());
        let result = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Trap, "x");
        let fib = &samples()[1];
        source.report(fib, &result).await.unwrap();
        assert_eq!(source.results()["fib"], result);
    }
}
