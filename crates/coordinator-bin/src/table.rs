//! The `--once` summary: one row per task (task, entry, state, result, time).

use std::fmt::Write;
use wasm_exec_coordinator::scheduler::Outcome;

/// Longest result or error shown in a cell; the full document is in the logs and the state.
const CELL: usize = 60;

/// Renders the outcomes as an aligned text table.
pub fn render(outcomes: &[Outcome]) -> String {
    let rows: Vec<[String; 5]> = outcomes
        .iter()
        .map(|o| {
            let mut state = match &o.result.error {
                None => "succeeded".to_string(),
                Some(e) => format!("failed ({})", e.kind),
            };
            if o.earlier {
                state.push_str(", earlier run");
            }
            let result = match &o.result.error {
                None => o.result.result.to_string(),
                Some(e) => e.message.clone(),
            };
            [
                o.task.task_id.clone(),
                o.result.entry.clone().unwrap_or_else(|| "-".into()),
                state,
                shorten(&result),
                if o.earlier {
                    "-".to_string()
                } else {
                    format!("{:.1} ms", o.elapsed.as_secs_f64() * 1e3)
                },
            ]
        })
        .collect();
    let header = ["TASK", "ENTRY", "STATE", "RESULT", "TIME"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn shorten(text: &str) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= CELL {
        return one_line;
    }
    let cut: String = one_line.chars().take(CELL - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wasm_exec_task::{ErrorKind, ResultEnvelope, TaskSpec};

    #[test]
    fn rows_show_result_or_error_kind() {
        let mut ok = ResultEnvelope::failure(ErrorKind::Io, "");
        ok.ok = true;
        ok.error = None;
        ok.entry = Some("fib".into());
        ok.result = serde_json::json!(144);
        let failed = ResultEnvelope::failure(ErrorKind::Integrity, "bytes do not match");
        let outcomes = [
            Outcome {
                task: TaskSpec::new("fib", "x", serde_json::Value::Null),
                result: ok,
                elapsed: Duration::from_millis(2),
                earlier: false,
            },
            Outcome {
                task: TaskSpec::new("bad", "y", serde_json::Value::Null),
                result: failed,
                elapsed: Duration::ZERO,
                earlier: true,
            },
        ];
        let table = render(&outcomes);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TASK"));
        assert!(
            lines[1].contains("fib") && lines[1].contains("succeeded") && lines[1].contains("144")
        );
        assert!(
            lines[2].contains("failed (integrity), earlier run")
                && lines[2].contains("bytes do not match")
        );
    }
}
