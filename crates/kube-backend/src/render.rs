//! The objects of one task: the ConfigMap holding the module and input, and the Job built from
//! the operator's template (`k8s/job.yaml`).
//!
//! The template owns what an operator tunes (resources, node selectors, tolerations, security
//! context); the coordinator fills in what is per task (name, labels, image, volumes, mounts,
//! env) and adds safe defaults where the template says nothing. Two template volumes are opt-in
//! and kept: [`CACHE_VOLUME`], a compiled-module cache the Jobs of a node share, and
//! [`CACHE_KEY_VOLUME`], the Secret holding its key (docs/KUBERNETES.md).

use super::errors::KubeError;
use super::names::{MANAGED_BY_KEY, MANAGED_BY_VALUE, TASK_ID_ANNOTATION, TASK_LABEL, TaskNames};
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{
    Job, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    KeyToPath, PodSecurityContext, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::path::Path;
use wasm_exec_task::{ErrorKind, TaskSpec};

/// Key of the module in the ConfigMap's `binaryData`.
pub const MODULE_KEY: &str = "module.wasm";
/// Key of the input document in the ConfigMap's `data`.
pub const INPUT_KEY: &str = "input.json";
/// Where the executor finds the module.
pub const WASM_PATH: &str = "/mnt/wasm/module.wasm";
/// Where the executor finds the input document.
pub const INPUT_PATH: &str = "/mnt/input/input.json";
/// Where the executor writes the result file (an `emptyDir`).
pub const OUTPUT_PATH: &str = "/mnt/shared/result.json";
/// Where the executor writes the compact result for the pod status (the kubelet's default).
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The most a ConfigMap may hold: keys plus values, `data` and `binaryData` (API server rule).
pub const CONFIG_MAP_LIMIT: usize = 1 << 20;
/// The fixed non-root uid and gid the executor runs as (the image's `nonroot` user).
pub const RUN_AS: i64 = 65532;
/// The name of the executor's container in the template; without one, the first container is
/// the executor's. Its status, not the first one listed (kubelets sort them by name), is read.
pub const EXECUTOR_CONTAINER: &str = "executor";
/// Seconds a finished Job is kept if the coordinator never deletes it (a crash): a safety net.
pub const TTL_AFTER_FINISHED: i32 = 600;
/// The template's opt-in volume for the compiled-module cache (usually a hostPath, so every Job
/// on a node shares it); kept as the template declares it and mounted at [`CACHE_MOUNT`].
pub const CACHE_VOLUME: &str = "wasm-cache";
/// Where the cache volume is mounted in the executor's container.
pub const CACHE_MOUNT: &str = "/var/cache/wasm-exec";
/// `WASM_CACHE_DIR` when the cache volume is there: a directory the executor creates (mode 0700)
/// in the volume. Without [`CACHE_KEY_VOLUME`] its key is `compiled.key` beside it, made by the
/// first executor on the node.
pub const CACHE_DIR: &str = "/var/cache/wasm-exec/compiled";
/// The template's opt-in Secret volume holding the cache key (key `key`), shared by every node.
pub const CACHE_KEY_VOLUME: &str = "wasm-cache-key";
/// Where the key's Secret is mounted, read-only.
pub const CACHE_KEY_MOUNT: &str = "/etc/wasm-exec/cache-key";
/// `WASM_CACHE_KEY_FILE` when the key's Secret is mounted.
pub const CACHE_KEY_FILE: &str = "/etc/wasm-exec/cache-key/key";

/// What is per task besides its id: the limits after the coordinator's defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// Executor image.
    pub image: String,
    /// Wall-clock limit, in seconds (`TIMEOUT_SEC`).
    pub timeout_sec: f64,
    /// Linear memory limit, in MiB (`MAX_MEMORY_MB`).
    pub max_memory_mb: u64,
    /// Bytes of stdout, and of stderr, kept in the result (`MAX_OUTPUT_BYTES`).
    pub max_output_bytes: usize,
    /// Instruction budget (`FUEL`), if any.
    pub fuel: Option<u64>,
    /// Seconds the Job may take beyond `timeout_sec` (scheduling, image pull, start) before
    /// Kubernetes stops it: `activeDeadlineSeconds` = timeout + this, unless the template sets it.
    pub start_allowance_sec: u64,
}

/// The operator's Job template, parsed and checked once at start.
#[derive(Debug, Clone)]
pub struct JobTemplate {
    job: Job,
}

