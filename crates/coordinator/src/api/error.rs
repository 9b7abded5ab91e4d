//! The API's one error type: a status, the field at fault and a message that says what to fix,
//! rendered as `{"error": {...}}` (with `Retry-After` when the client should come back).

use crate::state::WriteFailure;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Seconds a client is asked to wait (`Retry-After`) before trying again.
pub(super) const RETRY_AFTER_SECS: u32 = 5;

/// An API error: status, the field at fault (if one), and a message saying what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
    /// Seconds for a `Retry-After` header, if the client should come back.
    retry_after: Option<u32>,
    /// A stable snake_case kind (a result kind such as `bad_module`), when one applies.
    kind: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status,
            field: field.map(str::to_owned),
            message: message.into(),
            retry_after: None,
            kind: None,
        }
    }

    /// 409 for `what` (its result, its receipt) of task `id`, which has not ended: it is in
    /// `state`; the message names how to wait for it.
    pub(super) fn not_ended(id: &str, what: &str, state: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            Some("task_id"),
            format!(
                "task \"{id}\" has no {what} yet: it is {state}; wait for it with GET \
                 /v1/tasks/{id}?wait=30"
            ),
        )
    }

    pub(super) fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    pub(super) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(super) fn bad(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(field), message)
    }

    /// A failed read of the state store: 503 with `Retry-After` while the store reports failing
    /// writes (it is being reopened, or the disk is full), since the read will work again once
    /// it recovers; 500 otherwise.
    pub(super) fn state_read(e: impl std::fmt::Display, failing: Option<WriteFailure>) -> Self {
        match failing {
            Some(failure) => {
                tracing::warn!(error = %e, "API read failed while the state store recovers");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    format!(
                        "the state store is recovering from a write failure ({}); try again",
                        failure.error
                    ),
                )
                .retry_after(RETRY_AFTER_SECS)
            }
            None => Self::internal(e),
        }
    }

    /// Its status, field and message (a batch item's outcome is made of them).
    pub(super) fn parts(&self) -> (StatusCode, Option<&str>, &str) {
        (self.status, self.field.as_deref(), &self.message)
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "internal error; see the coordinator's log",
        )
    }
}

/// The body of every error answer: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error answer's details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status again.
    pub status: u16,
    /// The field, header or parameter at fault (`wasm_cid`, `Content-Type`, `task_id`), or
    /// `null` when the fault is not one field's.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
    /// A stable snake_case kind, when one applies (`bad_module`, `module_too_large`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                field: self.field,
                message: self.message,
                kind: self.kind,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_while_writes_fail_asks_the_client_to_come_back() {
        let failing = WriteFailure {
            since_ms: 1,
            error: "the state database is being reopened".into(),
        };
        let response = ApiError::state_read("no database", Some(failing)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = ApiError::state_read("a bug", None).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
