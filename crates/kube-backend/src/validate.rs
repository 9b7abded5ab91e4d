//! Checking the Job template at start, so that a template Kubernetes would refuse stops the
//! coordinator with the reason instead of failing every task: fields the typed client would
//! silently drop (a misspelt key), then the API server's own validation and admission of the
//! Job a task gets from it, sent with `dryRun=All` (nothing is stored).

use super::errors::{ApiFailure, Call, KubeError};
use super::names::TaskNames;
use super::render::{JobTemplate, RunSettings};
use super::retry::RetryPolicy;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use serde_json::Value;
use std::path::Path;
use wasm_exec_task::TaskSpec;
use wasm_exec_task::limits::{DEFAULT_MEMORY_MB, DEFAULT_OUTPUT_BYTES, DEFAULT_TIMEOUT_SEC};

/// Task id of the Job sent as a dry run (never stored, so it collides with nothing).
const PROBE_TASK: &str = "template-check";

/// The paths of the fields of `raw` (the template as written) that `typed` (the same document
/// after a round trip through k8s-openapi's `Job`) lost: unknown to the Kubernetes API.
pub fn unknown_fields(raw: &Value, typed: &Value) -> Vec<String> {
    let mut lost = Vec::new();
    walk(raw, typed, String::new(), &mut lost);
    lost
}

fn walk(raw: &Value, typed: &Value, path: String, lost: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(raw), Value::Object(typed)) => {
            for (key, value) in raw {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match typed.get(key) {
                    Some(t) => walk(value, t, here, lost),
                    None if value.is_null() => {}
                    None => lost.push(here),
                }
            }
        }
        (Value::Array(raw), Value::Array(typed)) => {
            for (i, (r, t)) in raw.iter().zip(typed).enumerate() {
                walk(r, t, format!("{path}[{i}]"), lost);
            }
        }
        _ => {}
    }
}

/// Sends the Job a task would get from `template` to the API server with `dryRun=All`.
///
/// Fails with [`KubeError::TemplateRefused`] and the server's message when it refuses the Job
/// (400, 422: validation or admission), with [`KubeError::Api`] on other failures (403: RBAC).
pub async fn dry_run(
    jobs: &Api<Job>,
    template: &JobTemplate,
    path: &Path,
    image: &str,
    namespace: &str,
    retry: RetryPolicy,
) -> Result<(), KubeError> {
    let task = TaskSpec::new(PROBE_TASK, "", Value::Null);
    let run = RunSettings {
        image: image.to_owned(),
        timeout_sec: DEFAULT_TIMEOUT_SEC,
        max_memory_mb: DEFAULT_MEMORY_MB,
        max_output_bytes: usize::try_from(DEFAULT_OUTPUT_BYTES).unwrap_or(usize::MAX),
        fuel: None,
        start_allowance_sec: 120,
    };
    let job = template.render(&task, &TaskNames::for_task(PROBE_TASK), &run);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match retry
        .run("checking the Job template (dry run)", || {
            jobs.create(&params, &job)
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
            Err(KubeError::TemplateRefused {
                path: path.to_path_buf(),
                message: status.message,
            })
        }
        Err(e) => Err(ApiFailure::new(Call::new("create", "jobs"), namespace, &e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn misspelt_and_unknown_keys_are_named_with_their_path() {
        let raw = json!({"spec": {"backoffLimit": 0, "templat": {},
            "template": {"spec": {"containers": [{"name": "e", "imagePullPolicyy": "Never"}]}},
            "ignored": null}});
        let typed = json!({"spec": {"backoffLimit": 0,
            "template": {"spec": {"containers": [{"name": "e"}]}}}});
        assert_eq!(
            unknown_fields(&raw, &typed),
            [
                "spec.templat",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
        assert!(unknown_fields(&typed, &typed).is_empty());
    }
}
