//! The task's input document: `{"entry": "fib", "args": [12]}`, or a bare array taken as `args`.
//!
//! Other fields of an object are kept: a WASI command (`_start`) receives the whole document on
//! stdin, so it may carry anything the guest wants.

use serde_json::Value;

/// A parsed input document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInput {
    /// The entry function named by the document, if any.
    pub entry: Option<String>,
    /// The arguments, if the document gave any (`None` differs from `[]` for the `add` fallback).
    pub args: Option<Vec<Value>>,
    /// The document's exact text, handed to a WASI command on stdin (empty when there is none).
    pub text: String,
}

/// A malformed input document; the message names the problem and the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(String);

const SHAPE: &str = r#"expected {"entry": "<name>", "args": [...]} or a bare array of arguments"#;

impl TaskInput {
    /// Parses an input document. Blank text is an empty input (no entry, no args).
    pub fn parse(text: &str) -> Result<Self, InputError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| InputError(format!("input is not valid JSON ({e}); {SHAPE}")))?;
        let (entry, args) = match value {
            Value::Array(args) => (None, Some(args)),
            Value::Object(mut map) => {
                let entry = match map.remove("entry") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if !s.is_empty() => Some(s),
                    Some(other) => {
                        return Err(InputError(format!(
                            "input field \"entry\" must be a non-empty string, got {other}; {SHAPE}"
                        )));
                    }
                };
                let args = match map.remove("args") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(args)) => Some(args),
                    Some(other) => {
                        return Err(InputError(format!(
                            "input field \"args\" must be an array, got {other}; {SHAPE}"
                        )));
                    }
                };
                (entry, args)
            }
            Value::Null => (None, None),
            other => {
                return Err(InputError(format!(
                    "input must be a JSON object or array, got {other}; {SHAPE}"
                )));
            }
        };
        Ok(Self {
            entry,
            args,
            text: text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_gives_entry_and_args() {
        let input = TaskInput::parse(r#"{"entry":"fib","args":[12]}"#).unwrap();
        assert_eq!(input.entry.as_deref(), Some("fib"));
        assert_eq!(input.args, Some(vec![json!(12)]));
    }

    #[test]
    fn bare_array_is_args() {
        let input = TaskInput::parse("[13, 9, 2]").unwrap();
        assert_eq!(input.entry, None);
        assert_eq!(input.args, Some(vec![json!(13), json!(9), json!(2)]));
    }

    #[test]
    fn blank_is_empty_and_extra_fields_are_kept_in_text() {
        assert_eq!(TaskInput::parse("  ").unwrap(), TaskInput::default());
        let input = TaskInput::parse(r#"{"mode":"sum","args":[1]}"#).unwrap();
        assert!(input.text.contains("mode"));
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let err = TaskInput::parse(r#"{"entry":5}"#).unwrap_err().to_string();
        assert!(err.contains("\"entry\""), "{err}");
        let err = TaskInput::parse(r#"{"args":"12"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"args\" must be an array"), "{err}");
        let err = TaskInput::parse("42").unwrap_err().to_string();
        assert!(err.contains("object or array"), "{err}");
        let err = TaskInput::parse("{nope").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
