//! The suite's real control plane for the coordinator's kubernetes tests: the coordinator's own
//! identity (its ServiceAccount and Role from `k8s/coordinator.yaml`), a template whose pods
//! kwok holds until the test releases them, the test playing the executor for a held pod, and
//! the check that nothing of the coordinator is left.
//!
//! kwok runs no container, so the test plays the executor: each pod's template holds it
//! (`kwok.wasm-exec.io/hold`); the test reads the task's ConfigMap (the module and input the
//! coordinator sent), runs them with the same runtime the executor calls, and patches the pod
//! with the document as its termination message, which releases it.

#![allow(dead_code)] // each test binary uses a different part of this helper

use crate::support::{Service, repo};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_kube_backend::render::{INPUT_KEY, MODULE_KEY};
use wasm_exec_task::{IntakeRules, TaskSpec};
use wasm_exec_test_peers::kube::Cluster;

/// The coordinator's ServiceAccount in `k8s/coordinator.yaml`.
pub const ACCOUNT: &str = "wasm-exec-coordinator";
/// Pod annotation that keeps kwok from finishing the pod (`peers/k8s/kwok.yaml`).
pub const HOLD: &str = "kwok.wasm-exec.io/hold";
/// Pod annotation: the exit code kwok gives the executor container.
pub const EXIT_CODE: &str = "kwok.wasm-exec.io/exit-code";
/// Pod annotation: the termination message kwok gives the executor container.
pub const MESSAGE: &str = "kwok.wasm-exec.io/message";

/// Applies the ServiceAccount, Role and RoleBinding of `k8s/coordinator.yaml` in `namespace` and
/// writes a kubeconfig with a token of that ServiceAccount; returns its path.
pub fn coordinator_identity(cluster: &Cluster, namespace: &str, dir: &Path) -> PathBuf {
    let manifests =
        std::fs::read_to_string(repo("k8s/coordinator.yaml")).expect("k8s/coordinator.yaml");
    let rbac: Vec<&str> = manifests
        .split("\n---")
        .filter(|doc| {
            doc.lines().any(|l| {
                matches!(
                    l.trim(),
                    "kind: ServiceAccount" | "kind: Role" | "kind: RoleBinding"
                )
            })
        })
        .collect();
    assert_eq!(rbac.len(), 3, "k8s/coordinator.yaml's RBAC documents");
    cluster
        .apply(namespace, &rbac.join("\n---\n"))
        .expect("the coordinator's RBAC");
    let token = cluster
        .kubectl(&["create", "token", ACCOUNT, "-n", namespace, "--duration=2h"])
        .expect("a token of the coordinator's ServiceAccount");
    let view = |path: &str| {
        cluster
            .kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                &format!("jsonpath={path}"),
            ])
            .expect("the admin kubeconfig")
    };
    let server = view("{.clusters[0].cluster.server}");
    let ca = view("{.clusters[0].cluster.certificate-authority-data}");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "suite", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": ACCOUNT, "user": {"token": token.trim()}}],
        "contexts": [{"name": "coordinator", "context": {"cluster": "suite", "user": ACCOUNT, "namespace": namespace}}],
        "current-context": "coordinator",
    });
    let path = dir.join("coordinator.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).expect("writing the kubeconfig");
    path
}

/// `k8s/job.yaml` with its pods held until the test releases them, as JSON in `dir`.
pub fn held_template(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    job["spec"]["template"]["metadata"]["annotations"][HOLD] = json!("1");
    let path = dir.join("held.yaml");
    std::fs::write(&path, job.to_string()).expect("writing the template");
    path
}

/// The runtime the executor calls, to play it.
pub fn local_runtime() -> Arc<LocalBackend> {
    Arc::new(
        LocalBackend::new(None, Arc::new(Metrics::default()), 1, None).expect("a local backend"),
    )
}

