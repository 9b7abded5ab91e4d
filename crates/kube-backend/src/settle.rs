//! How the end of the wait for a Job becomes the task's result document: the executor's own
//! document when a pod ran, else a failure whose kind and message say what happened.

use super::Inner;
use super::result;
use super::track::Ended;
use wasm_exec_task::{ErrorKind, ResultEnvelope};

impl Inner {
    /// The result for a wait that ended as `ended`; `deadline_secs` is the Job's
    /// `activeDeadlineSeconds`, for the messages; `log_bytes` is how much of the pod log may be
    /// read for the document ([`result::log_limit_bytes`]).
    pub(super) async fn settle(
        &self,
        ended: Ended,
        deadline_secs: u64,
        log_bytes: i64,
    ) -> ResultEnvelope {
        let ns = &self.settings.namespace;
        let retry = self.settings.retry;
        match ended {
            Ended::Finished {
                failed,
                reason,
                message,
                pod,
                container,
            } => {
                if failed && reason == "DeadlineExceeded" {
                    ResultEnvelope::failure(
                        ErrorKind::Timeout,
                        format!(
                            "the Job ran past its activeDeadlineSeconds ({deadline_secs} s: the \
                             task's timeout plus time to start) and was stopped ({message}); see \
                             phases for where the time went"
                        ),
                    )
                } else if failed && container.is_none() && pod.is_none() {
                    ResultEnvelope::failure(
                        ErrorKind::Io,
                        format!("the Job failed before any pod ran ({reason}: {message})"),
                    )
                } else {
                    let collector = result::Collector {
                        pods: &self.pods,
                        namespace: ns,
                        executor: self.template.executor(),
                        retry,
                        log_bytes,
                    };
                    collector.collect(pod.as_deref(), container.as_ref()).await
                }
            }
            Ended::Refused(message) => ResultEnvelope::failure(ErrorKind::PodRefused, message),
            Ended::Disrupted(message) => disrupted(&message),
            Ended::Stuck(message) | Ended::Api(message) => {
                ResultEnvelope::failure(ErrorKind::Io, message)
            }
            Ended::Deadline => ResultEnvelope::failure(
                ErrorKind::Timeout,
                format!(
                    "the Job did not finish within its activeDeadlineSeconds ({deadline_secs} s) \
                     plus {} s; see phases for where the time went",
                    self.settings.deadline_grace.as_secs()
                ),
            ),
            Ended::Cancelled => ResultEnvelope::failure(
                ErrorKind::Cancelled,
                "the coordinator stopped before the Job finished; the Job was deleted and the \
                 task runs again after a restart",
            ),
        }
    }
}

/// The result of a task whose Job failed on a disrupted pod.
fn disrupted(message: &str) -> ResultEnvelope {
    ResultEnvelope::failure(
        ErrorKind::PodDisrupted,
        format!(
            "the task's pod was disrupted ({message}); not the task's failure: run it again, and \
             keep the DisruptionTarget rule (action Ignore) first in the Job template's \
             podFailurePolicy so that the Job runs another pod instead"
        ),
    )
}
