//! Faults on the suite's real control plane (`scripts/cluster`, kwok nodes): the API server
//! killed in the middle of a batch, a watch resumed from a version the server has forgotten
//! (`410 Gone`), bookmarks, and pods evicted or preempted while they run. See `k8s_cluster.rs`
//! for how kwok plays the executor (the pod template's annotations), and
//! `wasm_exec_test_peers::kube` for when these tests skip.
//!
//! The test that kills the API server takes the write side of [`API_SERVER`]; the others take its
//! read side, so that none of them runs while the server is down.

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, EvictParams, ListParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_coordinator::module::ModuleStore;
use wasm_exec_coordinator::module::mirror::MirrorStore;
use wasm_exec_coordinator::source::placeholder::samples;
use wasm_exec_kube_backend::errors::Call;
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_kube_backend::retry::RetryPolicy;
use wasm_exec_kube_backend::watch::Watch;
use wasm_exec_kube_backend::{KubernetesBackend, KubernetesSettings};
use wasm_exec_task::{CheckedTask, IntakeRules, ResultEnvelope};
use wasm_exec_test_peers::kube::{Cluster, Namespace};
use wasm_exec_test_peers::repo;

/// kwok's annotations (`peers/k8s/kwok.yaml`): exit code, termination message, run until
/// deleted or the annotation removed.
const EXIT_CODE: &str = "kwok.wasm-exec.io/exit-code";
const MESSAGE: &str = "kwok.wasm-exec.io/message";
const HOLD: &str = "kwok.wasm-exec.io/hold";
/// How long anything the tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// Held for writing while the API server is down.
static API_SERVER: RwLock<()> = RwLock::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_rides_out_the_api_server_killed_and_started_again() {
    let Some(cluster) =
        Cluster::from_env("a_batch_rides_out_the_api_server_killed_and_started_again")
    else {
        return;
    };
    let _alone = API_SERVER.write().await;
    let ns = cluster.namespace("restart", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (task, module, document) = sample_and_document().await;
    let backend = connect(&ns.name, held_template(dir.path(), &document)).await;
    let client = kube::Client::try_default().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let run = |n: usize| {
        let (backend, module) = (backend.clone(), module.clone());
        let mut task = task.clone();
        task.spec.task_id = format!("add-{n}");
        tokio::spawn(async move { backend.run(&task, module).await })
    };
    // Three tasks in flight, their pods running (held), when the API server dies.
    let mut running: Vec<_> = (0..3).map(run).collect();
    wait_for_running_pods(&ns, 3).await;
    let before = jobs.list(&ListParams::default()).await.unwrap();
    let old_version = before.metadata.resource_version.clone().unwrap();
    // The cluster writes all the time (leases, status): once more here, so that the restarted
    // server's watch cache starts after `old_version`.
    cluster
        .kubectl(&["create", "configmap", "a-write", "-n", &ns.name])
        .expect("a write");
    match cluster.stop_apiserver() {
        None => {
            eprintln!("skipped: not a cluster of scripts/cluster, whose API server we can stop");
            return;
        }
        Some(stopped) => stopped.expect("stopping the API server"),
    }
    // Three more start while it is down: their first requests find no server.
    running.extend((3..6).map(run));
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .start_apiserver()
        .expect("a cluster of scripts/cluster")
        .expect("starting the API server again");
    eprintln!("API server down for {:?}", down.elapsed());
    assert_expired_and_resumed(&jobs, &ns, &old_version).await;
    wait_for_running_pods(&ns, 6).await;
    assert_one_job_and_pod_per_task(&ns, 6).await;
    release(&cluster, &ns);
    for (n, task) in running.into_iter().enumerate() {
        let result = tokio::time::timeout(PATIENCE, task)
            .await
            .unwrap_or_else(|_| panic!("add-{n}: no result"))
            .unwrap();
        assert_eq!(
            without_timing(result),
            without_timing(document.clone()),
            "add-{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_watch_moves_its_version_on_by_bookmarks() {
    let Some(cluster) = Cluster::from_env("a_quiet_watch_moves_its_version_on_by_bookmarks") else {
        return;
    };
    let _up = API_SERVER.read().await;
    let ns = cluster.namespace("bookmarks", &[]);
    let client = kube::Client::try_default().await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client, &ns.name);
    // No Job in the namespace: no event will come, only bookmarks (the server sends one as the
    // initial state ends, and about each minute or before the stream's timeout).
    let mut watch = Watch::new(
        jobs,
        WatchParams::default().timeout(10),
        Call::new("watch", "jobs"),
        &ns.name,
        RetryPolicy::default(),
    );
    assert_eq!(watch.resource_version(), "0");
    let quiet = tokio::time::timeout(Duration::from_secs(12), watch.next()).await;
    assert!(quiet.is_err(), "an event in an empty namespace: {quiet:?}");
    let version: u64 = watch.resource_version().parse().expect("a numeric version");
    assert!(version > 0, "{version}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_evicted_pod_is_run_again_not_reported() {
    let Some(cluster) = Cluster::from_env("an_evicted_pod_is_run_again_not_reported") else {
        return;
    };
    let _up = API_SERVER.read().await;
    let ns = cluster.namespace("evicted", &[]);
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_default().await.unwrap(), &ns.name);
    disrupt_and_check(&cluster, &ns, |name| {
        let pods = pods.clone();
        async move {
            // The eviction API marks the pod DisruptionTarget, then deletes it.
            pods.evict(&name, &EvictParams::default())
                .await
                .expect("evicting the pod");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preempted_pod_that_exited_with_a_guest_code_is_run_again_not_reported() {
    let Some(cluster) = Cluster::from_env(
        "a_preempted_pod_that_exited_with_a_guest_code_is_run_again_not_reported",
    ) else {
        return;
    };
    let _up = API_SERVER.read().await;
    let ns = cluster.namespace("preempted", &[]);
    let trap = ResultEnvelope::failure(wasm_exec_task::ErrorKind::Trap, "not the guest's");
    let cluster2 = cluster.clone();
    let namespace = ns.name.clone();
    disrupt_and_check(&cluster, &ns, move |name| {
        // What a kubelet writes for a preempted pod whose executor exited with trap's code on
        // SIGTERM: DisruptionTarget (from the scheduler), Failed, the container terminated.
        let status = json!({"status": {
            "phase": "Failed",
            "conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "PreemptionByScheduler", "message": "preempted by a higher priority pod"}],
            "containerStatuses": [{"name": "executor", "image": "executor-demo/executor:demo",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 20, "reason": "Error",
                    "message": trap.to_line()}}}]
        }});
        let patched = cluster2.kubectl(&[
            "patch", "pod", &name, "-n", &namespace, "--subresource=status",
            "--type=strategic", "-p", &status.to_string(),
        ]);
        async move {
            patched.expect("patching the pod's status");
        }
    })
    .await;
}

/// A watch resumed after the restart from `old_version` (a version from before it) gets
/// `410 Gone` from the server, and the backend's [`Watch`] resumes from the current state.
async fn assert_expired_and_resumed(jobs: &Api<Job>, ns: &Namespace, old_version: &str) {
    // The server forgot the versions before its start: a watch resumed from one gets 410 Gone.
    let params = WatchParams::default();
    let mut raw = jobs
        .watch(&params, old_version)
        .await
        .expect("a watch")
        .boxed();
    match raw.next().await {
        Some(Ok(WatchEvent::Error(status))) => assert_eq!(status.code, 410, "{status:?}"),
        other => panic!("a watch from {old_version} after the restart: {other:?}"),
    }
    // The backend's own watch from that version resumes from the current state.
    let mut watch = Watch::new(
        jobs.clone(),
        params,
        Call::new("watch", "jobs"),
        &ns.name,
        RetryPolicy::default(),
    )
    .resuming_from(old_version);
    let resumed = tokio::time::timeout(PATIENCE, watch.next()).await;
    assert!(
        matches!(resumed, Ok(Ok(_))),
        "the watch after 410: {resumed:?}"
    );
}

/// One Job per task (`tasks` of them), each with one pod, each ConfigMap owned by its task's
/// one Job: nothing created twice.
async fn assert_one_job_and_pod_per_task(ns: &Namespace, tasks: usize) {
    let client = kube::Client::try_default().await.expect("a client");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let listed = jobs
        .list(&ListParams::default())
        .await
        .expect("a list")
        .items;
    let uids: BTreeSet<String> = listed
        .iter()
        .filter_map(|j| j.metadata.uid.clone())
        .collect();
    assert_eq!(uids.len(), tasks, "Jobs: {:?}", names(&listed));
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owners: BTreeSet<String> = maps
        .list(&ListParams::default().labels(&managed_selector()))
        .await
        .expect("a list")
        .items
        .iter()
        .flat_map(|m| m.metadata.owner_references.clone().unwrap_or_default())
        .map(|o| o.uid)
        .collect();
    assert_eq!(owners, uids, "the ConfigMaps' owners");
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let all_pods = pods
        .list(&ListParams::default())
        .await
        .expect("a list")
        .items;
    assert_eq!(all_pods.len(), tasks, "pods: {:?}", names(&all_pods));
}

/// Runs the `add` sample with its pods held, disrupts its first pod with `disrupt(pod name)`,
/// releases the pod the Job runs next, and checks the task's result is the executor's document.
async fn disrupt_and_check<F, Fut>(cluster: &Cluster, ns: &Namespace, disrupt: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (task, module, document) = sample_and_document().await;
    let backend = connect(&ns.name, held_template(dir.path(), &document)).await;
    let running = tokio::spawn(async move { backend.run(&task, module).await });
    let first = wait_for_running_pods(ns, 1).await.remove(0);
    disrupt(first.clone()).await;
    // The Job runs another pod (the DisruptionTarget rule ignores the first), held in its turn.
    let started = Instant::now();
    loop {
        let pods = running_pods(ns).await;
        if pods.iter().any(|p| *p != first) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no second pod: {pods:?}\n{}",
            ns.state()
        );
        assert!(!running.is_finished(), "{:?}", running.await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    release(cluster, ns);
    let result = tokio::time::timeout(PATIENCE, running)
        .await
        .expect("a result")
        .expect("the task's run");
    assert_eq!(without_timing(result), without_timing(document));
}

/// The `add` sample checked, its module, and the document the executor writes for it (run here
/// on the local backend: the same runtime).
async fn sample_and_document() -> (CheckedTask, Arc<Vec<u8>>, ResultEnvelope) {
    let task = samples()
        .into_iter()
        .find(|t| t.task_id == "add")
        .expect("the add sample");
    let modules = MirrorStore::open(&repo("host/wasm"), 1 << 20).expect("the mirror");
    let module = modules.fetch(&task.wasm_cid).await.expect("the module");
    let checked = task.check(&IntakeRules::default()).expect("a valid task");
    let local =
        LocalBackend::new(None, Arc::new(Metrics::default()), 1, None).expect("the local backend");
    let document = local.run(&checked, module.clone()).await;
    assert_eq!(document.result, json!(12));
    (checked, module, document)
}

/// `k8s/job.yaml` whose pods run until released, then end with `document`.
fn held_template(dir: &Path, document: &ResultEnvelope) -> PathBuf {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    job["spec"]["template"]["metadata"]["annotations"] =
        json!({EXIT_CODE: "0", MESSAGE: document.to_line(), HOLD: "1"});
    let path = dir.join("held.yaml");
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

/// Lets every held pod of `ns` end (kwok then ends them with their exit code and message).
fn release(cluster: &Cluster, ns: &Namespace) {
    let annotation = format!("{HOLD}-");
    cluster
        .kubectl(&["annotate", "pods", "--all", "-n", &ns.name, &annotation])
        .expect("releasing the pods");
}

/// The names of the Running pods of `ns`.
async fn running_pods(ns: &Namespace) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(
        kube::Client::try_default().await.expect("a client"),
        &ns.name,
    );
    let params = ListParams::default().fields("status.phase=Running");
    match pods.list(&params).await {
        Ok(list) => list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until `n` pods of `ns` are Running; their names.
async fn wait_for_running_pods(ns: &Namespace, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let pods = running_pods(ns).await;
        if pods.len() >= n {
            return pods;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{n} pods not running: {pods:?}\n{}",
            ns.state()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn names<K: kube::Resource>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

/// The document without what differs between runs of it (its phases).
fn without_timing(result: ResultEnvelope) -> ResultEnvelope {
    ResultEnvelope {
        phases: None,
        ..result
    }
}