/// Runs the ConfigMap `job`'s module on its input and releases pod `name` with the document.
pub async fn release(
    pods: &Api<Pod>,
    maps: &Api<ConfigMap>,
    local: &LocalBackend,
    name: &str,
    job: &str,
) {
    // The coordinator creates the ConfigMap just after the Job; the pod may come first.
    let map = loop {
        match maps.get_opt(job).await {
            Ok(Some(map)) => break map,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let module = map
        .binary_data
        .as_ref()
        .and_then(|d| d.get(MODULE_KEY))
        .expect("the module in the ConfigMap")
        .0
        .clone();
    let input: Value = map
        .data
        .as_ref()
        .and_then(|d| d.get(INPUT_KEY))
        .map(|text| serde_json::from_str(text).expect("the input is JSON"))
        .unwrap_or(Value::Null);
    let spec = TaskSpec::new(name, "module.wasm", input);
    let checked = spec.check(&IntakeRules::default()).expect("a valid task");
    let document = local.run(&checked, Arc::new(module)).await;
    let patch = json!({"metadata": {"annotations": {
        HOLD: null,
        EXIT_CODE: document.exit_code_for_process().to_string(),
        MESSAGE: document.to_line(),
    }}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("releasing pod {name}: {e}"));
}

/// Whether `pod` is still held.
pub fn is_held(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(HOLD))
}

/// Polls the task until it is finished and reported, or `deadline`; the coordinator's log tail
/// is in the panic.
pub fn wait_finished(base: &str, id: &str, deadline: Instant, service: &Service) -> Value {
    loop {
        let r = crate::support::get(base, &format!("/v1/tasks/{id}"), None);
        if crate::support::is_finished(&r) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not finished: {r:?}\ncoordinator log tail:\n{}",
            tail(&service.log.lock().expect("the log"), 3000)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `bytes` of `text` (from a character boundary).
pub fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Waits (up to 60 s) until no Job, Pod or ConfigMap of the coordinator is left.
pub async fn assert_nothing_left(namespace: &str) {
    Cluster::current().assert_nothing_left(namespace, &managed_selector());
}

/// A FlowSchema of API Priority and Fairness that puts ServiceAccounts of one namespace in a flow
/// of their own at a priority level, so the API server counts (and limits) their requests apart
/// from everyone else's; deleted when dropped.
pub struct FlowSchema {
    cluster: Cluster,
    name: String,
}

impl FlowSchema {
    /// Matches `accounts` of `namespace` (every request, watches included) to `level`.
    pub fn create(cluster: &Cluster, namespace: &str, level: &str, accounts: &[&str]) -> Self {
        let name = format!("wasm-exec-{namespace}");
        let subjects: Vec<Value> = accounts
            .iter()
            .map(|account| json!({"kind": "ServiceAccount", "serviceAccount": {"name": account, "namespace": namespace}}))
            .collect();
        let schema = json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "priorityLevelConfiguration": {"name": level},
                "matchingPrecedence": 100,
                "rules": [{
                    "subjects": subjects,
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": true}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }],
            },
        });
        cluster
            .apply(namespace, &schema.to_string())
            .expect("the FlowSchema");
        Self {
            cluster: cluster.clone(),
            name,
        }
    }

    /// Requests of this flow the API server has dispatched so far.
    pub fn dispatched(&self) -> u64 {
        self.counter("apiserver_flowcontrol_dispatched_requests_total")
    }

    /// Requests of this flow the API server has refused (429) so far.
    pub fn rejected(&self) -> u64 {
        self.counter("apiserver_flowcontrol_rejected_requests_total")
    }

    /// The sum of `metric`'s series for this FlowSchema in the API server's metrics.
    fn counter(&self, metric: &str) -> u64 {
        let metrics = self
            .cluster
            .kubectl(&["get", "--raw", "/metrics"])
            .expect("the API server's metrics");
        let series = format!("{metric}{{flow_schema=\"{}\"", self.name);
        metrics
            .lines()
            .filter(|l| l.starts_with(&series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for FlowSchema {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "flowschema", &self.name, "--wait=false"]);
    }
}

/// Calls `each` on every object of `api` with the labels `selector` (empty: all) that a list
/// shows now and a watch from its resourceVersion shows from then on, on `runtime`, until the
/// runtime ends: the watch resumes from the last version seen, and a fresh list follows a
/// `410 Gone`, so no object created meanwhile is missed.
pub fn watch_each<K, F>(runtime: &tokio::runtime::Runtime, api: Api<K>, selector: &str, each: F)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&K) + Send + 'static,
{
    use futures_util::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let list = ListParams::default().labels(selector);
    let listed = runtime.block_on(api.list(&list)).expect("the first list");
    listed.items.iter().for_each(&each);
    let mut version = listed.metadata.resource_version.unwrap_or_default();
    let params = WatchParams::default().labels(selector).timeout(60);
    runtime.spawn(async move {
        loop {
            let Ok(stream) = api.watch(&params, &version).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Ok(Some(event)) = stream.try_next().await {
                match event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                        each(&o);
                        version = o.meta().resource_version.clone().unwrap_or(version);
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Error(_) => {
                        let listed = api.list(&list).await.expect("a fresh list");
                        listed.items.iter().for_each(&each);
                        version = listed.metadata.resource_version.unwrap_or_default();
                        break;
                    }
                }
            }
        }
    });
}