impl JobTemplate {
    /// Reads and checks the template at `path` (`COORDINATOR_JOB_TEMPLATE`).
    pub fn load(path: &Path) -> Result<Self, KubeError> {
        let text = std::fs::read_to_string(path).map_err(|e| KubeError::Template {
            path: path.to_path_buf(),
            reason: format!("cannot be read: {e}"),
        })?;
        Self::parse(&text).map_err(|reason| KubeError::Template {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a template: one `batch/v1` Job with at least one container (the executor's).
    pub fn parse(text: &str) -> Result<Self, String> {
        let job: Job = serde_saphyr::from_str(text)
            .map_err(|e| format!("is not a batch/v1 Job manifest: {e}"))?;
        // The typed Job drops keys it does not know; say so rather than run without them.
        let raw: serde_json::Value = serde_saphyr::from_str(text)
            .map_err(|e| format!("is not a batch/v1 Job manifest: {e}"))?;
        let typed = serde_json::to_value(&job).map_err(|e| format!("cannot be encoded: {e}"))?;
        let unknown = super::validate::unknown_fields(&raw, &typed);
        if !unknown.is_empty() {
            return Err(format!(
                "has fields the Kubernetes API does not know: {}; check their spelling and \
                 place against the batch/v1 Job reference",
                unknown.join(", ")
            ));
        }
        let has_container = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .is_some_and(|p| !p.containers.is_empty());
        if !has_container {
            return Err(
                "has no container: spec.template.spec.containers must name the executor's".into(),
            );
        }
        check_cache_volumes(&job)?;
        Ok(Self { job })
    }

    /// The name of the executor's container: [`EXECUTOR_CONTAINER`] if the template has one so
    /// named, else the first container's.
    pub fn executor(&self) -> &str {
        let containers = self
            .job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers.as_slice())
            .unwrap_or_default();
        containers
            .iter()
            .find(|c| c.name == EXECUTOR_CONTAINER)
            .or(containers.first())
            .map_or(EXECUTOR_CONTAINER, |c| c.name.as_str())
    }

    /// The Job for one task (see the module doc for who owns which field).
    pub fn render(&self, task: &TaskSpec, names: &TaskNames, run: &RunSettings) -> Job {
        let mut job = self.job.clone();
        job.metadata = ObjectMeta {
            name: Some(names.job.clone()),
            labels: Some(labels(job.metadata.labels.take(), names)),
            annotations: Some(annotations(job.metadata.annotations.take(), names)),
            ..ObjectMeta::default()
        };
        let spec = job.spec.get_or_insert_with(Default::default);
        spec.backoff_limit.get_or_insert(0);
        spec.ttl_seconds_after_finished
            .get_or_insert(TTL_AFTER_FINISHED);
        spec.active_deadline_seconds
            .get_or_insert(run.timeout_sec.ceil() as i64 + run.start_allowance_sec as i64);
        let executor = self.executor().to_owned();
        spec.pod_failure_policy
            .get_or_insert_with(|| deterministic_failures(&executor));
        let meta = spec.template.metadata.get_or_insert_with(Default::default);
        meta.labels = Some(labels(meta.labels.take(), names));
        let pod = spec.template.spec.get_or_insert_with(Default::default);
        pod.restart_policy.get_or_insert_with(|| "Never".into());
        pod.automount_service_account_token.get_or_insert(false);
        harden_pod(pod.security_context.get_or_insert_with(Default::default));
        let cache = CacheVolumes::kept(pod.volumes.take().unwrap_or_default());
        let mut all = volumes(&names.job);
        all.extend(cache.volumes.iter().cloned());
        pod.volumes = Some(all);
        if let Some(container) = pod.containers.iter_mut().find(|c| c.name == executor) {
            fill_container(container, task, run, &cache);
        }
        job
    }
}

/// The template's opt-in cache volumes, which the Job keeps as declared.
struct CacheVolumes {
    /// [`CACHE_VOLUME`], then [`CACHE_KEY_VOLUME`], those of them the template declares.
    volumes: Vec<Volume>,
}

impl CacheVolumes {
    /// The cache volumes among the template's `volumes` (the rest are replaced per task).
    fn kept(volumes: Vec<Volume>) -> Self {
        let mut kept: Vec<Volume> = volumes
            .into_iter()
            .filter(|v| v.name == CACHE_VOLUME || v.name == CACHE_KEY_VOLUME)
            .collect();
        kept.sort_by_key(|v| v.name != CACHE_VOLUME);
        Self { volumes: kept }
    }

    fn has(&self, name: &str) -> bool {
        self.volumes.iter().any(|v| v.name == name)
    }

    /// The executor's mounts of the kept volumes: name, path, read-only.
    fn mounts(&self) -> impl Iterator<Item = (&'static str, &'static str, bool)> {
        [
            (CACHE_VOLUME, CACHE_MOUNT, false),
            (CACHE_KEY_VOLUME, CACHE_KEY_MOUNT, true),
        ]
        .into_iter()
        .filter(|(name, ..)| self.has(name))
    }

    /// The executor's variables that point at them.
    fn env(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            (CACHE_VOLUME, ("WASM_CACHE_DIR", CACHE_DIR)),
            (CACHE_KEY_VOLUME, ("WASM_CACHE_KEY_FILE", CACHE_KEY_FILE)),
        ]
        .into_iter()
        .filter(|(volume, _)| self.has(volume))
        .map(|(_, var)| var)
    }
}

/// A key volume needs the cache volume, and must be a Secret: the key then never appears in a
/// Job spec (the coordinator names the Secret; the kubelet mounts it).
fn check_cache_volumes(job: &Job) -> Result<(), String> {
    let volumes = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.volumes.as_deref())
        .unwrap_or_default();
    let named = |name: &str| volumes.iter().find(|v| v.name == name);
    let Some(key) = named(CACHE_KEY_VOLUME) else {
        return Ok(());
    };
    if named(CACHE_VOLUME).is_none() {
        return Err(format!(
            "has the volume {CACHE_KEY_VOLUME} but no {CACHE_VOLUME}: the key is only used by a \
             compiled-module cache; add the {CACHE_VOLUME} volume (docs/KUBERNETES.md, \
             \"Compiled modules shared on a node\") or remove the key"
        ));
    }
    if key.secret.is_none() {
        return Err(format!(
            "has the volume {CACHE_KEY_VOLUME} that is not a Secret: the cache key must come \
             from a Secret (secret.secretName), so that it is never written in a Job spec"
        ));
    }
    Ok(())
}

/// The ConfigMap of one task, owned by its Job so the garbage collector removes it with the Job.
///
/// Fails with `module_too_large` when module and input do not fit in a ConfigMap.
pub fn config_map(
    task: &TaskSpec,
    names: &TaskNames,
    module: &[u8],
    owner: OwnerReference,
) -> Result<ConfigMap, (ErrorKind, String)> {
    let input = task.input_text();
    check_size(module.len(), input.len())?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(names.job.clone()),
            labels: Some(labels(None, names)),
            annotations: Some(annotations(None, names)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(
            MODULE_KEY.to_owned(),
            ByteString(module.to_vec()),
        )])),
        data: Some(BTreeMap::from([(INPUT_KEY.to_owned(), input)])),
        immutable: Some(true),
    })
}

