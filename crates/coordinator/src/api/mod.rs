//! The HTTP API (always on): submit tasks, read them back with their results, probes, metrics.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | POST | `/v1/tasks` | submit `{"task_id"?, "wasm_cid", "entry"?, "input"?, "limits"?, "callback_url"?}`; with `callback_url` the task's view is POSTed there, signed, once it ends ([`crate::webhook`]) |
//! | POST | `/v1/tasks:batch` | `{"tasks": [submission, ...]}`, at most 1,000: the valid ones persisted in one durable write, each item answered on its own (`results[i].status` 201, 200, 409 or 400) |
//! | GET | `/v1/tasks/{id}?wait=` | the task, its state, timeline, why it waits and, once finished, its result and `result_hash`; `wait` (seconds, at most 30) holds the answer until the task ends |
//! | POST | `/v1/tasks/{id}/cancel` | cancel an API task: pending ones at once, running ones interrupted |
//! | GET | `/v1/events?state=` | Server-Sent Events of task changes, optionally of some states |
//! | GET | `/v1/tasks/{id}/result` | the result document alone, as one compact JSON line (its `result_hash`, docs/RESULT_HASH.md, is what the chain source writes on chain) |
//! | GET | `/v1/tasks/{id}/receipt` | the operator's EIP-712 receipt of the finished task (409 until then) |
//! | GET | `/v1/tasks?state=&after=&limit=` | a page of tasks ordered by id |
//! | POST | `/v1/modules` | upload a module (binary Wasm, or WAT text); answers its CIDs, size and exports |
//! | GET | `/v1/modules/{cid}` | an uploaded module's metadata |
//! | GET | `/healthz`, `/readyz` | probes (never need the token) |
//! | GET | `/`, `/ui/{file}` | the web dashboard (embedded; needs no token, asks the user for one) |
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/openapi.json` | this table as an OpenAPI 3.1 document (never needs the token) |
//!
//! A submission is persisted before it is answered (201), so an accepted task is never lost; a
//! second submission with the same `task_id` and body answers 200 with the existing task and is
//! not run again; the same id with another body is a 409. Errors are JSON naming the field.

//!
//! # Layout
//! - here: the [`Api`] state, the [`router`], the body cap, the probes and `/metrics`.
//! - `submit`: `POST /v1/tasks`; `batch`: `POST /v1/tasks:batch`; `read`: the GET routes; `receipt`: the signed receipts;
//!   `auth`: the bearer token; `error`: [`ApiError`]; `modules`: module upload and its
//!   metadata; `control`: cancel, waiting and the event stream; `dashboard`: the web page;
//!   `openapi`: the OpenAPI document of all of it.

mod auth;
mod batch;
mod control;
mod dashboard;
mod error;
mod modules;
mod openapi;
mod read;
mod receipt;
mod submit;

pub use batch::{ItemOutcome, MAX_BATCH};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use openapi::document_json as openapi_json;
pub(crate) use read::TaskView;
pub use submit::{Submitted, read_body, require_json};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::module::uploads::UploadStore;
use crate::scheduler::{Admitted, Live};
use crate::state::StateStore;
use crate::tenant::{Caller, Tenants};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tokio::sync::mpsc;
use wasm_exec_chain::PrivateKeySigner;
use wasm_exec_task::IntakeRules;

/// Largest page of `GET /v1/tasks`.
pub const MAX_PAGE: usize = 1000;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Where tasks are persisted and read back.
    pub state: Arc<dyn StateStore>,
    /// Hands accepted tasks to the scheduler (bounded: [`crate::scheduler::INBOX_CAPACITY`]);
    /// `None` when nothing would run them (a `--once` run), so submissions are refused.
    pub submit: Option<mpsc::Sender<Admitted>>,
    /// The intake check's limit defaults and maxima.
    pub rules: Arc<IntakeRules>,
    /// The single bearer token (`COORDINATOR_API_TOKEN`), if set: its caller is the default
    /// tenant, whose tasks have none.
    pub token: Option<Arc<str>>,
    /// The tenants and their tokens (`COORDINATOR_TOKENS_FILE`), if set; then every request but
    /// the probes needs one of their tokens or `token`.
    pub tenants: Option<Arc<Tenants>>,
    /// The metrics rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What is failing now, for `/readyz`.
    pub health: Arc<Health>,
    /// The operator's key, which signs every receipt (`COORDINATOR_RECEIPT_KEY_FILE`).
    pub receipt_key: Arc<PrivateKeySigner>,
    /// Where `POST /v1/modules` keeps modules (`None`: uploads are refused, 503).
    pub uploads: Option<Arc<UploadStore>>,
    /// The scheduler's queue and running tasks (why a task waits; cancels); `None` when no
    /// scheduler serves (a `--once` run).
    pub live: Option<Arc<Live>>,
    /// Whether webhooks are delivered (`COORDINATOR_WEBHOOK_SECRET` is set): a submission with
    /// a `callback_url` is refused (400) otherwise.
    pub callbacks: bool,
}

/// The router with every route, the body size cap (`max_body` bytes; 413 beyond) and the token
/// check.
/// The module routes carry the module cap instead (see `modules`).
pub fn router(api: Api, max_body: usize) -> Router {
    let max_module = api.uploads.as_ref().map_or(0, |u| u.max_bytes());
    let tasks = Router::new()
        .route("/v1/tasks", get(read::list_tasks).post(submit::submit_task))
        .route("/v1/tasks:batch", post(batch::submit_batch))
        .route("/v1/tasks/{id}", get(read::get_task))
        .route("/v1/tasks/{id}/result", get(read::get_result))
        .route("/v1/tasks/{id}/receipt", get(receipt::get_receipt))
        .route("/v1/tasks/{id}/cancel", post(control::cancel_task))
        .route("/v1/events", get(control::events))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            max_body,
            reject_announced_oversize,
        ));
    let protected = tasks
        .merge(modules::routes(
            usize::try_from(max_module).unwrap_or(usize::MAX),
        ))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(dashboard::routes())
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(protected)
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

pub(super) fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        "request body too large; the limit is COORDINATOR_MAX_BODY_KB",
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`.", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the state store reads and the task source works (a failing source is named).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`.", content_type = "text/plain", body = String),
        (status = 503, description = "`not ready: ` and why (the state store, its writes, or the task source).", content_type = "text/plain", body = String),
    ))]
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
    match api.health.source_problem() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the task source fails: {problem}\n"),
        )
            .into_response(),
    }
}

