//! Blocking HTTP calls for tests, with statuses as data (a 4xx or 5xx is a [`Reply`], not an
//! error) and bodies parsed as JSON where they are JSON.

use serde_json::Value;
use std::time::Duration;

/// An HTTP response: status and JSON (or text as a JSON string).
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body parsed as JSON, or the raw text as a string.
    pub body: Value,
}

/// Every call's bound, so that a server that never answers fails the test instead of hanging it.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
        .into()
}

fn reply(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

/// `GET base+path`, with a bearer token if given.
pub fn get(base: &str, path: &str, token: Option<&str>) -> Reply {
    let mut req = agent().get(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    reply(req.call())
}

/// `GET base+path` as status and raw text (for bytes that must not be re-encoded).
pub fn get_text(base: &str, path: &str) -> (u16, String) {
    let mut resp = agent()
        .get(format!("{base}{path}"))
        .call()
        .expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// `POST base+path` with a body declared as `content_type` (`None`: no Content-Type at all).
pub fn post_as(base: &str, path: &str, body: &str, content_type: Option<&str>) -> Reply {
    let mut req = agent().post(format!("{base}{path}"));
    if let Some(content_type) = content_type {
        req = req.header("Content-Type", content_type);
    }
    reply(req.send(body))
}

/// `POST base+path` with a body, with a bearer token if given.
pub fn post(base: &str, path: &str, body: &str, token: Option<&str>) -> Reply {
    let mut req = agent()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json");
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    reply(req.send(body))
}

/// `POST base+path` with a JSON body, bounded by `timeout`: a connection refused, reset or timed
/// out is an `Err` with its text (what a client retries after), not a panic.
pub fn try_post(base: &str, path: &str, body: &str, timeout: Duration) -> Result<Reply, String> {
    let sent = bounded_agent(timeout)
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body);
    try_reply(sent)
}

/// `GET base+path` bounded by `timeout`, an unreachable server being an `Err` (not a panic).
pub fn try_get(base: &str, path: &str, timeout: Duration) -> Result<Reply, String> {
    try_reply(bounded_agent(timeout).get(format!("{base}{path}")).call())
}

/// An agent whose every call ends within `timeout`, statuses being data.
fn bounded_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The reply of a call that may have failed, its failure as text.
fn try_reply(sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, String> {
    let mut resp = sent.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, body })
}
