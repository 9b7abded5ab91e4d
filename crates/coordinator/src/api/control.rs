//! Acting on tasks and following them without polling: `POST /v1/tasks/{id}/cancel`, the
//! `?wait=` of `GET /v1/tasks/{id}` (held until the task ends, woken by the state store's
//! broadcast of committed changes), why a task waits, and `GET /v1/events` (Server-Sent Events
//! of task changes, filterable by state).

use super::{Api, ApiError, read::TaskView, require_json};
use crate::scheduler::Waiting;
use crate::state::{API_ORIGIN, CancelOutcome, TaskEvent, TaskRecord, TaskState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The longest `?wait=`, in seconds: well under the connection idle timeout
/// (`COORDINATOR_HTTP_IDLE_TIMEOUT_SEC`, 60 s), so a held request is never cut; ask again.
pub const MAX_WAIT_SEC: u64 = 30;

/// Why a task that has not ended is not running (shown as `waiting` while it waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub(super) enum WaitView {
    /// Queued behind `ahead` tasks.
    Queued {
        /// Tasks queued before it.
        ahead: u64,
    },
    /// First in the queue; every running slot is taken.
    WaitingForSlot,
    /// Its module is being fetched.
    FetchingModule,
    /// Taken and persisted, not yet in the scheduler's queue (it is on its way there, or the
    /// coordinator runs with `--once`).
    Admitted,
}

/// Why `record`'s task waits, if it does.
pub(super) fn waiting(api: &Api, record: &TaskRecord) -> Option<WaitView> {
    match record.state {
        TaskState::Fetching => Some(WaitView::FetchingModule),
        TaskState::Pending => {
            let live = api
                .live
                .as_ref()
                .and_then(|l| l.waiting(&record.task.task_id));
            Some(match live {
                Some(Waiting::Queued { ahead }) => WaitView::Queued { ahead },
                Some(Waiting::ForSlot) => WaitView::WaitingForSlot,
                None => WaitView::Admitted,
            })
        }
        _ => None,
    }
}

/// Query of `GET /v1/tasks/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct GetQuery {
    /// Seconds to hold the answer until the task ends (at most [`MAX_WAIT_SEC`]).
    wait: Option<f64>,
}

impl GetQuery {
    /// The wait asked for, capped; zero when none.
    pub(super) fn wait(&self) -> Duration {
        let secs = self
            .wait
            .filter(|w| w.is_finite() && *w > 0.0)
            .unwrap_or(0.0);
        Duration::from_secs_f64(secs.min(MAX_WAIT_SEC as f64))
    }
}

/// Holds until task `id` has ended or `wait` has passed, woken by the store's broadcast (never
/// by polling); then the caller reads the task. Returns at once for a task that has ended, or
/// for a store that broadcasts nothing.
pub(super) async fn wait_until_ended(api: &Api, id: &str, wait: Duration) -> Result<(), ApiError> {
    if wait.is_zero() {
        return Ok(());
    }
    let Some(mut events) = api.state.subscribe() else {
        return Ok(());
    };
    // Subscribed first, then read: an end committed in between is seen by the read.
    if has_ended(api, id)? {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => return Ok(()),
            Ok(Ok(e)) if e.task_id == id && e.state.is_finished() => return Ok(()),
            Ok(Ok(_)) => {}
            // Fell behind the broadcast: the end may be among what was missed.
            Ok(Err(RecvError::Lagged(_))) => {
                if has_ended(api, id)? {
                    return Ok(());
                }
            }
        }
    }
}

/// Whether task `id` has ended (an unknown task counts as ended: the read says 404).
fn has_ended(api: &Api, id: &str) -> Result<bool, ApiError> {
    let record = api
        .state
        .get(id)
        .map_err(|e| ApiError::state_read(e, api.state.write_failure()))?;
    Ok(record.is_none_or(|r| r.state.is_finished()))
}

/// 409 unless the task came through the API: a source's task owes its result to the source.
fn refuse_unless_from_api(record: &TaskRecord) -> Result<(), ApiError> {
    if record.origin == API_ORIGIN {
        return Ok(());
    }
    let why = if record.origin == "chain" {
        "it was requested on chain: its result is owed to the TaskRegistry contract, which no \
         API call may withdraw"
            .to_owned()
    } else {
        format!(
            "it came from the {} source, which takes its result back",
            record.origin
        )
    };
    Err(ApiError::new(
        StatusCode::CONFLICT,
        Some("task_id"),
        format!(
            "task \"{}\" cannot be cancelled through the API: {why}",
            record.task.task_id
        ),
    ))
}