/// 429 with `Retry-After` when `n` more submissions would pass the caller's tasks-per-minute;
/// 400 when `n` alone is more than a minute's (a batch to split).
fn take_rate(api: &Api, caller: &Caller, n: usize) -> Result<(), ApiError> {
    let (Some(tenants), Some(tenant)) = (&api.tenants, &caller.tenant) else {
        return Ok(());
    };
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    let Err(wait) = tenants.take(tenant, n) else {
        return Ok(());
    };
    let per_minute = tenant.tasks_per_minute.unwrap_or_default();
    if n > per_minute {
        return Err(ApiError::bad(
            "tasks",
            format!(
                "{n} tasks at once are more than tenant \"{}\" may submit per minute \
                 ({per_minute}); split the batch",
                tenant.tenant
            ),
        ));
    }
    let seconds = u32::try_from(wait.as_secs_f64().ceil() as u64)
        .unwrap_or(u32::MAX)
        .max(1);
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        format!(
            "tenant \"{}\" may submit {per_minute} tasks per minute; retry in {seconds} s \
             (Retry-After)",
            tenant.tenant
        ),
    )
    .retry_after(seconds))
}

/// Whether the caller's webhooks can be signed: its tenant's key or `COORDINATOR_WEBHOOK_SECRET`.
fn callbacks_on(api: &Api, caller: &Caller) -> bool {
    api.callbacks
        || caller
            .tenant
            .as_ref()
            .is_some_and(|t| t.webhook_secret.is_some())
}

/// The Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text.", content_type = "text/plain", body = String),
        (status = 401, description = "No or a wrong bearer token.", body = ErrorBody),
        (status = 503, description = "The state store is recovering; retry after `Retry-After`.", body = ErrorBody),
    ),
    security(("bearer" = [])))]
async fn metrics(State(api): State<Api>) -> Result<Response, ApiError> {
    let text = api
        .metrics
        .render(api.state.as_ref())
        .map_err(|e| ApiError::state_read(e, api.state.write_failure()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
