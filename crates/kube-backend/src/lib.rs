//! The kubernetes backend: each task runs as a hardened Job built from the operator's template,
//! tracked by watch, its result read from the pod, and the Job deleted, whatever happened.
//!
//! Per task, in the success path, 5 requests (6 when the result must come from the log):
//! create Job, create ConfigMap (owned by the Job), watch the Job, watch its pod, delete the Job.
//! The Job is created first so the ConfigMap can name it as owner (the garbage collector then
//! removes it with the Job); the pod waits for its ConfigMap volume meanwhile, which the
//! coordinator creates a few milliseconds later, before the pod is even scheduled as a rule.
//!
//! # Layout
//! - [`names`]: deterministic names and labels from the task id.
//! - [`render`]: the Job (from the template) and the ConfigMap of a task.
//! - [`watch`] and [`track`]: waiting for the Job by watch, and the phases of the wait.
//! - `pod`: what one pod status says (the executor's container found by name).
//! - `refusal`: a pod the cluster refuses to create, seen in the Job's `FailedCreate` events.
//! - [`result`]: the result document, from the termination message or the log.
//! - [`cleanup`]: deleting a task's Job; removing orphans at start.
//! - `settle`: how the wait's end becomes the task's result document.
//! - [`validate`]: the template checked at start: unknown fields, then a dry run.
//! - [`retry`] and [`errors`]: bounded retries and messages that say how to fix a failure;
//!   [`throttle`]: the wait a throttling API server asks for (`Retry-After`), kept for retries.

pub mod cleanup;
pub mod errors;
pub mod names;
mod pod;
mod refusal;
pub mod render;
pub mod result;
pub mod retry;
mod settle;
pub mod throttle;
pub mod track;
pub mod validate;
pub mod watch;

use async_trait::async_trait;
use errors::{ApiFailure, Call, KubeError, status_code};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, PostParams, WatchParams};
use kube::{Client, Config};
use names::TaskNames;
use render::{JobTemplate, RunSettings};
use retry::RetryPolicy;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use track::Limits;
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_task::{CheckedTask, ErrorKind, ResultEnvelope, TaskSpec};

/// The backend's settings: the seed's `COORDINATOR_*` variables, waits and retries (a task's
/// limits come resolved with the task).
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Namespace of the Jobs and ConfigMaps (`COORDINATOR_NAMESPACE`).
    pub namespace: String,
    /// Executor image (`COORDINATOR_EXECUTOR_IMAGE`).
    pub image: String,
    /// Job template (`COORDINATOR_JOB_TEMPLATE`).
    pub job_template: PathBuf,
    /// Time a Job gets beyond the task's timeout to be scheduled, pull and start (120 s).
    pub start_allowance: Duration,
    /// Time the coordinator waits beyond the Job's `activeDeadlineSeconds` (30 s).
    pub deadline_grace: Duration,
    /// How long a pod may stay unschedulable before its task fails (60 s); a pod that lacks only
    /// room waits on while this backend's other tasks end (`track::waits_for_room`).
    pub unschedulable_grace: Duration,
    /// How long after its Job's creation no pod may be seen before the Job's `FailedCreate`
    /// events are watched too (3 s; the job controller creates a pod well within it).
    pub pod_create_grace: Duration,
    /// How long to wait for the pod's last status after the Job ended (5 s).
    pub pod_lag: Duration,
    /// Retries of API requests.
    pub retry: RetryPolicy,
}

