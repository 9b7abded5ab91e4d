//! Reading tasks back: one task, its result document alone, and pages of tasks.

use super::control::{GetQuery, WaitView, wait_until_ended, waiting};
use super::{Api, ApiError, MAX_PAGE};
use crate::state::{TaskRecord, TaskState};
use crate::tenant::Caller;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use wasm_exec_task::{ResultEnvelope, ResultHash};

/// Most bytes of task views in one page of `GET /v1/tasks` (one task is always shown, however
/// large): a page of large results stays a size a client can hold.
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// A task as the API shows it: its id, its record, and, once finished, its result's hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskView {
    /// The task's id.
    task_id: String,
    /// The result's `result_hash` (docs/RESULT_HASH.md), once finished: what the chain source
    /// writes and a receipt signs, equal for every honest run of the task; `0x` and 64 hex
    /// digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^0x[0-9a-f]{64}$")]
    result_hash: Option<ResultHash>,
    #[serde(flatten)]
    record: TaskRecord,
    /// Why it is not running yet, while it waits (`GET /v1/tasks/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<WaitView>,
}

impl From<TaskRecord> for TaskView {
    fn from(record: TaskRecord) -> Self {
        Self {
            task_id: record.task.task_id.clone(),
            result_hash: record.result.as_ref().map(ResultEnvelope::result_hash),
            record,
            waiting: None,
        }
    }
}

/// The result document alone.
#[utoipa::path(get, path = "/v1/tasks/{id}/result", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    responses(
        (status = 200, description = "The result document, as one compact JSON line.", body = ResultEnvelope),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 404, description = "No such task (or another tenant's).", body = super::ErrorBody),
        (status = 409, description = "The task has not ended yet: no result so far.", body = super::ErrorBody),
        (status = 503, description = "The state store is recovering; retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_result(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = task_or_404(&api, &caller, &id)?;
    match record.result {
        Some(result) => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            result.to_line(),
        )
            .into_response()),
        None => Err(ApiError::not_ended(&id, "result", record.state.as_str())),
    }
}

/// One task: its state, timeline, why it waits, and once finished its result and `result_hash`.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id."), GetQuery),
    responses(
        (status = 200, description = "The task.", body = TaskView),
        (status = 400, description = "A bad `wait`.", body = super::ErrorBody),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 404, description = "No such task (or another tenant's).", body = super::ErrorBody),
        (status = 503, description = "The state store is recovering; retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_task(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<GetQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad("wait", e.body_text()))?;
    // Seen first: a wait on another tenant's task would tell when it ends.
    task_or_404(&api, &caller, &id)?;
    wait_until_ended(&api, &id, query.wait()).await?;
    let record = task_or_404(&api, &caller, &id)?;
    let waiting = waiting(&api, &record);
    let view = TaskView {
        waiting,
        ..TaskView::from(record)
    };
    Ok(axum::Json(view).into_response())
}

/// The record of task `id`, or the 404 that names it (503 while the state cannot be read). A
/// task of another tenant is a 404 too, so that ids do not leak.
pub(super) fn task_or_404(api: &Api, caller: &Caller, id: &str) -> Result<TaskRecord, ApiError> {
    api.state
        .get(id)
        .map_err(|e| ApiError::state_read(e, api.state.write_failure()))?
        .filter(|record| record.tenant.as_deref() == caller.tenant_name())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Some("task_id"),
                format!("no task \"{id}\""),
            )
        })
}

/// Up to `limit` of the caller's tasks after `after`: pages of the store are read until that
/// many of them are found or the store has no more.
fn visible_page(
    api: &Api,
    caller: &Caller,
    state: Option<TaskState>,
    mut after: Option<String>,
    limit: usize,
) -> Result<Vec<TaskRecord>, ApiError> {
    let mut page = Vec::new();
    loop {
        let read = api
            .state
            .list(state, after.as_deref(), limit)
            .map_err(|e| ApiError::state_read(e, api.state.write_failure()))?;
        let exhausted = read.len() < limit;
        after = read.last().map(|r| r.task.task_id.clone());
        let mine = read
            .into_iter()
            .filter(|r| r.tenant.as_deref() == caller.tenant_name());
        page.extend(mine.take(limit - page.len()));
        if exhausted || page.len() == limit {
            return Ok(page);
        }
    }
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only tasks in this state.
    state: Option<TaskState>,
    /// Only tasks whose id sorts after this one (the `next` of the previous page).
    after: Option<String>,
    /// Most tasks in the page (1 to 1,000; default 100).
    limit: Option<usize>,
}

/// A page of `GET /v1/tasks`: the schema of what `list_tasks` writes out by hand (so as to cut
/// it at [`MAX_PAGE_BYTES`] as it goes).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct TaskPage {
    /// The tasks, ordered by id.
    tasks: Vec<TaskView>,
    /// The id to pass as `after` for the next page; `null` when there is none.
    next: Option<String>,
}

/// A page of the caller's tasks, ordered by id.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of tasks.", body = TaskPage),
        (status = 400, description = "A bad query (the message names the states).", body = super::ErrorBody),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 503, description = "The state store is recovering; retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_tasks(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad(
            "query",
            format!(
                "{}; state is one of pending, fetching, running, succeeded, failed, quarantined, cancelled",
                e.body_text()
            ),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let page = visible_page(&api, &caller, query.state, query.after, limit)?;
    // More may follow when the page is full by count, or when it was cut short by bytes.
    let (full, count) = (page.len() == limit, page.len());
    let (mut tasks, mut taken, mut last) = (Vec::new(), 0, None);
    for record in page {
        let id = record.task.task_id.clone();
        let view = serde_json::to_vec(&TaskView::from(record)).map_err(ApiError::internal)?;
        // Always one task, however large (each is bounded by the task limits); then only as many
        // as fit the page's bytes.
        if taken > 0 && tasks.len() + view.len() > MAX_PAGE_BYTES {
            break;
        }
        if taken > 0 {
            tasks.push(b',');
        }
        tasks.extend_from_slice(&view);
        (taken, last) = (taken + 1, Some(id));
    }
    let next = (full || taken < count).then_some(last).flatten();
    let mut body = br#"{"tasks":["#.to_vec();
    body.extend_from_slice(&tasks);
    body.extend_from_slice(br#"],"next":"#);
    body.extend_from_slice(&serde_json::to_vec(&next).map_err(ApiError::internal)?);
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