/// Fails, before anything is created, when the ConfigMap would exceed [`CONFIG_MAP_LIMIT`].
pub fn check_size(module_len: usize, input_len: usize) -> Result<(), (ErrorKind, String)> {
    let total = MODULE_KEY.len() + module_len + INPUT_KEY.len() + input_len;
    if total > CONFIG_MAP_LIMIT {
        return Err((
            ErrorKind::ModuleTooLarge,
            format!(
                "module ({module_len} bytes) and input ({input_len} bytes) do not fit in a \
                 Kubernetes ConfigMap, which holds at most {CONFIG_MAP_LIMIT} bytes (1 MiB) in \
                 all; run this task on the local backend or shrink the module"
            ),
        ));
    }
    Ok(())
}

/// The owner reference that ties the ConfigMap to its Job.
pub fn owner_reference(job_name: &str, job_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job_name.into(),
        uid: job_uid.into(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

fn labels(base: Option<BTreeMap<String, String>>, names: &TaskNames) -> BTreeMap<String, String> {
    let mut labels = base.unwrap_or_default();
    labels.insert(MANAGED_BY_KEY.into(), MANAGED_BY_VALUE.into());
    labels.insert(TASK_LABEL.into(), names.task_hash.clone());
    labels
}

fn annotations(
    base: Option<BTreeMap<String, String>>,
    names: &TaskNames,
) -> BTreeMap<String, String> {
    let mut annotations = base.unwrap_or_default();
    annotations.insert(TASK_ID_ANNOTATION.into(), names.task_id.clone());
    annotations
}

/// Ignore pods lost to a disruption (eviction, preemption, node drain: the `DisruptionTarget`
/// condition), which run again in a new pod; else fail the Job at once on the executor's
/// deterministic exit codes (running again gives the same failure). The job controller applies
/// the first rule that matches, so the disruption comes first: an evicted executor may exit with
/// any code. The exit codes are the executor container's only: a sidecar's mean nothing here.
fn deterministic_failures(executor: &str) -> PodFailurePolicy {
    let mut codes: Vec<i32> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_deterministic())
        .map(ErrorKind::exit_code)
        .collect();
    codes.sort_unstable();
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
            },
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(executor.to_owned()),
                    operator: "In".into(),
                    values: codes,
                }),
                on_pod_conditions: None,
            },
        ],
    }
}

