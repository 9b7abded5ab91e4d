//! What the CLI prints: on a terminal, aligned tables and a live status line (on stderr, so
//! that stdout holds only the answer); piped or with `--json`, one JSON document per line.

use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// A task: a two-column table of its main fields, or its JSON line.
pub fn task(out: &mut impl Write, task: &Value, table: bool) -> anyhow::Result<()> {
    if !table {
        writeln!(out, "{task}")?;
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let result = &task["result"];
    let rows = [
        ("task_id", text(&task["task_id"])),
        ("state", text(&task["state"])),
        ("tenant", text(&task["tenant"])),
        ("attempts", text(&task["attempts"])),
        ("wasm_cid", text(&task["task"]["wasm_cid"])),
        ("result", text(&result["result"])),
        ("kind", text(&result["error"]["kind"])),
        ("message", text(&result["error"]["message"])),
        ("duration_ms", text(&result["duration_ms"])),
        ("result_hash", text(&task["result_hash"])),
        ("callback", text(&task["callback"]["state"])),
    ];
    for (name, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        writeln!(out, "{name:<12} {value}")?;
    }
    Ok(())
}

/// Tasks: a table with one row each (id, state, attempts, kind, result), or JSON lines.
pub fn list(out: &mut impl Write, tasks: &[Value], table: bool) -> anyhow::Result<()> {
    if !table {
        for task in tasks {
            writeln!(out, "{task}")?;
        }
        return Ok(());
    }
    let rows: Vec<[String; 5]> = tasks
        .iter()
        .map(|t| {
            let result = &t["result"];
            [
                t["task_id"].as_str().unwrap_or_default().to_owned(),
                t["state"].as_str().unwrap_or_default().to_owned(),
                t["attempts"].to_string(),
                result["error"]["kind"].as_str().unwrap_or("").to_owned(),
                if result["ok"] == Value::Bool(true) {
                    result["result"].to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    aligned(out, &["ID", "STATE", "ATTEMPTS", "KIND", "RESULT"], &rows)
}

/// One event: a row (time, id, state, attempts) or its JSON line.
pub fn event(out: &mut impl Write, event: &Value, table: bool) -> anyhow::Result<()> {
    if table {
        let row = [
            event["at_ms"].to_string(),
            event["task_id"].as_str().unwrap_or_default().to_owned(),
            event["state"].as_str().unwrap_or_default().to_owned(),
            event["attempts"].to_string(),
        ];
        writeln!(
            out,
            "{}  {:<36}  {:<11}  {}",
            row[0], row[1], row[2], row[3]
        )?;
    } else {
        writeln!(out, "{event}")?;
    }
    out.flush()?;
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell.
fn aligned<const N: usize>(
    out: &mut impl Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> anyhow::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The live status line of `--wait` on a terminal: the state and why it waits, rewritten in
/// place on stderr; nothing when not on a terminal.
pub struct StatusLine {
    live: bool,
    last: String,
}

impl StatusLine {
    /// A status line, drawn only if `live`.
    pub fn new(live: bool) -> Self {
        Self {
            live,
            last: String::new(),
        }
    }

    /// Shows the task's state (and why it waits), if it changed.
    pub fn show(&mut self, task: &Value, elapsed: Duration) {
        if !self.live {
            return;
        }
        let state = task["state"].as_str().unwrap_or_default();
        let why = match task["waiting"]["reason"].as_str() {
            Some("queued") => format!(" (queued behind {})", task["waiting"]["ahead"]),
            Some(reason) => format!(" ({})", reason.replace('_', " ")),
            None => String::new(),
        };
        let text = format!(
            "{}: {state}{why}",
            task["task_id"].as_str().unwrap_or_default()
        );
        if text != self.last {
            eprint!("\r\x1b[2K{text}  {:.1} s", elapsed.as_secs_f64());
            self.last = text;
        }
    }

    /// Ends the line.
    pub fn done(&mut self) {
        if self.live && !self.last.is_empty() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_on_a_terminal_is_aligned_under_its_header() {
        let tasks = [
            json!({"task_id": "a", "state": "succeeded", "attempts": 1, "result": {"ok": true, "result": 144}}),
            json!({"task_id": "longer-id", "state": "failed", "attempts": 2,
                   "result": {"ok": false, "error": {"kind": "entry_not_found"}}}),
        ];
        let mut out = Vec::new();
        list(&mut out, &tasks, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID         STATE      ATTEMPTS  KIND             RESULT"
        );
        assert_eq!(
            lines[1],
            "a          succeeded  1                          144"
        );
        assert_eq!(lines[2], "longer-id  failed     2         entry_not_found");
        let mut out = Vec::new();
        list(&mut out, &tasks, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count(),
            2,
            "one JSON line each"
        );
    }
}
