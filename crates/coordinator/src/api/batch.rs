//! `POST /v1/tasks:batch`: up to [`MAX_BATCH`] submissions in one request, every valid one
//! persisted in ONE durable write, each item answered on its own (a bad item does not sink the
//! good ones).

use super::submit::{
    Submitted, body_error, inbox, read_body, refuse_when_disk_is_low, require_json, webhooks_off,
};
use super::{Api, ApiError};
use crate::state::{StateStore, TaskRecord};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use wasm_exec_task::{CheckedTask, IntakeRules};

/// Most tasks in one batch.
pub const MAX_BATCH: usize = 1000;

/// The body: `{"tasks": [submission, ...]}`, each item as `POST /v1/tasks` takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// At most 1,000 items, each a submission as `POST /v1/tasks` takes it (`Submission`).
    /// Each is checked on its own: an item that is not a valid submission, whatever it is, is
    /// answered 400 in `results` and does not sink the others.
    #[schema(max_items = 1000)]
    tasks: Vec<Value>,
}

/// The answer to a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// Items taken (201) or found submitted before (200).
    pub taken: usize,
    /// Items refused (400, 409).
    pub refused: usize,
    /// Each item's outcome, in the order of the request.
    pub results: Vec<ItemOutcome>,
}

/// One item's outcome, in the order of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ItemOutcome {
    /// Its place in `tasks`, from 0.
    pub index: usize,
    /// As `POST /v1/tasks` would answer it: 201 taken, 200 submitted before with the same body,
    /// 409 the id taken by another body, 400 invalid.
    pub status: u16,
    /// Its task id (generated when it had none), unless it was invalid before one was known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Its state after the write, for 201 and 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::state::TaskState>)]
    pub state: Option<&'static str>,
    /// The field at fault, for a 400 that names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What to fix, for 400 and 409.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Submits up to 1,000 tasks in one durable write, each item answered on its own.
#[utoipa::path(post, path = "/v1/tasks:batch", tag = "tasks",
    request_body(content = BatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each item's outcome (201, 200, 409 or 400 in `results[i].status`).", body = BatchAnswer),
        (status = 400, description = "Not a batch, or more than 1,000 items (nothing taken).", body = super::ErrorBody),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 413, description = "The body is over `COORDINATOR_MAX_BODY_KB`.", body = super::ErrorBody),
        (status = 415, description = "The body is not declared `application/json`.", body = super::ErrorBody),
        (status = 429, description = "Over the tenant's tasks per minute; retry after `Retry-After`.", body = super::ErrorBody),
        (status = 503, description = "Not taken now (the state disk is low or failing, or the coordinator runs `--once`); retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn submit_batch(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<crate::tenant::Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(body_error)?;
    let submit = inbox(&api)?;
    refuse_when_disk_is_low(api.state.as_ref())?;
    let items = read_items(&body)?;
    super::take_rate(&api, &caller, items.len())?;
    let tenant = caller.tenant_name().map(str::to_owned);
    let callbacks_on = super::callbacks_on(&api, &caller);
    let submit = submit.clone();
    // On a task of its own, so that a client hanging up while the batch is journaled (which
    // drops this handler) cannot strand its tasks: durable by then, they must still reach the
    // scheduler rather than wait, pending, for the next start.
    let handover = tokio::spawn(async move {
        let intake = Intake {
            rules: &api.rules,
            callbacks_on,
            tenant: tenant.clone(),
        };
        let (outcomes, fresh) = admit_batch(api.state.as_ref(), &intake, items).await?;
        for task in fresh {
            // The scheduler is gone only during shutdown; the tasks are persisted and resume on
            // start.
            let tenant = tenant.clone();
            let _ = submit
                .send(crate::scheduler::Admitted { task, tenant })
                .await;
        }
        Ok::<_, ApiError>(outcomes)
    });
    let outcomes = handover.await.map_err(ApiError::internal)??;
    let taken = outcomes.iter().filter(|o| o.status < 300).count();
    tracing::info!(
        items = outcomes.len(),
        taken,
        refused = outcomes.len() - taken,
        "batch submitted"
    );
    let answer = BatchAnswer {
        taken,
        refused: outcomes.len() - taken,
        results: outcomes,
    };
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}

