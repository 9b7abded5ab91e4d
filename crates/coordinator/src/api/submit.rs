//! `POST /v1/tasks`: a submission parsed, passed through the intake check, persisted (answered
//! 201 only once it is durable), and handed to the scheduler.

use super::error::RETRY_AFTER_SECS;
use super::{Api, ApiError, body_too_large, read::TaskView};
use crate::state::StateStore;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use wasm_exec_task::{CheckedTask, IntakeRules, TaskLimits, TaskSpec};

/// The body of `POST /v1/tasks` (and of each item of a batch).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}}))]
pub(super) struct Submission {
    /// The task's id (1 to 128 of `A-Za-z0-9._-`); generated (a UUIDv7) when absent. The same
    /// id with the same body again answers the existing task; with another body, 409.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    task_id: Option<String>,
    /// The module: an IPFS CID (`bafk...`, `Qm...`; `POST /v1/modules` answers it), or a file
    /// name in the operator's mirror (`fib.wasm`).
    wasm_cid: String,
    /// The function to call, unless the input names one.
    entry: Option<String>,
    /// The input document (`{"entry": "fib", "args": [12]}`, or the arguments alone: `[12]`).
    #[serde(default)]
    input: Value,
    /// Limits for this task; unset ones take the operator's defaults, and none may pass its
    /// maxima.
    #[serde(default, deserialize_with = "wasm_exec_task::object::only")]
    limits: TaskLimits,
    /// `false`: always run it, never answer it from (or store it in) the result cache.
    cache: Option<bool>,
    /// An http(s) URL the task's view is POSTed to, signed, once it ends (needs the operator's
    /// or the tenant's webhook secret).
    callback_url: Option<String>,
}

/// A submission as read: the checked task, whether its id was generated here, and where its
/// result is to be posted.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task, through the intake check.
    pub task: CheckedTask,
    /// Whether its id was generated here (the body had none).
    pub generated: bool,
    /// Its `callback_url`, checked ([`crate::webhook::sign::check_url`]).
    pub callback_url: Option<String>,
}

/// Submits one task; answered once it is durable.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body(content = Submission, content_type = "application/json"),
    responses(
        (status = 201, description = "Taken: the new task.", body = TaskView,
            links(
                ("task" = (operation_id = "get_task", parameters(("id" = "$response.body#/task_id")))),
                ("cancel" = (operation_id = "cancel_task", parameters(("id" = "$response.body#/task_id")))),
            )),
        (status = 200, description = "Submitted before with the same `task_id` and body: the existing task.", body = TaskView,
            links(
                ("task" = (operation_id = "get_task", parameters(("id" = "$response.body#/task_id")))),
                ("cancel" = (operation_id = "cancel_task", parameters(("id" = "$response.body#/task_id")))),
            )),
        (status = 400, description = "Invalid; the error names the field.", body = super::ErrorBody),
        (status = 401, description = "No or a wrong bearer token.", body = super::ErrorBody),
        (status = 409, description = "The `task_id` is taken by another body.", body = super::ErrorBody),
        (status = 413, description = "The body is over `COORDINATOR_MAX_BODY_KB`.", body = super::ErrorBody),
        (status = 415, description = "The body is not declared `application/json`.", body = super::ErrorBody),
        (status = 429, description = "Over the tenant's tasks per minute; retry after `Retry-After`.", body = super::ErrorBody),
        (status = 503, description = "Not taken now (the state disk is low or failing, or the coordinator runs `--once`); retry after `Retry-After`.", body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn submit_task(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<crate::tenant::Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(body_error)?;
    let submit = inbox(&api)?;
    refuse_when_disk_is_low(api.state.as_ref())?;
    let submitted = read_body(&body, &api.rules)?;
    if submitted.callback_url.is_some() && !super::callbacks_on(&api, &caller) {
        return Err(webhooks_off());
    }
    super::take_rate(&api, &caller, 1)?;
    let tenant = caller.tenant_name().map(str::to_owned);
    let (state, submit, owner) = (api.state.clone(), submit.clone(), tenant.clone());
    // On a task of its own, so that a client hanging up while its submission is journaled (which
    // drops this handler) cannot strand the task: durable by then, it must still reach the
    // scheduler rather than wait, pending, for the next start.
    let handover = tokio::spawn(async move {
        let (task, fresh) =
            admit_submission(state.as_ref(), submitted, owner.clone(), new_task_id).await?;
        let spec = task.spec.clone();
        if fresh {
            tracing::info!(task_id = %spec.task_id.escape_debug(), cid = %spec.wasm_cid.escape_debug(), tenant = owner.as_deref().unwrap_or_default(), state = "pending", "task submitted");
            // The scheduler is gone only during shutdown; the task is persisted and resumes on
            // start.
            let _ = submit
                .send(crate::scheduler::Admitted {
                    task,
                    tenant: owner,
                })
                .await;
        }
        Ok::<_, ApiError>((spec, fresh))
    });
    let (spec, fresh) = handover.await.map_err(ApiError::internal)??;
    let record = api
        .state
        .get(&spec.task_id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("an admitted task vanished"))?;
    if !fresh && (record.task != spec || record.tenant != tenant) {
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

/// A body that could not be read: 413 over the cap, else as axum says.
pub(super) fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large()
    } else {
        ApiError::new(e.status(), None, e.body_text())
    }
}

/// The scheduler's inbox, or the 503 of a `--once` run, which takes no submissions.
pub(super) fn inbox(
    api: &Api,
) -> Result<&tokio::sync::mpsc::Sender<crate::scheduler::Admitted>, ApiError> {
    api.submit.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "this coordinator runs with --once: it runs its source's tasks and exits, and takes \
             no submissions; start it without --once to submit tasks",
        )
    })
}

