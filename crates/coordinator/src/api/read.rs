//! Reading tasks back: one task, its result document alone, and pages of tasks.

use super::{Api, ApiError, MAX_PAGE};
use crate::state::{TaskRecord, TaskState};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A task as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct TaskView {
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

pub(super) async fn get_result(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
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

pub(super) async fn get_task(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
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
pub(super) struct ListQuery {
    state: Option<TaskState>,
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_tasks(
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
