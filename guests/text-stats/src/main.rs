//! A WASI command of realistic size: its input document arrives on stdin as
//! `{"text": "...", "pattern": "..."}`; it compiles `pattern` as a Unicode regular expression,
//! and prints `{"matches": N, "longest": "..."}` (the count of matches in `text`, the longest
//! one). A bad pattern or input exits 2 with the reason on stderr.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("reading stdin: {e}");
        return ExitCode::from(2);
    }
    match stats(&input) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("{reason}");
            ExitCode::from(2)
        }
    }
}

/// The result line for one input document.
fn stats(input: &str) -> Result<serde_json::Value, String> {
    let doc: serde_json::Value = serde_json::from_str(input).map_err(|e| format!("input: {e}"))?;
    let field = |name: &str| {
        doc.get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("input: no string field \"{name}\""))
    };
    let pattern = regex::Regex::new(field("pattern")?).map_err(|e| format!("pattern: {e}"))?;
    let text = field("text")?;
    let (mut matches, mut longest) = (0u64, "");
    for found in pattern.find_iter(text) {
        matches += 1;
        if found.as_str().chars().count() > longest.chars().count() {
            longest = found.as_str();
        }
    }
    Ok(serde_json::json!({ "matches": matches, "longest": longest }))
}
