//! What can go wrong talking to Kubernetes, as messages that say what failed and how to fix it.

use std::fmt;
use std::path::PathBuf;

/// Errors of the kubernetes backend that stop it from starting or from running a task.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The Job template cannot be used (`COORDINATOR_JOB_TEMPLATE`).
    #[error("job template COORDINATOR_JOB_TEMPLATE \"{}\" {reason}", path.display())]
    Template {
        /// The template's path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The API server refuses the Job a task gets from the template (sent with `dryRun=All` at
    /// start): its validation or an admission plugin said no.
    #[error(
        "job template COORDINATOR_JOB_TEMPLATE \"{}\" is refused by the API server: {message}; \
         fix the template (checked at start by sending the Job a task gets from it with \
         dryRun=All)",
        path.display()
    )]
    TemplateRefused {
        /// The template's path.
        path: PathBuf,
        /// The API server's message.
        message: String,
    },
    /// No cluster configuration was found.
    #[error(
        "no Kubernetes cluster to talk to ({0}); run the coordinator in a pod with a service \
         account, or point KUBECONFIG (default ~/.kube/config) at a kubeconfig whose current \
         context is the cluster"
    )]
    Connect(String),
    /// An API request failed.
    #[error("{0}")]
    Api(#[from] ApiFailure),
}

/// One API request: the RBAC verb and resource it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// RBAC verb (`create`, `watch`, `get`, `list`, `delete`).
    pub verb: &'static str,
    /// RBAC resource (`jobs`, `configmaps`, `pods`, `pods/log`).
    pub resource: &'static str,
}

impl Call {
    /// A request of `verb` on `resource`.
    pub const fn new(verb: &'static str, resource: &'static str) -> Self {
        Self { verb, resource }
    }
}

/// A failed API request, after any retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// What was asked.
    pub call: Call,
    /// In which namespace.
    pub namespace: String,
    /// The HTTP status, when the API server answered.
    pub code: Option<u16>,
    /// The API server's message, or the transport error.
    pub detail: String,
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// Describes `error`, returned by `call` in `namespace`.
    pub fn new(call: Call, namespace: &str, error: &kube::Error) -> Self {
        let (code, detail) = match error {
            kube::Error::Api(status) => (Some(status.code), status.message.clone()),
            other => (None, other.to_string()),
        };
        Self {
            call,
            namespace: namespace.to_owned(),
            code,
            detail,
        }
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Call { verb, resource } = self.call;
        let ns = &self.namespace;
        match self.code {
            Some(403) => write!(
                f,
                "the coordinator may not {verb} {resource} in namespace \"{ns}\" (403 Forbidden: \
                 {}); grant verb \"{verb}\" on resource \"{resource}\" to its service account's \
                 Role (k8s/coordinator.yaml)",
                self.detail
            ),
            Some(401) => write!(
                f,
                "{verb} {resource} in namespace \"{ns}\": 401 Unauthorized ({}); the credentials \
                 in the kubeconfig or the service account token are not accepted",
                self.detail
            ),
            Some(404) => write!(
                f,
                "{verb} {resource} in namespace \"{ns}\": 404 Not Found ({}); check that \
                 COORDINATOR_NAMESPACE names an existing namespace",
                self.detail
            ),
            Some(code) => write!(
                f,
                "{verb} {resource} in namespace \"{ns}\": HTTP {code} ({})",
                self.detail
            ),
            None => write!(
                f,
                "{verb} {resource} in namespace \"{ns}\": the Kubernetes API did not answer ({}); \
                 check that the cluster is up and reachable from the coordinator",
                self.detail
            ),
        }
    }
}

/// True for failures worth retrying: 429, 5xx, timeouts and connection errors.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// True when the API server did not answer at all (connection refused or reset, the stream cut
/// off): it is down or restarting, so waiting for it is worth longer than for an error reply.
pub fn no_answer(error: &kube::Error) -> bool {
    matches!(
        error,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

/// The wait the API server asked for with its error (`details.retryAfterSeconds` of the Status,
/// which [`crate::throttle`] fills from a 429's `Retry-After` header), if any.
pub fn retry_after(error: &kube::Error) -> Option<std::time::Duration> {
    match error {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|secs| *secs > 0)
            .map(|secs| std::time::Duration::from_secs(u64::from(secs))),
        _ => None,
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16, message: &str) -> kube::Error {
        let mut status = Status::failure(message, "");
        status.code = code;
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn forbidden_names_the_missing_verb_and_resource() {
        let e = api_error(403, "jobs.batch is forbidden");
        let text = ApiFailure::new(Call::new("create", "jobs"), "tasks", &e).to_string();
        for part in [
            "may not create jobs",
            "\"tasks\"",
            "verb \"create\"",
            "\"jobs\"",
            "Role",
        ] {
            assert!(text.contains(part), "{part:?} missing in {text}");
        }
    }

    #[test]
    fn only_server_side_and_throttling_errors_are_transient() {
        for code in [429, 500, 502, 503, 504] {
            assert!(is_transient(&api_error(code, "x")), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!is_transient(&api_error(code, "x")), "{code}");
        }
        assert_eq!(status_code(&api_error(409, "exists")), Some(409));
    }
}