/// The batch's items, each as its own JSON text; 400 for a body that is not a batch or holds
/// more than [`MAX_BATCH`] items (then nothing is taken).
fn read_items(body: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    let batch: BatchBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "tasks",
            format!("{e}; expected {{\"tasks\": [{{\"wasm_cid\", ...}}, ...]}}"),
        )
    })?;
    if batch.tasks.len() > MAX_BATCH {
        return Err(ApiError::bad(
            "tasks",
            format!(
                "{} tasks in one batch; the limit is {MAX_BATCH}: split it into several batches",
                batch.tasks.len()
            ),
        ));
    }
    batch
        .tasks
        .iter()
        .map(|item| serde_json::to_vec(item).map_err(ApiError::internal))
        .collect()
}

/// What a batch's items are checked against, and whose they are.
struct Intake<'a> {
    rules: &'a IntakeRules,
    callbacks_on: bool,
    tenant: Option<String>,
}

/// Checks every item, persists the valid ones with one [`StateStore::submit`] (one durable
/// write), and answers each item; returns the outcomes and the tasks that are new.
async fn admit_batch(
    state: &dyn StateStore,
    intake: &Intake<'_>,
    items: Vec<Vec<u8>>,
) -> Result<(Vec<ItemOutcome>, Vec<CheckedTask>), ApiError> {
    let mut outcomes = Vec::with_capacity(items.len());
    let mut valid: Vec<(usize, Submitted)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match check_item(item, intake.rules, intake.callbacks_on) {
            Ok(submitted) => valid.push((index, submitted)),
            Err(e) => outcomes.push(refused(index, None, &e)),
        }
    }
    let callbacks: BTreeMap<String, String> = valid
        .iter()
        .filter_map(|(_, s)| Some((s.task.spec.task_id.clone(), s.callback_url.clone()?)))
        .collect();
    let specs = valid.iter().map(|(_, s)| s.task.spec.clone()).collect();
    let fresh_ids: HashSet<String> = state
        .submit(specs, callbacks, intake.tenant.clone())
        .await
        .map_err(not_taken)?
        .into_iter()
        .map(|spec| spec.task_id)
        .collect();
    let mut fresh = Vec::new();
    let mut answered = HashSet::new();
    for (index, submitted) in valid {
        let id = submitted.task.spec.task_id.clone();
        let record = state.get(&id).map_err(ApiError::internal)?;
        let first = answered.insert(id.clone());
        outcomes.push(match record {
            Some(record) if fresh_ids.contains(&id) && first => {
                fresh.push(submitted.task);
                taken(index, &record, StatusCode::CREATED)
            }
            Some(record)
                if record.task == submitted.task.spec && record.tenant == intake.tenant =>
            {
                taken(index, &record, StatusCode::OK)
            }
            _ => refused(
                index,
                Some(id.clone()),
                &ApiError::new(
                    StatusCode::CONFLICT,
                    Some("task_id"),
                    format!(
                        "task_id \"{id}\" was already submitted with another body; choose \
                         another id"
                    ),
                ),
            ),
        });
    }
    outcomes.sort_by_key(|o| o.index);
    Ok((outcomes, fresh))
}

/// The answer to a batch the store could not persist: 503 with `Retry-After`; the write may or
/// may not have landed, so the same ids again get each task once.
fn not_taken(e: crate::state::StateError) -> ApiError {
    tracing::warn!(error = %e, "a batch could not be persisted");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        format!(
            "the coordinator could not persist the batch ({e}); it may or may not have been \
             taken: submit it again with every task_id set to get each task once"
        ),
    )
    .retry_after(super::error::RETRY_AFTER_SECS)
}

/// One item through the checks of `POST /v1/tasks`.
fn check_item(item: &[u8], rules: &IntakeRules, callbacks_on: bool) -> Result<Submitted, ApiError> {
    let submitted = read_body(item, rules)?;
    if submitted.callback_url.is_some() && !callbacks_on {
        return Err(webhooks_off());
    }
    Ok(submitted)
}

fn taken(index: usize, record: &TaskRecord, status: StatusCode) -> ItemOutcome {
    ItemOutcome {
        index,
        status: status.as_u16(),
        task_id: Some(record.task.task_id.clone()),
        state: Some(record.state.as_str()),
        field: None,
        message: None,
    }
}

