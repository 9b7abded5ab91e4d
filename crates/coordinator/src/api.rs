//! The HTTP API (always on): submit tasks, read them back with their results, probes, metrics.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | POST | `/v1/tasks` | submit `{"task_id"?, "wasm_cid", "entry"?, "input"?, "limits"?}` |
//! | GET | `/v1/tasks/{id}` | the task, its state and, once finished, its result |
//! | GET | `/v1/tasks/{id}/result` | the result document alone, as one compact JSON line: the bytes whose keccak-256 the chain source writes on chain |
//! | GET | `/v1/tasks?state=&after=&limit=` | a page of tasks ordered by id |
//! | GET | `/healthz`, `/readyz` | probes (never need the token) |
//! | GET | `/metrics` | Prometheus text |
//!
//! A submission is persisted before it is answered (201), so an accepted task is never lost; a
//! second submission with the same `task_id` and body answers 200 with the existing task and is
//! not run again; the same id with another body is a 409. Errors are JSON naming the field.

use crate::metrics::Metrics;
use crate::state::{StateStore, TaskRecord, TaskState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use wasm_exec_task::{CheckedTask, IntakeRules, TaskLimits, TaskSpec};

/// Largest page of `GET /v1/tasks`.
pub const MAX_PAGE: usize = 1000;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Where tasks are persisted and read back.
    pub state: Arc<dyn StateStore>,
    /// Hands accepted tasks to the scheduler (bounded: [`crate::scheduler::INBOX_CAPACITY`]);
    /// `None` when nothing would run them (a `--once` run), so submissions are refused.
    pub submit: Option<mpsc::Sender<CheckedTask>>,
    /// The intake check's limit defaults and maxima.
    pub rules: Arc<IntakeRules>,
    /// Bearer token every request but the probes must carry, if set.
    pub token: Option<Arc<str>>,
    /// The metrics rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The router with every route, the body size cap (`max_body` bytes; 413 beyond) and the token
/// check.
pub fn router(api: Api, max_body: usize) -> Router {
    let protected = Router::new()
        .route("/v1/tasks", get(list_tasks).post(submit_task))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/result", get(get_result))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            max_body,
            reject_announced_oversize,
        ))
        .with_state(api)
}

/// Answers 413 at once to a request whose `Content-Length` is over the cap, before any of its
/// body is read (a body without a length is still cut at the cap as it is read).
async fn reject_announced_oversize(
    State(max_body): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_body as u64) {
        return body_too_large().into_response();
    }
    next.run(request).await
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        "request body too large; the limit is COORDINATOR_MAX_BODY_KB",
    )
}

/// An API error: status, the field at fault (if one), and a message saying what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
    /// Seconds for a `Retry-After` header, if the client should come back.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status,
            field: field.map(str::to_owned),
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn bad(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(field), message)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal error; see the coordinator's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "field": self.field, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 7235), so `bearer` and `BEARER` work too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

async fn require_token(State(api): State<Api>, request: Request, next: Next) -> Response {
    let Some(token) = &api.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            Some("authorization"),
            "missing or wrong bearer token; send `Authorization: Bearer <COORDINATOR_API_TOKEN>`",
        )
        .into_response()
    }
}

