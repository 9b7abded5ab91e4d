//! Logging: the `tracing` subscriber the binary installs (libraries only emit events).
//!
//! The text format escapes every control character in every field and message (a newline becomes
//! `\n`), so a value that came from outside (a task's `wasm_cid`, an error quoting it) cannot
//! forge log lines; the JSON format escapes them by being JSON.

use crate::config::LogFormat;
use std::fmt::{self, Write as _};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(debug_fn(write_field).delimited(" "))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// One field as the default text format writes it (`name=value`, the message bare), with its
/// control characters escaped.
fn write_field(
    writer: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn fmt::Debug,
) -> fmt::Result {
    let mut escaped = Escaped(writer);
    match field.name() {
        "message" => write!(escaped, "{value:?}"),
        name => write!(escaped, "{}={value:?}", name.trim_start_matches("r#")),
    }
}

/// Writes through to `W`, each control character replaced by its Rust escape (`\n`, `\u{1b}`).
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for part in s.split_inclusive(char::is_control) {
            match part.char_indices().last() {
                Some((at, c)) if c.is_control() => {
                    self.0.write_str(&part[..at])?;
                    write!(self.0, "{}", c.escape_default())?;
                }
                _ => self.0.write_str(part)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let mut out = String::new();
        write!(
            Escaped(&mut out),
            "fib.wasm\n2026 INFO forged\r\x1b[31m é\t"
        )
        .unwrap();
        assert_eq!(out, "fib.wasm\\n2026 INFO forged\\r\\u{1b}[31m é\\t");
    }
}