impl KubernetesSettings {
    /// Settings with the default waits and retries.
    pub fn new(namespace: &str, image: &str, job_template: PathBuf) -> Self {
        Self {
            namespace: namespace.to_owned(),
            image: image.to_owned(),
            job_template,
            start_allowance: Duration::from_secs(120),
            deadline_grace: Duration::from_secs(30),
            unschedulable_grace: Duration::from_secs(60),
            pod_create_grace: Duration::from_secs(3),
            pod_lag: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// Runs each task as a Kubernetes Job.
#[derive(Clone)]
pub struct KubernetesBackend {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KubernetesSettings,
    template: JobTemplate,
    jobs: Api<Job>,
    pods: Api<Pod>,
    config_maps: Api<ConfigMap>,
    events: Api<Event>,
    /// Cancelled when the coordinator stops waiting for running tasks: their Jobs are deleted
    /// and the tasks left unfinished, to run again after a restart.
    abandon: CancellationToken,
    /// One child of `abandon` per running task, cancelled by [`Backend::cancel`]: the task's
    /// wait ends and its Job is deleted (background propagation) as at a shutdown.
    stops: std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>,
    /// Counts the tasks that ended: a pod waiting for room keeps waiting while it moves.
    progress: tokio::sync::watch::Sender<u64>,
}

impl KubernetesBackend {
    /// Loads the template, then connects the way kube-rs does (`KUBECONFIG` or
    /// `~/.kube/config`, else the in-cluster service account), logs which cluster it uses, and
    /// has the API server check the template ([`Self::check_template`]).
    pub async fn connect(
        settings: KubernetesSettings,
        abandon: CancellationToken,
    ) -> Result<Self, KubeError> {
        let template = JobTemplate::load(&settings.job_template)?;
        let mut config = Config::infer()
            .await
            .map_err(|e| KubeError::Connect(e.to_string()))?;
        // Our own bounded retry covers every request; kube's default one would retry up to 15
        // times on top of it.
        config.default_retry = false;
        info!(cluster = %config.cluster_url, namespace = %settings.namespace, "kubernetes backend: using this cluster");
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| KubeError::Connect(e.to_string()))?
            .with_layer(&throttle::RetryAfterLayer)
            .build();
        let backend = Self::with_client(client, settings, template, abandon);
        backend.check_template().await?;
        Ok(backend)
    }

    /// Sends the Job a task gets from the template with `dryRun=All` (one request), so that
    /// a template the API server refuses stops the start with its message, not every task.
    pub async fn check_template(&self) -> Result<(), KubeError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        validate::dry_run(
            &inner.jobs,
            &inner.template,
            &settings.job_template,
            &settings.image,
            &settings.namespace,
            settings.retry,
        )
        .await
    }

    /// A backend over `client` (tests give a mocked API service).
    pub fn with_client(
        client: Client,
        settings: KubernetesSettings,
        template: JobTemplate,
        abandon: CancellationToken,
    ) -> Self {
        let ns = settings.namespace.as_str();
        Self {
            inner: Arc::new(Inner {
                jobs: Api::namespaced(client.clone(), ns),
                pods: Api::namespaced(client.clone(), ns),
                events: Api::namespaced(client.clone(), ns),
                config_maps: Api::namespaced(client, ns),
                settings,
                template,
                abandon,
                stops: std::sync::Mutex::default(),
                progress: tokio::sync::watch::Sender::new(0),
            }),
        }
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    async fn run(&self, task: &CheckedTask, module: Arc<Vec<u8>>) -> ResultEnvelope {
        let started = Instant::now();
        let result = self.inner.run(task, &module).await;
        if let Some(phases) = result.phases {
            let waited = phases.scheduling_ms + phases.starting_ms + phases.running_ms;
            let overhead_ms = (started.elapsed().as_secs_f64() * 1e3 - waited).max(0.0);
            info!(
                overhead_ms,
                scheduling_ms = phases.scheduling_ms,
                starting_ms = phases.starting_ms,
                running_ms = phases.running_ms,
                "job finished"
            );
        }
        result
    }

    async fn cancel(&self, task_id: &str) {
        info!(task_id, "cancelling the task: its Job is deleted");
        self.inner.stop(task_id).cancel();
    }

    async fn reconcile(&self, unfinished: &[String]) -> anyhow::Result<()> {
        let inner = &self.inner;
        let ns = &inner.settings.namespace;
        cleanup::remove_orphans(
            &inner.jobs,
            &inner.config_maps,
            ns,
            unfinished,
            inner.settings.retry,
        )
        .await?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }
}

impl Inner {
    /// The token that stops the task's wait (made on first use: a cancel may come first).
    fn stop(&self, task_id: &str) -> CancellationToken {
        let mut stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        stops
            .entry(task_id.to_owned())
            .or_insert_with(|| self.abandon.child_token())
            .clone()
    }

    async fn run(&self, checked: &CheckedTask, module: &[u8]) -> ResultEnvelope {
        let stop = self.stop(&checked.spec.task_id);
        let result = self.run_until(checked, module, &stop).await;
        let mut stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        stops.remove(&checked.spec.task_id);
        result
    }

    async fn run_until(
        &self,
        checked: &CheckedTask,
        module: &[u8],
        stop: &CancellationToken,
    ) -> ResultEnvelope {
        let task = &checked.spec;
        let names = TaskNames::for_task(&task.task_id);
        if let Err((kind, message)) = render::check_size(module.len(), checked.input.text.len()) {
            return ResultEnvelope::failure(kind, message);
        }
        let run = self.run_settings(checked);
        let job = self.template.render(task, &names, &run);
        let spec = job.spec.as_ref();
        let deadline_secs = spec
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or(0)
            .max(0) as u64;
        let retries = spec.and_then(|s| s.backoff_limit).unwrap_or(0) > 0;
        let started = Instant::now();
        let uid = match self.create_or_adopt(&job, &names).await {
            Ok(uid) => uid,
            Err(message) => return ResultEnvelope::failure(ErrorKind::Io, message),
        };
        let mut result = match self.create_config_map(task, &names, module, &uid).await {
            Ok(()) => {
                let limits = Limits {
                    executor: self.template.executor().to_owned(),
                    deadline: started
                        + Duration::from_secs(deadline_secs)
                        + self.settings.deadline_grace,
                    unschedulable_grace: self.settings.unschedulable_grace,
                    progress: self.progress.subscribe(),
                    pod_create_grace: self.settings.pod_create_grace,
                    pod_lag: self.settings.pod_lag,
                    retries,
                };
                let log_bytes = result::log_limit_bytes(checked);
                self.wait_for_result(
                    &names,
                    &uid,
                    limits,
                    (started, deadline_secs),
                    stop,
                    log_bytes,
                )
                .await
            }
            Err(failure) => failure,
        };
        self.progress.send_modify(|ended| *ended += 1);
        let ns = &self.settings.namespace;
        if let Err(e) = cleanup::delete_job(&self.jobs, &names.job, ns, self.settings.retry).await {
            warn!(job = %names.job, error = %e, "the Job could not be deleted; its ttlSecondsAfterFinished or the next start's clean-up will");
        }
        if result.kind() == Some(ErrorKind::Cancelled) {
            result.phases = None;
        }
        result
    }

    /// What the Job's executor is told: the task's limits as the intake check resolved them.
    fn run_settings(&self, task: &CheckedTask) -> RunSettings {
        let limits = &task.limits;
        RunSettings {
            image: self.settings.image.clone(),
            timeout_sec: limits.timeout.as_secs_f64(),
            max_memory_mb: limits.max_memory_mb,
            max_output_bytes: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
            fuel: limits.fuel,
            start_allowance_sec: self.settings.start_allowance.as_secs(),
        }
    }

    /// Creates the Job, or adopts the one a previous run of the coordinator made for this task
    /// (409: the name is taken); returns its uid.
    async fn create_or_adopt(&self, job: &Job, names: &TaskNames) -> Result<String, String> {
        let ns = &self.settings.namespace;
        let retry = self.settings.retry;
        let post = PostParams::default();
        for _ in 0..ADOPT_ATTEMPTS {
            let created = retry
                .run("creating a Job", || self.jobs.create(&post, job))
                .await;
            let existing = match created {
                Ok(job) => return uid_of(&job),
                Err(e) if status_code(&e) == Some(409) => retry
                    .run("reading an existing Job", || self.jobs.get(&names.job))
                    .await
                    .map_err(|e| ApiFailure::new(Call::new("get", "jobs"), ns, &e).to_string())?,
                Err(e) => {
                    return Err(ApiFailure::new(Call::new("create", "jobs"), ns, &e).to_string());
                }
            };
            let owner = existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::TASK_ID_ANNOTATION));
            if owner != Some(&names.task_id) {
                return Err(format!(
                    "a Job named {} already exists in namespace \"{ns}\" for another task ({owner:?}); delete it",
                    names.job
                ));
            }
            if existing.metadata.deletion_timestamp.is_none() {
                info!(job = %names.job, "adopting the Job a previous run made for this task");
                return uid_of(&existing);
            }
            // Deleted a moment ago (by a shutdown): wait for it to go, then make a new one.
            tokio::time::sleep(ADOPT_WAIT).await;
        }
        Err(format!(
            "the Job {} is still being deleted after {} s; run the task again later",
            names.job,
            (ADOPT_WAIT * ADOPT_ATTEMPTS).as_secs()
        ))
    }

