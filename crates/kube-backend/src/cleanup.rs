//! Removing what the backend created: a task's Job when it is done (its pods and ConfigMap go
//! with it), and, at start, the Jobs and ConfigMaps left by a crash that no unfinished task needs.

use super::errors::{ApiFailure, Call, status_code};
use super::names::{TASK_ID_ANNOTATION, managed_selector};
use super::retry::RetryPolicy;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams};
use kube::core::Resource;
use std::collections::HashSet;
use tracing::info;

/// Deletes `name` with background propagation: the Job goes at once, the garbage collector
/// removes its pods and ConfigMap. A Job already gone counts as deleted.
pub async fn delete_job(
    jobs: &Api<Job>,
    name: &str,
    namespace: &str,
    retry: RetryPolicy,
) -> Result<(), ApiFailure> {
    let params = DeleteParams::background();
    match retry
        .run("deleting a Job", || jobs.delete(name, &params))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(ApiFailure::new(Call::new("delete", "jobs"), namespace, &e)),
    }
}

/// What the start-up clean-up removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Jobs deleted.
    pub jobs: usize,
    /// ConfigMaps deleted.
    pub config_maps: usize,
}

/// Deletes the managed Jobs and ConfigMaps that belong to no task in `unfinished`; a ConfigMap
/// of an unfinished task goes too when its Job is gone (it is made again with the new Job).
pub async fn remove_orphans(
    jobs: &Api<Job>,
    config_maps: &Api<ConfigMap>,
    namespace: &str,
    unfinished: &[String],
    retry: RetryPolicy,
) -> Result<Removed, ApiFailure> {
    let keep: HashSet<&str> = unfinished.iter().map(String::as_str).collect();
    let params = ListParams::default().labels(&managed_selector());
    let listed = retry
        .run("listing Jobs", || jobs.list(&params))
        .await
        .map_err(|e| ApiFailure::new(Call::new("list", "jobs"), namespace, &e))?;
    let mut removed = Removed::default();
    let mut kept_jobs = HashSet::new();
    for job in &listed.items {
        let name = job.meta().name.clone().unwrap_or_default();
        if keep.contains(task_id(job)) {
            kept_jobs.insert(name);
            continue;
        }
        delete_job(jobs, &name, namespace, retry).await?;
        removed.jobs += 1;
    }
    let listed = retry
        .run("listing ConfigMaps", || config_maps.list(&params))
        .await
        .map_err(|e| ApiFailure::new(Call::new("list", "configmaps"), namespace, &e))?;
    let plain = DeleteParams::default();
    for map in &listed.items {
        let name = map.meta().name.clone().unwrap_or_default();
        if keep.contains(task_id(map)) && kept_jobs.contains(&name) {
            continue;
        }
        let deleted = retry
            .run("deleting a ConfigMap", || config_maps.delete(&name, &plain))
            .await;
        match deleted {
            Ok(_) => removed.config_maps += 1,
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => {
                return Err(ApiFailure::new(
                    Call::new("delete", "configmaps"),
                    namespace,
                    &e,
                ));
            }
        }
    }
    if removed != Removed::default() {
        info!(
            jobs = removed.jobs,
            config_maps = removed.config_maps,
            "removed Kubernetes objects no unfinished task needs"
        );
    } else if !kept_jobs.is_empty() {
        info!(
            jobs = kept_jobs.len(),
            "Jobs of unfinished tasks kept, to adopt"
        );
    }
    Ok(removed)
}

/// The task id an object was made for (empty if the annotation is missing).
fn task_id<K: Resource>(object: &K) -> &str {
    object
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(TASK_ID_ANNOTATION))
        .map_or("", String::as_str)
}