fn refused(index: usize, task_id: Option<String>, e: &ApiError) -> ItemOutcome {
    let (status, field, message) = e.parts();
    ItemOutcome {
        index,
        status: status.as_u16(),
        task_id,
        state: None,
        field: field.map(str::to_owned),
        message: Some(message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::redb::RedbStore;
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wasm_exec_task::TaskSpec;

    /// A store that counts its writes of new tasks.
    struct Counting {
        inner: RedbStore,
        writes: AtomicUsize,
    }

    #[async_trait]
    impl StateStore for Counting {
        async fn admit(
            &self,
            tasks: Vec<TaskSpec>,
            origin: &str,
        ) -> Result<Vec<TaskSpec>, crate::state::StateError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.admit(tasks, origin).await
        }
        async fn submit(
            &self,
            tasks: Vec<TaskSpec>,
            callbacks: BTreeMap<String, String>,
            tenant: Option<String>,
        ) -> Result<Vec<TaskSpec>, crate::state::StateError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.submit(tasks, callbacks, tenant).await
        }
        async fn admit_with_cursor(
            &self,
            tasks: Vec<TaskSpec>,
            origin: &str,
            cursor: String,
        ) -> Result<Vec<TaskSpec>, crate::state::StateError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.admit_with_cursor(tasks, origin, cursor).await
        }
        fn cursor(&self, origin: &str) -> Result<Option<String>, crate::state::StateError> {
            self.inner.cursor(origin)
        }
        fn record_progress(&self, task_id: &str, state: crate::state::TaskState) {
            self.inner.record_progress(task_id, state);
        }
        async fn finish(
            &self,
            task_id: &str,
            result: &wasm_exec_task::ResultEnvelope,
            reported: bool,
        ) -> Result<(), crate::state::StateError> {
            self.inner.finish(task_id, result, reported).await
        }
        async fn quarantine(
            &self,
            task_id: &str,
            result: &wasm_exec_task::ResultEnvelope,
        ) -> Result<(), crate::state::StateError> {
            self.inner.quarantine(task_id, result).await
        }
        async fn mark_reported(
            &self,
            task_id: &str,
            note: Option<String>,
        ) -> Result<(), crate::state::StateError> {
            self.inner.mark_reported(task_id, note).await
        }
        fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, crate::state::StateError> {
            self.inner.get(task_id)
        }
        fn resumable(&self) -> Result<Vec<TaskRecord>, crate::state::StateError> {
            self.inner.resumable()
        }
        fn list(
            &self,
            state: Option<crate::state::TaskState>,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<TaskRecord>, crate::state::StateError> {
            self.inner.list(state, after, limit)
        }
        fn counts(
            &self,
        ) -> Result<
            std::collections::BTreeMap<crate::state::TaskState, u64>,
            crate::state::StateError,
        > {
            self.inner.counts()
        }
    }

    #[tokio::test]
    async fn a_batch_is_one_write_and_each_item_has_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = Counting {
            inner: RedbStore::open(dir.path()).unwrap(),
            writes: AtomicUsize::new(0),
        };
        let fib = |id: &str, n: u64| json!({"task_id": id, "wasm_cid": "fib.wasm", "input": [n]});
        let items: Vec<Vec<u8>> = [
            fib("a", 1),
            json!({"task_id": "no-cid"}),
            fib("b", 2),
            fib("a", 1),
            fib("b", 3),
            json!({"wasm_cid": "fib.wasm", "input": [4]}),
        ]
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
        let rules = IntakeRules::default();
        let intake = Intake {
            rules: &rules,
            callbacks_on: false,
            tenant: None,
        };
        let (outcomes, fresh) = admit_batch(&store, &intake, items).await.unwrap();
        assert_eq!(store.writes.load(Ordering::SeqCst), 1, "one write");
        let statuses: Vec<u16> = outcomes.iter().map(|o| o.status).collect();
        assert_eq!(statuses, [201, 400, 201, 200, 409, 201], "{outcomes:?}");
        let message = outcomes[1].message.as_deref().unwrap_or_default();
        assert!(message.contains("wasm_cid"), "{message}");
        assert_eq!(fresh.len(), 3);
        let generated = outcomes[5].task_id.as_deref().unwrap();
        assert!(store.get(generated).unwrap().is_some(), "{generated}");
    }
}