/// The 400 for a `callback_url` that no key would sign.
pub(super) fn webhooks_off() -> ApiError {
    ApiError::bad(
        "callback_url",
        "this coordinator delivers no webhooks: its operator sets COORDINATOR_WEBHOOK_SECRET \
         (or the tenant's webhook_secret in COORDINATOR_TOKENS_FILE) to turn them on",
    )
}

/// 415 unless the body is declared `application/json`: a browser sends a cross-site "simple"
/// POST (no preflight) only as `text/plain`, form or multipart, so this keeps any web page from
/// creating tasks through a visitor's browser. Public so the fuzz targets drive it.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match declared.as_deref() {
        Some("application/json") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
            format!(
                "the body must be sent as Content-Type: application/json (got {}); with curl: \
                 -H 'Content-Type: application/json'",
                other.unwrap_or("none")
            ),
        )),
    }
}

/// Reads a submission's body as `POST /v1/tasks` does, before it touches the store: integers past
/// 64 bits refused, the body parsed strictly (nothing after the object), then the intake check.
/// Public so the fuzz targets drive it.
pub fn read_body(body: &[u8], rules: &IntakeRules) -> Result<Submitted, ApiError> {
    refuse_inexact_integers(body)?;
    validate(body, rules)
}

/// 400 when the body holds an integer literal outside the 64-bit range (below -2^63 or above
/// 2^64-1): a JSON parser would turn it into a float and lose its low digits. Arguments that
/// large go as decimal strings (`"18446744073709551615"`), which the runtime converts exactly.
fn refuse_inexact_integers(body: &[u8]) -> Result<(), ApiError> {
    let (mut in_string, mut escaped) = (false, false);
    let mut number: Option<usize> = None; // where the number token under the cursor began
    for (at, &b) in body.iter().chain(std::iter::once(&b' ')).enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            number.get_or_insert(at);
            continue;
        }
        if let Some(start) = number.take() {
            check_integer(&body[start..at])?;
        }
        in_string = b == b'"';
    }
    Ok(())
}

/// An integer literal (no fraction, no exponent) must fit an `i64` or a `u64`.
fn check_integer(token: &[u8]) -> Result<(), ApiError> {
    if token.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return Ok(()); // a float: JSON numbers with a fraction are floats by intent
    }
    let text = std::str::from_utf8(token).unwrap_or_default();
    if text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok() {
        return Ok(());
    }
    let digits = token.iter().filter(|b| b.is_ascii_digit()).count();
    Err(ApiError::bad(
        "body",
        format!(
            "an integer of {digits} digits is outside the 64-bit range and cannot be kept \
             exactly; send it as a decimal string (\"123...\"), which arguments accept"
        ),
    ))
}

