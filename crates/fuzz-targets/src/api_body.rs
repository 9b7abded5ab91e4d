//! `POST /v1/tasks` before the store: the declared content type
//! (`wasm_exec_coordinator::api::require_json`) and the body (`api::read_body`: integers past 64
//! bits, strict parsing with nothing after the object, the intake check).

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use serde_json::Value;
use wasm_exec_coordinator::api::{read_body, require_json};
use wasm_exec_task::IntakeRules;

/// The bytes up to the first newline are the `Content-Type` value, the rest the body. Checks: no
/// panic; a refusal is a 4xx, never a 5xx; an accepted body is one JSON document, its task holds
/// no control characters in its id or entry, and the task as persisted, sent again as a body,
/// is accepted as the same task.
pub fn api_body(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (content_type, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    if let Err(e) = require_json(&headers) {
        assert!(e.into_response().status().is_client_error());
    }
    let rules = IntakeRules::default();
    let (task, generated) = match read_body(body, &rules) {
        Ok(accepted) => (accepted.task, accepted.generated),
        Err(e) => {
            let status = e.into_response().status();
            assert!(status.is_client_error(), "a bad body answered {status}");
            return;
        }
    };
    assert!(
        serde_json::from_slice::<Value>(body).is_ok(),
        "one JSON document"
    );
    let spec = &task.spec;
    assert!(!spec.task_id.chars().any(char::is_control), "{spec:?}");
    let entry = spec.entry.as_deref().unwrap_or_default();
    assert!(!entry.chars().any(char::is_control), "{spec:?}");
    let resent = serde_json::to_vec(spec).expect("a spec serialises");
    let again = read_body(&resent, &rules).unwrap_or_else(|e| {
        panic!(
            "the persisted task {} is refused: {:?}",
            String::from_utf8_lossy(&resent),
            e.into_response()
        )
    });
    assert_eq!(again.task, task, "generated id: {generated}");
    assert!(!again.generated, "the persisted task has its id");
}