/// Ready when the state store reads and the task source works (a failing source is named).
async fn readyz(State(api): State<Api>) -> Response {
    if let Err(e) = api.state.counts() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response();
    }
    if let Some(failure) = api.state.write_failure() {
        let since_s = crate::state::now_ms().saturating_sub(failure.since_ms) / 1000;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: state writes fail (for {since_s} s): {}\n",
                failure.error
            ),
        )
            .into_response();
    }
    match api.metrics.source_problem() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the task source fails: {problem}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    let text = api
        .metrics
        .render(api.state.as_ref())
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The body of `POST /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    task_id: Option<String>,
    wasm_cid: String,
    entry: Option<String>,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    limits: TaskLimits,
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
struct TaskView {
    task_id: String,
    #[serde(flatten)]
    record: TaskRecord,
}

impl From<TaskRecord> for TaskView {
    fn from(record: TaskRecord) -> Self {
        Self {
            task_id: record.task.task_id.clone(),
            record,
        }
    }
}

async fn submit_task(
    State(api): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large()
        } else {
            ApiError::new(e.status(), None, e.body_text())
        }
    })?;
    let Some(submit) = &api.submit else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "this coordinator runs with --once: it runs its source's tasks and exits, and takes \
             no submissions; start it without --once to submit tasks",
        ));
    };
    refuse_when_disk_is_low(api.state.as_ref())?;
    let (task, generated) = validate(&body, &api.rules)?;
    let (task, fresh) = admit_submission(api.state.as_ref(), task, generated, new_task_id).await?;
    let spec = task.spec.clone();
    if fresh {
        tracing::info!(task_id = %spec.task_id.escape_debug(), cid = %spec.wasm_cid.escape_debug(), state = "pending", "task submitted");
        // The scheduler is gone only during shutdown; the task is persisted and resumes on start.
        let _ = submit.send(task).await;
    }
    let record = api
        .state
        .get(&spec.task_id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("an admitted task vanished"))?;
    if !fresh && record.task != spec {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Some("task_id"),
            format!(
                "task_id \"{}\" was already submitted with another body; choose another id",
                spec.task_id
            ),
        ));
    }
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(TaskView::from(record))).into_response())
}

/// 503 with `Retry-After` while the state directory's free space is under its watermark, so a
/// submission is refused before the disk is full rather than failing halfway (and is never
/// run later after an error answer). Failing writes refuse it the same way.
fn refuse_when_disk_is_low(state: &dyn StateStore) -> Result<(), ApiError> {
    let space = state.disk_space().map_err(ApiError::internal)?;
    if let Some(space) = space.filter(|s| s.is_low()) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!(
                "the coordinator's state disk is nearly full ({} MiB free, under the {} MiB \
                 of COORDINATOR_STATE_LOW_WATERMARK_MB); the task was not taken: retry later",
                space.free_bytes >> 20,
                space.low_watermark_bytes >> 20
            ),
        )
        .retry_after(RETRY_AFTER_SECS));
    }
    if let Some(failure) = state.write_failure() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!(
                "the coordinator cannot write its state ({}); the task was not taken: retry later",
                failure.error
            ),
        )
        .retry_after(RETRY_AFTER_SECS));
    }
    Ok(())
}

/// The answer to a submission the store could not persist: 503, with `Retry-After`, and the task
/// id, since the write may or may not have landed: the same id again gets the same task, once.
fn not_taken(task_id: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(task_id, error = %e, "a submission could not be persisted");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Some("task_id"),
        format!(
            "the coordinator could not persist the task ({e}); it may or may not have been \
             taken: submit it again with \"task_id\": \"{task_id}\" to get it exactly once"
        ),
    )
    .retry_after(RETRY_AFTER_SECS)
}

/// Seconds a client is asked to wait before retrying a submission refused for lack of space.
const RETRY_AFTER_SECS: u32 = 5;

/// Persists a submission; returns the task as admitted and whether it is new. A task whose id
/// was generated (`generated`) must be new: if its id is taken, however unlikely with 74 random
/// bits, it gets another from `new_id` rather than being answered with someone else's task.
async fn admit_submission(
    state: &dyn StateStore,
    mut task: CheckedTask,
    generated: bool,
    mut new_id: impl FnMut() -> String,
) -> Result<(CheckedTask, bool), ApiError> {
    for _ in 0..GENERATED_ID_TRIES {
        let fresh = state
            .admit(vec![task.spec.clone()], crate::state::API_ORIGIN)
            .await
            .map_err(|e| not_taken(task.id(), e))?;
        if !fresh.is_empty() || !generated {
            return Ok((task, !fresh.is_empty()));
        }
        tracing::warn!(task_id = %task.id(), "a generated task id was taken; drawing another");
        task.spec.task_id = new_id();
    }
    Err(ApiError::internal("could not draw an unused task id"))
}

/// Draws of a fresh id before a submission is refused (each collision has odds of 2^-74).
const GENERATED_ID_TRIES: usize = 4;

/// Parses a submission and passes it through the intake check ([`TaskSpec::check`]); every
/// error names its field. Also says whether the task id was generated here (there was none).
fn validate(body: &[u8], rules: &IntakeRules) -> Result<(CheckedTask, bool), ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let sub: Submission = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        ApiError::bad(
            field,
            format!(
                "{}; expected {{\"task_id\"?, \"wasm_cid\", \"entry\"?, \"input\"?, \"limits\"?}}",
                e.inner()
            ),
        )
    })?;
    de.end().map_err(|e| {
        ApiError::bad(
            "body",
            format!("{e}: send one JSON object and nothing after it"),
        )
    })?;
    let generated = sub.task_id.is_none();
    let spec = TaskSpec {
        task_id: sub.task_id.unwrap_or_else(new_task_id),
        wasm_cid: sub.wasm_cid,
        entry: sub.entry,
        input: sub.input,
        limits: sub.limits,
    };
    let checked = spec
        .check(rules)
        .map_err(|e| ApiError::bad(&e.field, e.message))?;
    Ok((checked, generated))
}

/// A fresh id for a submission without one: a UUIDv7 (its time, then 74 random bits), so an id
/// drawn after a restart or after the clock stepped back does not repeat an old one; ids drawn
/// later sort later while the clock moves forward.
fn new_task_id() -> String {
    task_id_at(uuid::Timestamp::now(uuid::NoContext))
}

/// A UUIDv7 task id for the time `at` (random in every bit that is not the time).
fn task_id_at(at: uuid::Timestamp) -> String {
    uuid::Uuid::new_v7(at).to_string()
}

async fn get_result(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let record = api
        .state
        .get(&id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Some("task_id"),
                format!("no task \"{id}\""),
            )
        })?;
    match record.result {
        Some(result) => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            result.to_line(),
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Some("task_id"),
            format!(
                "task \"{id}\" has no result yet (it is {})",
                record.state.as_str()
            ),
        )),
    }
}

async fn get_task(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match api.state.get(&id).map_err(ApiError::internal)? {
        Some(record) => Ok(axum::Json(TaskView::from(record)).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Some("task_id"),
            format!("no task \"{id}\""),
        )),
    }
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<TaskState>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_tasks(
    State(api): State<Api>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad(
            "query",
            format!(
                "{}; state is one of pending, fetching, running, succeeded, failed",
                e.body_text()
            ),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = api
        .state
        .list(query.state, query.after.as_deref(), limit)
        .map_err(ApiError::internal)?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|r| r.task.task_id.clone()))
        .flatten();
    let tasks: Vec<TaskView> = page.into_iter().map(TaskView::from).collect();
    Ok(axum::Json(json!({"tasks": tasks, "next": next})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::API_ORIGIN;
    use crate::state::redb::RedbStore;
    use std::collections::HashSet;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert_eq!(bearer_token(value), Some("s3cret"), "{value}");
        }
        assert_eq!(bearer_token("Basic s3cret"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
    }

    #[test]
    fn ids_drawn_after_the_clock_stepped_back_never_meet_the_old_ones() {
        let at = |ms: u64| uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, 0);
        // Before a restart: 50,000 ids in the same millisecond. After it, the clock stepped back
        // to that very millisecond and 50,000 more are drawn.
        let before: HashSet<String> = (0..50_000)
            .map(|_| task_id_at(at(1_700_000_000_000)))
            .collect();
        assert_eq!(before.len(), 50_000, "ids repeated within one millisecond");
        let met = (0..50_000)
            .map(|_| task_id_at(at(1_700_000_000_000)))
            .filter(|id| before.contains(id))
            .count();
        assert_eq!(met, 0, "an id drawn after the step back met an old one");
        assert_ne!(new_task_id(), new_task_id());
    }

    #[tokio::test]
    async fn a_generated_id_already_taken_is_drawn_again_never_answered_with_the_old_task() {
        let dir = tempfile::tempdir().unwrap();
        let state = RedbStore::open(dir.path()).unwrap();
        let old = TaskSpec::new("taken", "fib.wasm", json!([12]))
            .check(&IntakeRules::default())
            .unwrap();
        state
            .admit(vec![old.spec.clone()], API_ORIGIN)
            .await
            .unwrap();

        let same_body = old.clone();
        let (spec, fresh) = admit_submission(&state, same_body, true, || "drawn-again".into())
            .await
            .unwrap();
        assert!(fresh, "the submission was answered with the old task");
        assert_eq!(spec.id(), "drawn-again");
        assert!(state.get("drawn-again").unwrap().is_some());

        // An id the submitter chose keeps its meaning: the same body again is the same task.
        let (spec, fresh) = admit_submission(&state, old, false, || unreachable!())
            .await
            .unwrap();
        assert!(!fresh);
        assert_eq!(spec.id(), "taken");
    }
}