/// 503 with `Retry-After` while the state directory's free space is under its watermark, so a
/// submission is refused before the disk is full rather than failing halfway (and is never
/// run later after an error answer). Failing writes refuse it the same way.
pub(super) fn refuse_when_disk_is_low(state: &dyn StateStore) -> Result<(), ApiError> {
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

/// Persists a submission; returns the task as admitted and whether it is new. A task whose id
/// was generated (`generated`) must be new: if its id is taken, however unlikely with 74 random
/// bits, it gets another from `new_id` rather than being answered with someone else's task.
async fn admit_submission(
    state: &dyn StateStore,
    submitted: Submitted,
    tenant: Option<String>,
    mut new_id: impl FnMut() -> String,
) -> Result<(CheckedTask, bool), ApiError> {
    let Submitted {
        mut task,
        generated,
        callback_url,
    } = submitted;
    for _ in 0..GENERATED_ID_TRIES {
        let callbacks = callback_url
            .iter()
            .map(|url| (task.spec.task_id.clone(), url.clone()))
            .collect();
        let fresh = state
            .submit(vec![task.spec.clone()], callbacks, tenant.clone())
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
fn validate(body: &[u8], rules: &IntakeRules) -> Result<Submitted, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let wasm_exec_task::Object(sub): wasm_exec_task::Object<Submission> =
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        ApiError::bad(
            field,
            format!(
                "{}; expected {{\"task_id\"?, \"wasm_cid\", \"entry\"?, \"input\"?, \"limits\"?, \
                 \"callback_url\"?}}",
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
    if let Some(url) = &sub.callback_url {
        crate::webhook::sign::check_url(url).map_err(|e| ApiError::bad("callback_url", e))?;
    }
    let spec = TaskSpec {
        task_id: sub.task_id.unwrap_or_else(new_task_id),
        wasm_cid: sub.wasm_cid,
        entry: sub.entry,
        input: sub.input,
        limits: sub.limits,
        cache: sub.cache.unwrap_or(true),
    };
    let task = spec
        .check(rules)
        .map_err(|e| ApiError::bad(&e.field, e.message))?;
    Ok(Submitted {
        task,
        generated,
        callback_url: sub.callback_url,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::API_ORIGIN;
    use crate::state::redb::RedbStore;
    use serde_json::json;
    use std::collections::HashSet;

    #[test]
    fn integers_too_long_to_keep_exactly_are_refused_and_strings_and_floats_pass() {
        let refused = br#"{"wasm_cid": "fib.wasm", "input": [123456789012345678901234567890]}"#;
        let e = format!("{:?}", refuse_inexact_integers(refused).unwrap_err());
        assert!(e.contains("30 digits"), "{e}");
        let just_over = br#"{"input": [18446744073709551616]}"#;
        assert!(refuse_inexact_integers(just_over).is_err());
        for fine in [
            &br#"{"input": ["123456789012345678901234567890", 18446744073709551615]}"#[..],
            br#"{"input": [1.2345678901234567890123, 1e300, -9223372036854775808]}"#,
            br#"{"wasm_cid": "a\"123456789012345678901234567890"}"#,
        ] {
            assert!(
                refuse_inexact_integers(fine).is_ok(),
                "{}",
                String::from_utf8_lossy(fine)
            );
        }
    }

    #[test]
    fn limits_are_an_object_never_an_array_of_its_fields() {
        let rules = IntakeRules::default();
        let e = format!(
            "{:?}",
            read_body(br#"[null, "fib.wasm", null, [12]]"#, &rules).unwrap_err()
        );
        assert!(e.contains("expected an object"), "{e}");
        let body = |limits: &str| {
            format!(r#"{{"wasm_cid": "fib.wasm", "input": [12], "limits": {limits}}}"#)
        };
        let e = format!(
            "{:?}",
            read_body(body("[null, null]").as_bytes(), &rules).unwrap_err()
        );
        assert!(e.contains("\"limits\"") && e.contains("an object"), "{e}");
        let e = format!(
            "{:?}",
            read_body(body(r#"{"fuell": 1}"#).as_bytes(), &rules).unwrap_err()
        );
        assert!(e.contains("fuell"), "{e}");
        let taken = read_body(body(r#"{"fuel": 1000}"#).as_bytes(), &rules).unwrap();
        assert_eq!(taken.task.spec.limits.fuel, Some(1000));
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

        let submitted = |task: &CheckedTask, generated| Submitted {
            task: task.clone(),
            generated,
            callback_url: None,
        };
        let (spec, fresh) =
            admit_submission(&state, submitted(&old, true), None, || "drawn-again".into())
                .await
                .unwrap();
        assert!(fresh, "the submission was answered with the old task");
        assert_eq!(spec.id(), "drawn-again");
        assert!(state.get("drawn-again").unwrap().is_some());

        // An id the submitter chose keeps its meaning: the same body again is the same task.
        let (spec, fresh) =
            admit_submission(&state, submitted(&old, false), None, || unreachable!())
                .await
                .unwrap();
        assert!(!fresh);
        assert_eq!(spec.id(), "taken");
    }
}