fn harden_pod(ctx: &mut PodSecurityContext) {
    ctx.run_as_non_root.get_or_insert(true);
    ctx.run_as_user.get_or_insert(RUN_AS);
    ctx.run_as_group.get_or_insert(RUN_AS);
    ctx.seccomp_profile.get_or_insert_with(|| SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    });
}

fn harden_container(ctx: &mut SecurityContext) {
    ctx.read_only_root_filesystem.get_or_insert(true);
    ctx.allow_privilege_escalation.get_or_insert(false);
    ctx.capabilities.get_or_insert_with(|| Capabilities {
        add: None,
        drop: Some(vec!["ALL".into()]),
    });
}

/// Two views of the task's ConfigMap (module, input) and a scratch `emptyDir` for the result.
fn volumes(config_map: &str) -> Vec<Volume> {
    let item = |name: &str, key: &str| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: key.into(),
                mode: None,
            }]),
            default_mode: None,
            optional: Some(false),
        }),
        ..Volume::default()
    };
    vec![
        item("wasm", MODULE_KEY),
        item("input", INPUT_KEY),
        Volume {
            name: "shared".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity("64Mi".into())),
            }),
            ..Volume::default()
        },
    ]
}

/// The template's variables never passed on (see [`fill_container`]).
const DROPPED: [&str; 3] = ["ARGS_JSON", "WASM_CACHE_DIR", "WASM_CACHE_KEY_FILE"];

fn fill_container(
    container: &mut Container,
    task: &TaskSpec,
    run: &RunSettings,
    cache: &CacheVolumes,
) {
    container.image = Some(run.image.clone());
    container.termination_message_path = Some(TERMINATION_MESSAGE_PATH.into());
    container.termination_message_policy = Some("FallbackToLogsOnError".into());
    harden_container(
        container
            .security_context
            .get_or_insert_with(Default::default),
    );
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount("wasm", "/mnt/wasm", true),
        mount("input", "/mnt/input", true),
        mount("shared", "/mnt/shared", false),
    ];
    mounts.extend(
        cache
            .mounts()
            .map(|(name, path, read_only)| mount(name, path, read_only)),
    );
    container.volume_mounts = Some(mounts);
    let mut ours = vec![
        ("WASM_PATH", WASM_PATH.to_owned()),
        ("INPUT_PATH", INPUT_PATH.to_owned()),
        ("OUTPUT_PATH", OUTPUT_PATH.to_owned()),
        ("TIMEOUT_SEC", run.timeout_sec.to_string()),
        ("MAX_MEMORY_MB", run.max_memory_mb.to_string()),
        ("MAX_OUTPUT_BYTES", run.max_output_bytes.to_string()),
        (
            "TERMINATION_MESSAGE_PATH",
            TERMINATION_MESSAGE_PATH.to_owned(),
        ),
    ];
    if let Some(entry) = &task.entry {
        ours.push(("ENTRY", entry.clone()));
    }
    if let Some(fuel) = run.fuel {
        ours.push(("FUEL", fuel.to_string()));
    }
    ours.extend(cache.env().map(|(name, value)| (name, value.to_owned())));
    // The template's other variables (RUST_LOG, ...) stay; ours replace any of the same name,
    // and the demo's ARGS_JSON would conflict with INPUT_PATH, so it goes too; so do cache paths
    // without their volume, which would point into the read-only root file system.
    let mut env: Vec<EnvVar> = container
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !DROPPED.contains(&v.name.as_str()) && !ours.iter().any(|(n, _)| *n == v.name))
        .collect();
    env.extend(ours.into_iter().map(|(name, value)| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }));
    container.env = Some(env);
}

#[cfg(test)]
mod tests;
