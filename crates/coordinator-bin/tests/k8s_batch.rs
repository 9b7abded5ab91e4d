//! 1,000 tasks through the `coordinator` binary with `COORDINATOR_BACKEND=kubernetes` at
//! `COORDINATOR_CONCURRENCY=8`, on the suite's real control plane (`scripts/cluster`): every
//! result right, nothing left behind, and the API requests the coordinator made per task,
//! counted by the API server itself.
//!
//! - The coordinator runs as a real cluster would run it: under the ServiceAccount, Role and
//!   RoleBinding of `k8s/coordinator.yaml` (so their verbs are proven enough), with a token of
//!   that ServiceAccount. A FlowSchema of API Priority and Fairness matches that ServiceAccount
//!   only, and the API server's `apiserver_flowcontrol_dispatched_requests_total` for it is the
//!   coordinator's request count: every request, watches included, none of the test's own.
//! - kwok runs no container, so the test plays the executor: each pod's template holds it
//!   (`kwok.wasm-exec.io/hold`); the test reads the task's ConfigMap (the module and input the
//!   coordinator sent), runs them with the same runtime the executor calls, and patches the pod
//!   with the document as its termination message, which releases it. Each task has its own
//!   arguments, so a result given to the wrong task fails the test.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Service, command, get, post, repo};
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_coordinator::source::placeholder::{ADD_CID, FIB_CID};
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_kube_backend::render::{INPUT_KEY, MODULE_KEY};
use wasm_exec_task::{IntakeRules, TaskSpec};
use wasm_exec_test_peers::kube::Cluster;