    /// Creates the task's ConfigMap owned by the Job `uid` (already there when adopting). On
    /// failure, the result to report.
    async fn create_config_map(
        &self,
        task: &TaskSpec,
        names: &TaskNames,
        module: &[u8],
        uid: &str,
    ) -> Result<(), ResultEnvelope> {
        let owner = render::owner_reference(&names.job, uid);
        let map = render::config_map(task, names, module, owner)
            .map_err(|(kind, message)| ResultEnvelope::failure(kind, message))?;
        let post = PostParams::default();
        match self
            .settings
            .retry
            .run("creating a ConfigMap", || {
                self.config_maps.create(&post, &map)
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => {
                let failure = ApiFailure::new(
                    Call::new("create", "configmaps"),
                    &self.settings.namespace,
                    &e,
                );
                Err(ResultEnvelope::failure(ErrorKind::Io, failure.to_string()))
            }
        }
    }

    async fn wait_for_result(
        &self,
        names: &TaskNames,
        uid: &str,
        limits: Limits,
        (started, deadline_secs): (Instant, u64),
        stop: &CancellationToken,
        log_bytes: i64,
    ) -> ResultEnvelope {
        let ns = &self.settings.namespace;
        let retry = self.settings.retry;
        let mut jobs = watch::Watch::new(
            self.jobs.clone(),
            WatchParams::default().fields(&format!("metadata.name={}", names.job)),
            Call::new("watch", "jobs"),
            ns,
            retry,
        );
        let mut pods = watch::Watch::new(
            self.pods.clone(),
            WatchParams::default().labels(&names.selector()),
            Call::new("watch", "pods"),
            ns,
            retry,
        );
        let mut events = watch::Watch::new(
            self.events.clone(),
            refusal::params(uid),
            Call::new("watch", "events"),
            ns,
            retry,
        );
        let watches = track::Watches {
            jobs: &mut jobs,
            pods: &mut pods,
            events: &mut events,
        };
        let (ended, phases) = track::track(watches, limits, started, stop).await;
        let mut result = self.settle(ended, deadline_secs, log_bytes).await;
        result.phases = Some(phases);
        result
    }
}

/// Tries at making a Job whose predecessor is still being deleted, and the wait between them.
const ADOPT_ATTEMPTS: u32 = 30;
const ADOPT_WAIT: Duration = Duration::from_secs(1);

fn uid_of(job: &Job) -> Result<String, String> {
    job.metadata
        .uid
        .clone()
        .ok_or_else(|| "the API server returned a Job without a uid".to_owned())
}

#[cfg(test)]
mod tests;
