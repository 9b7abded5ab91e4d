//! End to end on the suite's real control plane (`scripts/cluster`: kube-apiserver, etcd, the
//! controllers, kwok nodes): the three samples as Jobs through the kubernetes backend, then
//! nothing of theirs left behind. `scripts/test` starts the cluster; see
//! `wasm_exec_test_peers::kube` for when these tests skip.
//!
//! kwok runs no container: a pod "terminates" with the exit code and termination message its
//! template's annotations ask for (`peers/k8s/kwok.yaml`). So each task's template carries the
//! very document the executor would write, computed here with the coordinator's local backend:
//! the same runtime (`wasm-exec-runtime`, real wasmtime) the executor calls, in process, because
//! an integration test cannot name another crate's binary (`CARGO_BIN_EXE_*` is per crate).
//! On a cluster with real nodes the annotations do nothing and the executor image really runs
//! the task (docs/KUBERNETES.md, "What the suite proves").

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_coordinator::module::ModuleStore;
use wasm_exec_coordinator::module::mirror::MirrorStore;
use wasm_exec_coordinator::source::placeholder::samples;
use wasm_exec_kube_backend::errors::KubeError;
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_kube_backend::{KubernetesBackend, KubernetesSettings};
use wasm_exec_task::{CheckedTask, ErrorKind, IntakeRules, ResultEnvelope};
use wasm_exec_test_peers::kube::Cluster;
use wasm_exec_test_peers::repo;

/// kwok's annotations: the exit code and termination message of every container of the pod.
const EXIT_CODE: &str = "kwok.wasm-exec.io/exit-code";
const MESSAGE: &str = "kwok.wasm-exec.io/message";
/// kwok's annotation that keeps the pod running until it is deleted.
const HOLD: &str = "kwok.wasm-exec.io/hold";