/// Tasks in the batch (`K8S_BATCH_TASKS` overrides, to measure by hand).
fn tasks_wanted() -> usize {
    std::env::var("K8S_BATCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}
const CONCURRENCY: usize = 8;
/// The coordinator's ServiceAccount in `k8s/coordinator.yaml`.
const ACCOUNT: &str = "wasm-exec-coordinator";
const HOLD: &str = "kwok.wasm-exec.io/hold";
const EXIT_CODE: &str = "kwok.wasm-exec.io/exit-code";
const MESSAGE: &str = "kwok.wasm-exec.io/message";

#[test]
fn a_thousand_tasks_at_concurrency_8_all_right_and_nothing_left() {
    let Some(cluster) =
        Cluster::from_env("a_thousand_tasks_at_concurrency_8_all_right_and_nothing_left")
    else {
        return;
    };
    let ns = cluster.namespace("batch", &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = coordinator_identity(&cluster, &ns.name, dir.path());
    let _flow = FlowSchema::create(&cluster, &ns.name);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let executor = {
        let (ns, stop) = (ns.name.clone(), stop.clone());
        runtime.spawn(async move { play_the_executor(&ns, &stop).await })
    };

    let template = held_template(dir.path());
    let state = dir.path().join("state");
    let mut cmd = command(&state);
    cmd.env("COORDINATOR_BACKEND", "kubernetes")
        .env("KUBECONFIG", &kubeconfig)
        .env("COORDINATOR_NAMESPACE", &ns.name)
        .env("COORDINATOR_JOB_TEMPLATE", &template)
        .env("COORDINATOR_CONCURRENCY", CONCURRENCY.to_string());
    let service = Service::start(cmd);
    let base = service.base.clone();
    let before = dispatched(&cluster, &ns.name);

    let started = Instant::now();
    let count = tasks_wanted();
    let tasks: Vec<(String, Value)> = (0..count).map(task).collect();
    for (id, body) in &tasks {
        let r = post(&base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(r.status, 201, "{id}: {r:?}");
    }
    let (wrong, [scheduling, starting, running]) = results(&base, &tasks, started, &service);
    let took = started.elapsed();
    let requests = dispatched(&cluster, &ns.name) - before;
    stop.store(true, Ordering::Relaxed);
    let pods_played = runtime.block_on(executor).expect("the executor task");
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let per_task = requests as f64 / count as f64;
    eprintln!(
        "{count} tasks at concurrency {CONCURRENCY} in {took:.1?} ({:.1} tasks/s); {pods_played} \
         pods; {requests} API requests by the coordinator, {per_task:.2} per task",
        count as f64 / took.as_secs_f64()
    );
    eprintln!(
        "p50 phases: scheduling {scheduling:.0} ms, starting {starting:.0} ms, running {running:.0} ms \
         (running includes the test playing the executor)"
    );
    assert_eq!(pods_played, count, "one pod per task, none run twice");
    assert!(per_task <= 6.0, "{per_task} API requests per task");
    runtime.block_on(assert_nothing_left(&ns.name));
    drop(service);
}

/// Task `i`: fib of `i % 40` for even `i`, `add(i, 2 i)` for odd ones.
fn task(i: usize) -> (String, Value) {
    let id = format!("batch-{i}");
    let (cid, input) = if i.is_multiple_of(2) {
        (FIB_CID, json!({"entry": "fib", "args": [i % 40]}))
    } else {
        (ADD_CID, json!({"entry": "add", "args": [i, 2 * i]}))
    };
    let body = json!({"task_id": id, "wasm_cid": cid, "input": input});
    (id, body)
}

/// What task `i` must give.
fn expected(i: usize) -> Value {
    if i.is_multiple_of(2) {
        let (mut a, mut b) = (0u64, 1u64);
        for _ in 0..i % 40 {
            (a, b) = (b, a + b);
        }
        json!(a)
    } else {
        json!(3 * i)
    }
}

/// Waits for every task's result; returns the wrong ones and the p50 of the Job's phases
/// (scheduling, starting, running) in milliseconds.
fn results(
    base: &str,
    tasks: &[(String, Value)],
    started: Instant,
    service: &Service,
) -> (Vec<String>, [f64; 3]) {
    let mut wrong = Vec::new();
    let mut phases: [Vec<f64>; 3] = Default::default();
    for (i, (id, _)) in tasks.iter().enumerate() {
        let record = wait_finished(base, id, started + Duration::from_secs(600), service);
        let want = expected(i);
        if record["state"] != "succeeded" || record["result"]["result"] != want {
            wrong.push(format!("{id}: want {want}, got {record}"));
        }
        for (n, phase) in ["scheduling_ms", "starting_ms", "running_ms"]
            .iter()
            .enumerate()
        {
            phases[n].push(
                record["result"]["phases"][phase]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
    }
    let p50 = phases.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    });
    (wrong, p50)
}

/// Polls the task until it is finished and reported, or `deadline`.
fn wait_finished(base: &str, id: &str, deadline: Instant, service: &Service) -> Value {
    loop {
        let r = get(base, &format!("/v1/tasks/{id}"), None);
        if r.status == 200
            && matches!(r.body["state"].as_str(), Some("succeeded" | "failed"))
            && r.body["reported"] == Value::Bool(true)
        {
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

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Applies the ServiceAccount, Role and RoleBinding of `k8s/coordinator.yaml` in `namespace` and
/// writes a kubeconfig with a token of that ServiceAccount; returns its path.
fn coordinator_identity(cluster: &Cluster, namespace: &str, dir: &Path) -> std::path::PathBuf {
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

/// A FlowSchema that gives the coordinator's ServiceAccount in one namespace a flow of its own,
/// so the API server counts its requests apart; deleted when dropped.
struct FlowSchema {
    cluster: Cluster,
    name: String,
}

impl FlowSchema {
    fn create(cluster: &Cluster, namespace: &str) -> Self {
        let name = format!("wasm-exec-{namespace}");
        let schema = json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "priorityLevelConfiguration": {"name": "workload-high"},
                "matchingPrecedence": 100,
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": ACCOUNT, "namespace": namespace}}],
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
}

impl Drop for FlowSchema {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "flowschema", &self.name, "--wait=false"]);
    }
}

/// Requests the API server dispatched for the coordinator's FlowSchema in `namespace`.
fn dispatched(cluster: &Cluster, namespace: &str) -> u64 {
    let metrics = cluster
        .kubectl(&["get", "--raw", "/metrics"])
        .expect("the API server's metrics");
    let series = format!(
        "apiserver_flowcontrol_dispatched_requests_total{{flow_schema=\"wasm-exec-{namespace}\""
    );
    metrics
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `k8s/job.yaml` with its pods held until the test releases them, as JSON in `dir`.
fn held_template(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    job["spec"]["template"]["metadata"]["annotations"][HOLD] = json!("1");
    let path = dir.join("held.yaml");
    std::fs::write(&path, job.to_string()).expect("writing the template");
    path
}

/// Until `stop`: runs the task of every held pod in `namespace` from its ConfigMap and releases
/// the pod with the document as its termination message. Returns the number of pods played.
async fn play_the_executor(namespace: &str, stop: &AtomicBool) -> usize {
    let client = kube::Client::try_default().await.expect("the admin client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client, namespace);
    let local = Arc::new(
        LocalBackend::new(None, Arc::new(Metrics::default()), 1, None).expect("a local backend"),
    );
    let mut played = HashSet::new();
    let params = ListParams::default().labels(&managed_selector());
    let mut running = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(list) = pods.list(&params).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let held = pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(HOLD));
            let job = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("job-name").cloned());
            let (Some(job), true) = (job, held) else {
                continue;
            };
            if !played.insert(name.clone()) {
                continue;
            }
            let (pods, maps, local) = (pods.clone(), maps.clone(), local.clone());
            running.spawn(async move { release(&pods, &maps, &local, &name, &job).await });
        }
        while let Some(done) = running.try_join_next() {
            done.expect("a pod's run");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Some(done) = running.join_next().await {
        done.expect("a pod's run");
    }
    played.len()
}

/// Runs the ConfigMap `job`'s module on its input and releases pod `name` with the document.
async fn release(
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

/// Waits (up to 60 s) until no Job, Pod or ConfigMap of the coordinator is left.
async fn assert_nothing_left(namespace: &str) {
    use k8s_openapi::api::batch::v1::Job;
    let client = kube::Client::try_default().await.expect("the admin client");
    let params = ListParams::default().labels(&managed_selector());
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client, namespace);
    let started = Instant::now();
    loop {
        let left = (
            jobs.list(&params).await.expect("list").items.len(),
            pods.list(&params).await.expect("list").items.len(),
            maps.list(&params).await.expect("list").items.len(),
        );
        if left == (0, 0, 0) {
            eprintln!("nothing left {:?} after the last result", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "left behind after 60 s (jobs, pods, configmaps): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