/// Cancels an API task: a pending one at once, a running one interrupted; the answer is the
/// task as it is then (`cancelled`, with who cancelled it and when). Cancelling a cancelled task
/// again answers it unchanged.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "The task's id.")),
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "Not read (send it empty): the request must only be declared \
            `application/json`, as every POST that acts, so that no web page can send it \
            cross-site."),
    responses(
        (status = 200, description = "The task, cancelled.", body = TaskView),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 404, description = "No such task (or another tenant's).", body = super::ErrorBody),
        (status = 409, description = "The task has already ended, or is not the API's (a chain task's result is owed to the chain).", body = super::ErrorBody),
        (status = 415, description = "The body is not declared `application/json`.", body = super::ErrorBody),
        (status = 503, description = "The state store is recovering; retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn cancel_task(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<crate::tenant::Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let record = super::read::task_or_404(&api, &caller, &id)?;
    refuse_unless_from_api(&record)?;
    let outcome = api
        .state
        .cancel(&id, &caller.name)
        .await
        .map_err(|e| ApiError::state_read(e, api.state.write_failure()))?;
    match outcome {
        CancelOutcome::Cancelled { was } => {
            if let Some(live) = &api.live {
                live.cancel(&id);
            }
            tracing::info!(task_id = %id.escape_debug(), was = was.as_str(), "task cancelled");
        }
        CancelOutcome::AlreadyEnded(TaskState::Cancelled) => {}
        CancelOutcome::AlreadyEnded(state) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                Some("task_id"),
                format!(
                    "task \"{id}\" has already ended ({}); nothing to cancel",
                    state.as_str()
                ),
            ));
        }
    }
    let record = api
        .state
        .get(&id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("a cancelled task vanished"))?;
    Ok(axum::Json(TaskView::from(record)).into_response())
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Comma-separated states to pass (`succeeded,failed`); every state when absent.
    state: Option<String>,
}

/// The states named by `list`, or a 400 naming the one that is not a state.
fn parse_states(list: &str) -> Result<HashSet<TaskState>, ApiError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            TaskState::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    let all: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::bad(
                        "state",
                        format!("\"{name}\" is not a state; states are {}", all.join(", ")),
                    )
                })
        })
        .collect()
}

/// `GET /v1/events`: one SSE `task` event (a [`TaskEvent`] as JSON) per committed change, in
/// commit order; a `lagged` event (data: how many were missed) when this client fell behind
/// the broadcast, after which it should re-read what it follows. A comment every 15 s keeps
/// an idle stream open.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "An endless Server-Sent Events stream: `event: task` with a `TaskEvent` (JSON) as its data and the change's time (Unix ms) as its id, one per committed change of the caller's tasks; `event: lagged` with the number missed when the client fell behind.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad query (the message names the states).", body = super::ErrorBody),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 503, description = "This state store broadcasts no events.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn events(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<crate::tenant::Caller>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let filter = query.state.as_deref().map(parse_states).transpose()?;
    let events = api.state.subscribe().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "this state store broadcasts no events",
        )
    })?;
    let tenant = caller.tenant_name().map(str::to_owned);
    let passes = move |e: &TaskEvent| {
        e.tenant == tenant && filter.as_ref().is_none_or(|f| f.contains(&e.state))
    };
    let stream = futures_util::stream::unfold((events, passes), |(mut events, passes)| async {
        loop {
            let event = match events.recv().await {
                Ok(e) if passes(&e) => task_event(&e),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, Infallible>(event), (events, passes)));
        }
    });
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15));
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

fn task_event(e: &TaskEvent) -> Event {
    let event = Event::default().event("task").id(e.at_ms.to_string());
    // A TaskEvent always serialises (strings, numbers, a unit enum).
    event
        .json_data(e)
        .unwrap_or_else(|_| Event::default().event("task"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_task_is_not_cancellable_and_the_answer_says_why() {
        let record = |origin: &str| TaskRecord {
            task: wasm_exec_task::TaskSpec::new("t", "fib.wasm", serde_json::json!([1])),
            origin: origin.into(),
            state: TaskState::Running,
            attempts: 1,
            reported: false,
            created_at_ms: 0,
            updated_at_ms: 0,
            result: None,
            not_written_back: None,
            timeline: Vec::new(),
            cancelled: None,
            tenant: None,
            callback: None,
        };
        assert!(refuse_unless_from_api(&record(API_ORIGIN)).is_ok());
        let response = refuse_unless_from_api(&record("chain"))
            .unwrap_err()
            .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let e = format!(
            "{:?}",
            refuse_unless_from_api(&record("chain")).unwrap_err()
        );
        assert!(
            e.contains("requested on chain") && e.contains("TaskRegistry"),
            "{e}"
        );
    }

    #[test]
    fn waits_are_capped_and_states_are_named() {
        let q = |wait| GetQuery { wait };
        assert_eq!(q(None).wait(), Duration::ZERO);
        assert_eq!(q(Some(-3.0)).wait(), Duration::ZERO);
        assert_eq!(q(Some(f64::NAN)).wait(), Duration::ZERO);
        assert_eq!(q(Some(1e9)).wait(), Duration::from_secs(MAX_WAIT_SEC));
        assert_eq!(q(Some(0.5)).wait(), Duration::from_millis(500));
        let states = parse_states("succeeded, cancelled").unwrap();
        assert_eq!(
            states,
            HashSet::from([TaskState::Succeeded, TaskState::Cancelled])
        );
        let e = format!("{:?}", parse_states("done").unwrap_err());
        assert!(
            e.contains("done") && e.contains("is not a state") && e.contains("cancelled"),
            "{e}"
        );
    }
}