#[tokio::test(flavor = "multi_thread")]
async fn samples_run_as_jobs_and_leave_nothing_behind() {
    let Some(cluster) = Cluster::from_env("samples_run_as_jobs_and_leave_nothing_behind") else {
        return;
    };
    // The rendered Job must pass PodSecurity's strictest level, as on a hardened cluster.
    let ns = cluster.namespace(
        "samples",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    let dir = tempfile::tempdir().unwrap();
    let modules = MirrorStore::open(&repo("host/wasm"), 1 << 20).unwrap();
    let local = LocalBackend::new(None, Arc::new(Metrics::default()), 1, None).unwrap();
    let expected = [
        ("add", json!(12)),
        ("fib", json!(144)),
        ("affine", json!(35)),
    ];
    for task in samples() {
        let id = task.task_id.clone();
        let module = modules.fetch(&task.wasm_cid).await.unwrap();
        let checked = task.check(&IntakeRules::default()).unwrap();
        let document = local.run(&checked, module.clone()).await;
        let want = &expected.iter().find(|(t, _)| *t == id).unwrap().1;
        assert_eq!(&document.result, want, "{id}: the local run itself");
        let template = template_with(
            dir.path(),
            &id,
            &[(EXIT_CODE, "0"), (MESSAGE, &document.to_line())],
        );
        let backend = connect(&ns.name, template).await;
        backend.reconcile(&[]).await.expect("start-up clean-up");
        let result = run(&backend, &checked, module).await;
        let phases = result.phases.expect("phases");
        assert_eq!(
            // On a real node (not kwok) the executor runs it again, in its own time.
            ResultEnvelope {
                phases: None,
                duration_ms: document.duration_ms,
                ..result
            },
            document,
            "{id}: the document read back from the pod"
        );
        eprintln!(
            "{id}: scheduling {:.0} ms, starting {:.0} ms, running {:.0} ms",
            phases.scheduling_ms, phases.starting_ms, phases.running_ms
        );
    }
    assert_nothing_left(&ns.name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_the_api_server_refuses_stops_the_start() {
    let Some(cluster) = Cluster::from_env("a_template_the_api_server_refuses_stops_the_start")
    else {
        return;
    };
    let ns = cluster.namespace("templates", &[]);
    let refused: [(&str, &[&str]); 2] = [
        (
            "restart-on-failure-with-pod-failure-policy.yaml",
            &["restartPolicy", "OnFailure", "Never", "podFailurePolicy"],
        ),
        ("bad-quantity.yaml", &["quantities must match"]),
    ];
    for (file, words) in refused {
        let path = repo(&format!("testdata/k8s/templates/{file}"));
        let settings = KubernetesSettings::new(&ns.name, "executor-demo/executor:demo", path);
        let message = match KubernetesBackend::connect(settings, CancellationToken::new()).await {
            Ok(_) => panic!("{file}: the backend started with a template the API server refuses"),
            Err(e @ KubeError::TemplateRefused { .. }) => e.to_string(),
            Err(other) => panic!("{file}: not refused as a template: {other}"),
        };
        eprintln!("{file}: {message}");
        for word in ["refused by the API server", file].iter().chain(words) {
            assert!(
                message.contains(word),
                "{file}: {word:?} missing in {message}"
            );
        }
    }
    // The dry run stores nothing, and the real template passes it.
    connect(&ns.name, repo("k8s/job.yaml")).await;
    let jobs = cluster.kubectl(&["get", "jobs", "-n", &ns.name, "-o", "name"]);
    assert_eq!(jobs.as_deref(), Ok(""), "Jobs after the dry runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_executor_is_found_by_name_beside_a_sidecar_listed_first() {
    let Some(cluster) =
        Cluster::from_env("the_executor_is_found_by_name_beside_a_sidecar_listed_first")
    else {
        return;
    };
    let ns = cluster.namespace("sidecar", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (checked, module) = sample("add").await;
    let local = LocalBackend::new(None, Arc::new(Metrics::default()), 1, None).unwrap();
    let document = local.run(&checked, module.clone()).await;
    // kwok ends the sidecar with 0 and no message, the executor with the document.
    let template = edited_template(dir.path(), "sidecar", |job| {
        let pod = &mut job["spec"]["template"];
        pod["metadata"]["annotations"] = json!({EXIT_CODE: "0", MESSAGE: document.to_line()});
        let containers = pod["spec"]["containers"].as_array_mut().unwrap();
        containers.insert(
            0,
            json!({"name": "aaa-log-shipper", "image": "log-shipper:1"}),
        );
    });
    let backend = connect(&ns.name, template).await;
    let result = run(&backend, &checked, module).await;
    assert_eq!(result.result, json!(12), "{result:?}");
    assert_eq!(
        result.duration_ms, document.duration_ms,
        "the executor's own document"
    );
    assert_nothing_left(&ns.name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_over_the_termination_message_comes_whole_from_a_cri_log() {
    let Some(cluster) =
        Cluster::from_env("a_result_over_the_termination_message_comes_whole_from_a_cri_log")
    else {
        return;
    };
    if !has_kwok_nodes(&cluster) {
        eprintln!(
            "skipped: the log comes from kwok's ClusterLogs, and this cluster has no kwok node"
        );
        return;
    }
    let ns = cluster.namespace("bigresult", &[]);
    // A real CRI log (podman's conmon): the 198,888-byte document in 24 partial entries and a
    // final one. kwok serves it as the log of every executor container in the namespace, read
    // as a kubelet reads it, so `tailLines` counts entries as it would on a node.
    let log = repo("testdata/k8s/logs/result-200k.log");
    let want = document_of_cri_log(&log);
    assert!(want.to_line().len() > 190_000, "the fixture's document");
    let _logs = ClusterLogs::serve(&cluster, &ns.name, &log);
    let dir = tempfile::tempdir().unwrap();
    // Over 4096 bytes the executor writes no termination message: the log is the only way.
    let template = template_with(dir.path(), "bigresult", &[(EXIT_CODE, "0")]);
    let backend = connect(&ns.name, template).await;
    let (mut checked, module) = sample("add").await;
    checked.limits.max_output_bytes = 300_000;
    let result = run(&backend, &checked, module).await;
    assert_eq!(
        ResultEnvelope {
            phases: None,
            ..result
        },
        want,
        "the whole document from the log"
    );
    assert_nothing_left(&ns.name).await;
}

/// True on the suite's cluster, whose nodes are kwok's (label `type=kwok`).
fn has_kwok_nodes(cluster: &Cluster) -> bool {
    let nodes = cluster.kubectl(&["get", "nodes", "-l", "type=kwok", "-o", "name"]);
    !nodes.expect("listing the nodes").trim().is_empty()
}

/// The result document a CRI-format log ends with: its entries joined as a kubelet joins them
/// (`P` entries continue the line, `F` ends it), the last line parsed.
fn document_of_cri_log(path: &Path) -> ResultEnvelope {
    let text = std::fs::read_to_string(path).expect("the CRI log");
    let (mut lines, mut line) = (Vec::new(), String::new());
    for entry in text.lines() {
        let mut fields = entry.splitn(4, ' ');
        let (_time, _stream, tag) = (fields.next(), fields.next(), fields.next());
        line.push_str(fields.next().unwrap_or_default());
        if tag == Some("F") {
            lines.push(std::mem::take(&mut line));
        }
    }
    let last = lines.last().expect("a full line");
    serde_json::from_str(last).expect("the last line is a result document")
}

/// A kwok ClusterLogs object giving every `executor` container of one namespace a log file;
/// deleted when dropped.
struct ClusterLogs {
    cluster: Cluster,
    name: String,
}

impl ClusterLogs {
    fn serve(cluster: &Cluster, namespace: &str, file: &Path) -> Self {
        let manifest = json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": namespace},
            "spec": {
                "selector": {"matchNamespaces": [namespace]},
                "logs": [{"containers": ["executor"], "logsFile": file}],
            },
        });
        cluster
            .apply(namespace, &manifest.to_string())
            .expect("the ClusterLogs object (its CRD is installed by scripts/cluster up)");
        Self {
            cluster: cluster.clone(),
            name: namespace.to_owned(),
        }
    }
}

impl Drop for ClusterLogs {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "clusterlogs", &self.name, "--wait=false"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_active_deadline_is_a_timeout_well_within_the_grace() {
    let Some(cluster) =
        Cluster::from_env("a_job_past_its_active_deadline_is_a_timeout_well_within_the_grace")
    else {
        return;
    };
    let ns = cluster.namespace("deadline", &[]);
    let dir = tempfile::tempdir().unwrap();
    // The pod runs until the job controller deletes it at the deadline.
    let template = edited_template(dir.path(), "deadline", |job| {
        job["spec"]["activeDeadlineSeconds"] = json!(2);
        job["spec"]["template"]["metadata"]["annotations"] = json!({HOLD: "1"});
    });
    let backend = connect(&ns.name, template).await;
    let (checked, module) = sample("add").await;
    let started = Instant::now();
    let result = run(&backend, &checked, module).await;
    let took = started.elapsed();
    eprintln!("timed out after {took:?}: {result:?}");
    let error = result.error.as_ref().expect("a failure");
    assert_eq!(error.kind, ErrorKind::Timeout, "{result:?}");
    assert!(
        error.message.contains("activeDeadlineSeconds (2 s"),
        "{}",
        error.message
    );
    // The deadline plus the job controller's reaction, far from the coordinator's 30 s grace.
    assert!(
        took < Duration::from_secs(12),
        "timed out only after {took:?}"
    );
    assert_nothing_left(&ns.name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_refused_by_pod_security_fails_the_task_at_once() {
    let Some(cluster) = Cluster::from_env("a_pod_refused_by_pod_security_fails_the_task_at_once")
    else {
        return;
    };
    let ns = cluster.namespace(
        "podsecurity",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    let template = repo("testdata/k8s/templates/privilege-escalation.yaml");
    assert_refused(&ns.name, template, "violates PodSecurity").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_refused_by_an_exhausted_quota_fails_the_task_at_once() {
    let Some(cluster) =
        Cluster::from_env("a_pod_refused_by_an_exhausted_quota_fails_the_task_at_once")
    else {
        return;
    };
    let ns = cluster.namespace("quota", &[]);
    let quota = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: no-pods}\nspec: {hard: {pods: \"0\"}}\n";
    cluster.apply(&ns.name, quota).expect("the quota");
    assert_refused(&ns.name, repo("k8s/job.yaml"), "exceeded quota").await;
}

/// Runs the `add` sample in `namespace` with `template` and checks that it fails as
/// `pod_refused` with the event's reason and `words`, long before any deadline, and that its
/// Job is gone.
async fn assert_refused(namespace: &str, template: PathBuf, words: &str) {
    let backend = connect(namespace, template).await;
    let (checked, module) = sample("add").await;
    let started = Instant::now();
    let result = run(&backend, &checked, module).await;
    let took = started.elapsed();
    let error = result.error.as_ref().expect("a failure");
    eprintln!("refused after {took:?}: {}", error.message);
    assert_eq!(error.kind, ErrorKind::PodRefused, "{result:?}");
    for word in ["FailedCreate", words] {
        assert!(
            error.message.contains(word),
            "{word:?} missing: {}",
            error.message
        );
    }
    // The pod-create grace (3 s) and the job controller's first tries, not the 140 s deadline.
    assert!(
        took < Duration::from_secs(20),
        "refused only after {took:?}"
    );
    assert_nothing_left(namespace).await;
}

/// The sample task `id`, checked, and its module from `host/wasm`.
async fn sample(id: &str) -> (CheckedTask, Arc<Vec<u8>>) {
    let task = samples()
        .into_iter()
        .find(|t| t.task_id == id)
        .expect("a sample of that id");
    let modules = MirrorStore::open(&repo("host/wasm"), 1 << 20).expect("the mirror");
    let module = modules.fetch(&task.wasm_cid).await.expect("its module");
    let checked = task.check(&IntakeRules::default()).expect("a valid sample");
    (checked, module)
}

/// `k8s/job.yaml` with `annotations` added to its pod template, written to `dir/NAME.yaml`.
fn template_with(dir: &Path, name: &str, annotations: &[(&str, &str)]) -> PathBuf {
    edited_template(dir, name, |job| {
        let meta = &mut job["spec"]["template"]["metadata"];
        for (key, value) in annotations {
            meta["annotations"][key] = json!(value);
        }
    })
}

/// `k8s/job.yaml` changed by `edit`, written to `dir/NAME.yaml`.
fn edited_template(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    edit(&mut job);
    let path = dir.join(format!("{name}.yaml"));
    // JSON is YAML: the backend's template parser reads it as is.
    let json = serde_json::to_string_pretty(&job).expect("a JSON value prints");
    std::fs::write(&path, json).expect("writing the template");
    path
}

async fn connect(namespace: &str, template: PathBuf) -> KubernetesBackend {
    let settings = KubernetesSettings::new(namespace, "executor-demo/executor:demo", template);
    KubernetesBackend::connect(settings, CancellationToken::new())
        .await
        .expect("the backend connects to the cluster of KUBECONFIG")
}

/// One task through `backend`, bounded well below the backend's own deadlines.
async fn run(
    backend: &KubernetesBackend,
    task: &CheckedTask,
    module: Arc<Vec<u8>>,
) -> ResultEnvelope {
    tokio::time::timeout(Duration::from_secs(60), backend.run(task, module))
        .await
        .unwrap_or_else(|_| panic!("{}: no result within 60 s", task.spec.task_id))
}

/// Waits (up to a minute) until no Job, Pod or ConfigMap of the coordinator is left in
/// `namespace`.
async fn assert_nothing_left(namespace: &str) {
    Cluster::current().assert_nothing_left(namespace, &managed_selector());
}
