//! A task's webhook as its record keeps it: where its result is to be posted, and how the
//! deliveries went. Persisted with the task, so that a restart neither loses a pending delivery
//! nor repeats one that was delivered (see `crate::webhook` for who delivers).

use serde::{Deserialize, Serialize};

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: posted once the task ends, retried while it fails.
    Pending,
    /// The receiver answered 2xx: never posted again.
    Delivered,
    /// Every attempt failed until the retry time ran out (`COORDINATOR_WEBHOOK_GIVE_UP_SEC`).
    GaveUp,
}

/// A task's `callback_url` and the state of its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Callback {
    /// The URL the result is posted to (http or https; checked at submission).
    pub url: String,
    /// Where the delivery is.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt was made, in Unix milliseconds (the retry time counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_ms: Option<u64>,
    /// When the latest attempt was made, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_ms: Option<u64>,
    /// Why the latest attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Callback {
    /// A callback to `url`, not attempted yet.
    pub fn new(url: String) -> Self {
        Self {
            url,
            state: DeliveryState::Pending,
            attempts: 0,
            first_attempt_ms: None,
            last_attempt_ms: None,
            last_error: None,
        }
    }

    /// Records one attempt made at `at_ms`. An attempt on a delivery that is no longer pending
    /// changes nothing: a delivered result stays delivered.
    pub fn record(&mut self, attempt: &Attempt, at_ms: u64) {
        if self.state != DeliveryState::Pending {
            return;
        }
        self.attempts += 1;
        self.first_attempt_ms.get_or_insert(at_ms);
        self.last_attempt_ms = Some(at_ms);
        match attempt {
            Attempt::Delivered => {
                self.state = DeliveryState::Delivered;
                self.last_error = None;
            }
            Attempt::Failed { error } => self.last_error = Some(bounded(error)),
            Attempt::GaveUp { error } => {
                self.state = DeliveryState::GaveUp;
                self.last_error = Some(bounded(error));
            }
        }
    }
}

/// How one delivery attempt went, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; another attempt follows.
    Failed {
        /// Why (the status, or the connection error).
        error: String,
    },
    /// It failed and the retry time is over: no attempt follows.
    GaveUp {
        /// Why the last attempt failed.
        error: String,
    },
}

/// Most bytes of an attempt's error kept in the record.
pub const MAX_ERROR: usize = 512;

/// `error` cut to [`MAX_ERROR`] bytes (at a character boundary).
fn bounded(error: &str) -> String {
    let mut end = error.len().min(MAX_ERROR);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_callback_takes_no_further_attempt_and_errors_are_bounded() {
        let mut callback = Callback::new("http://127.0.0.1:1/hook".into());
        callback.record(
            &Attempt::Failed {
                error: "é".repeat(MAX_ERROR),
            },
            10,
        );
        assert_eq!(callback.state, DeliveryState::Pending);
        assert!(callback.last_error.as_ref().unwrap().len() <= MAX_ERROR);
        callback.record(&Attempt::Delivered, 20);
        callback.record(
            &Attempt::GaveUp {
                error: "late".into(),
            },
            30,
        );
        assert_eq!(callback.state, DeliveryState::Delivered);
        assert_eq!(callback.attempts, 2);
        assert_eq!(
            (callback.first_attempt_ms, callback.last_attempt_ms),
            (Some(10), Some(20))
        );
        assert_eq!(callback.last_error, None);
    }
}
