//! A pod the cluster refuses to create (PodSecurity admission, an exhausted ResourceQuota, a
//! missing ServiceAccount) shows nowhere in the Job's status: the job controller only records a
//! `FailedCreate` event on the Job and tries again with backoff, until the deadline. So when no
//! pod has appeared a moment after the Job was created, the wait also watches those events.

use super::watch::{Change, Watch};
use k8s_openapi::api::core::v1::Event;
use kube::api::WatchParams;
use tracing::warn;

/// The event reason the job controller records when the API server refuses its pod.
pub const FAILED_CREATE: &str = "FailedCreate";

/// The watch of the `FailedCreate` events of the Job with `uid` (not its name: an earlier Job of
/// the same task, deleted, may have left events of its own).
pub fn params(uid: &str) -> WatchParams {
    WatchParams::default().fields(&format!(
        "involvedObject.kind=Job,involvedObject.uid={uid},reason={FAILED_CREATE}"
    ))
}

/// The task's failure message for a `FailedCreate` event, if `event` is one.
pub fn message(event: &Event) -> Option<String> {
    if event.reason.as_deref() != Some(FAILED_CREATE) {
        return None;
    }
    let said = event.message.as_deref().unwrap_or("no message");
    Some(format!(
        "the cluster refused to create the Job's pod ({FAILED_CREATE}: {said}); the task never \
         ran: fix the namespace (its PodSecurity level, ResourceQuota, ServiceAccount) or the Job \
         template (COORDINATOR_JOB_TEMPLATE: securityContext, resources, serviceAccountName)"
    ))
}

/// The watch of a Job's `FailedCreate` events, opened only when needed.
pub struct Refusals<'a> {
    watch: &'a mut Watch<Event>,
    state: State,
}

/// Whether the events are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not yet: a pod may still appear.
    Closed,
    /// Watched.
    Open,
    /// The watch failed (403 without the `events: watch` permission): the wait goes on without
    /// it, as it did before, and a refused pod ends only at the deadline.
    Unavailable,
}

impl<'a> Refusals<'a> {
    /// Not watching yet.
    pub fn new(watch: &'a mut Watch<Event>) -> Self {
        Self {
            watch,
            state: State::Closed,
        }
    }

    /// True until [`Self::open`] was called.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True while the events are watched.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Starts watching (one request).
    pub async fn open(&mut self) {
        self.state = match self.watch.open().await {
            Ok(()) => State::Open,
            Err(e) => unavailable(&e.to_string()),
        };
    }

    /// The next event: the failure message if it is a refusal. Cancel-safe between events.
    pub async fn next(&mut self) -> Option<String> {
        match self.watch.next().await {
            Ok(Change::Now(event)) => message(&event),
            Ok(Change::Deleted(_)) => None,
            Err(e) => {
                self.state = unavailable(&e.to_string());
                None
            }
        }
    }
}

fn unavailable(error: &str) -> State {
    warn!(
        error,
        "cannot watch the Job's events, so a refused pod is seen only at the deadline; grant \
         watch on events (k8s/coordinator.yaml)"
    );
    State::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_failed_create_is_a_refusal_and_its_message_is_kept() {
        let event = |reason: &str| -> Event {
            serde_json::from_value(json!({"metadata": {"name": "e"},
                "involvedObject": {"kind": "Job", "name": "j"},
                "reason": reason, "message": "exceeded quota: q, requested: pods=1"}))
            .unwrap()
        };
        let text = message(&event("FailedCreate")).unwrap();
        assert!(text.contains("FailedCreate: exceeded quota: q") && text.contains("ResourceQuota"));
        assert!(message(&event("SuccessfulCreate")).is_none());
        assert!(
            params("u-1")
                .field_selector
                .unwrap()
                .contains("involvedObject.uid=u-1")
        );
    }
}
