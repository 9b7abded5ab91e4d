//! Error kinds: the stable `kind` of a failed result, and the executor's exit code for each.
//!
//! Kinds are data: add new ones, never rename or reuse one, since results are compared and stored
//! across versions and machines.

use serde::{Deserialize, Serialize};

/// Why a task failed, as a stable snake_case string in the result document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input document or an argument is malformed or does not fit the entry's signature.
    BadInput,
    /// The module does not parse, validate, compile or link (e.g. an unknown import).
    BadModule,
    /// The requested entry function is not exported (the message lists the exports).
    EntryNotFound,
    /// The guest trapped: `unreachable`, out-of-bounds access, division by zero, stack exhausted,
    /// or a WASI command exiting with a non-zero status.
    Trap,
    /// The wall-clock limit (`TIMEOUT_SEC`) ran out.
    Timeout,
    /// The guest asked for more linear memory or table space than the limit allows.
    OutOfMemory,
    /// The instruction budget (`FUEL`) ran out.
    OutOfFuel,
    /// The host could not read or write a file it needs (module, input, output, cache).
    Io,
    /// The module's bytes do not match its CID (coordinator): it was never run.
    Integrity,
    /// No module with that CID could be fetched: unknown to the mirror, or the gateway is down.
    ModuleUnavailable,
    /// The module is larger than the coordinator accepts (`COORDINATOR_MAX_MODULE_MB`), or than
    /// a Kubernetes ConfigMap holds.
    ModuleTooLarge,
    /// The run was stopped before it finished because the coordinator is shutting down
    /// (coordinator): not a result, so the task stays unfinished and runs again after a restart.
    Cancelled,
    /// The process running the task died while it ran, as often as the coordinator allows
    /// (`COORDINATOR_QUARANTINE_AFTER`): the task is quarantined rather than run again, so that a
    /// task that crashes the host cannot make a crash loop (coordinator).
    Crashed,
    /// The host ran short of a local resource (file descriptors, memory for a mapping, threads:
    /// EMFILE, ENFILE, ENOMEM, EAGAIN) while preparing or running the task: not the task's fault
    /// and not a result; the coordinator runs the task again later.
    HostExhausted,
    /// The cluster refused to create the task's pod (Kubernetes backend: the Job's
    /// `FailedCreate` event, from PodSecurity admission, an exhausted ResourceQuota, a missing
    /// ServiceAccount): the task never ran; fix the namespace or the Job template.
    PodRefused,
    /// The task's pod was disrupted (Kubernetes backend: evicted, preempted, its node drained:
    /// the `DisruptionTarget` condition) and its Job ran no other: not the task's failure; it
    /// may run again.
    PodDisrupted,
    /// Someone cancelled the task (`POST /v1/tasks/{id}/cancel`; the task's record says who
    /// and when): a final result, unlike `cancelled`, which a shutdown leaves (coordinator).
    CancelledByRequest,
}

impl ErrorKind {
    /// Every kind, in declaration order (for docs and tests).
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::BadInput,
        ErrorKind::BadModule,
        ErrorKind::EntryNotFound,
        ErrorKind::Trap,
        ErrorKind::Timeout,
        ErrorKind::OutOfMemory,
        ErrorKind::OutOfFuel,
        ErrorKind::Io,
        ErrorKind::Integrity,
        ErrorKind::ModuleUnavailable,
        ErrorKind::ModuleTooLarge,
        ErrorKind::Cancelled,
        ErrorKind::Crashed,
        ErrorKind::HostExhausted,
        ErrorKind::PodRefused,
        ErrorKind::PodDisrupted,
        ErrorKind::CancelledByRequest,
    ];

    /// The snake_case name used in the result document and as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_input",
            ErrorKind::BadModule => "bad_module",
            ErrorKind::EntryNotFound => "entry_not_found",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::OutOfFuel => "out_of_fuel",
            ErrorKind::Io => "io",
            ErrorKind::Integrity => "integrity",
            ErrorKind::ModuleUnavailable => "module_unavailable",
            ErrorKind::ModuleTooLarge => "module_too_large",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Crashed => "crashed",
            ErrorKind::HostExhausted => "host_exhausted",
            ErrorKind::PodRefused => "pod_refused",
            ErrorKind::PodDisrupted => "pod_disrupted",
            ErrorKind::CancelledByRequest => "cancelled_by_request",
        }
    }

    /// The executor's process exit code for this kind.
    ///
    /// 10-19: the task itself is wrong (input, module, entry); 20-29: the guest failed while
    /// running; 30-39: the host failed. The executor never reports 13, 14, 31, 32, 33, 35 or 36 (coordinator
    /// kinds), but every kind has a code so that kinds and codes stay one-to-one. Codes below 30
    /// are deterministic: running the same task again
    /// gives the same failure, so a Job should not retry it (timeout excepted, being wall-clock).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::BadInput => 10,
            ErrorKind::BadModule => 11,
            ErrorKind::EntryNotFound => 12,
            ErrorKind::Trap => 20,
            ErrorKind::Timeout => 21,
            ErrorKind::OutOfMemory => 22,
            ErrorKind::OutOfFuel => 23,
            ErrorKind::Io => 30,
            ErrorKind::Integrity => 13,
            ErrorKind::ModuleTooLarge => 14,
            ErrorKind::ModuleUnavailable => 31,
            ErrorKind::Cancelled => 32,
            ErrorKind::Crashed => 33,
            ErrorKind::HostExhausted => 34,
            ErrorKind::PodRefused => 35,
            ErrorKind::PodDisrupted => 36,
            ErrorKind::CancelledByRequest => 37,
        }
    }

    /// Whether running the same task again is certain to fail the same way.
    pub fn is_deterministic(self) -> bool {
        !matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::Io
                | ErrorKind::ModuleUnavailable
                | ErrorKind::Cancelled
                | ErrorKind::Crashed
                | ErrorKind::HostExhausted
                | ErrorKind::PodRefused
                | ErrorKind::PodDisrupted
                | ErrorKind::CancelledByRequest
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde_and_codes_are_distinct() {
        let mut codes = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert!(
                codes.insert(kind.exit_code()),
                "duplicate exit code for {kind}"
            );
            assert_ne!(kind.exit_code(), 0);
        }
    }
}
