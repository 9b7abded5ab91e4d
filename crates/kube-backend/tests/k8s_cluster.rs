//! End to end on a real cluster: the three sample tasks through the kubernetes backend, then
//! nothing of theirs left behind. Needs a cluster, so it is ignored by default; run it with
//!
//! ```text
//! KUBECONFIG=~/.kube/config COORDINATOR_NAMESPACE=default \
//!   cargo test --release -p wasm-exec-kube-backend --test k8s_cluster -- --ignored --nocapture
//! ```
//!
//! with the executor image (`COORDINATOR_EXECUTOR_IMAGE`, default `executor-demo/executor:demo`)
//! present in the cluster (kind: `kind load docker-image executor-demo/executor:demo`) and the
//! RBAC of `k8s/coordinator.yaml` (or cluster-admin) for the kubeconfig's user.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::module::ModuleStore;
use wasm_exec_coordinator::module::mirror::MirrorStore;
use wasm_exec_coordinator::source::placeholder::samples;
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_kube_backend::{KubernetesBackend, KubernetesSettings};
use wasm_exec_test_peers::repo;

/// How long the garbage collector gets to remove pods and ConfigMaps after their Job.
const GC_WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG) with the executor image; see the file's doc"]
async fn samples_run_as_jobs_and_leave_nothing_behind() {
    let namespace = std::env::var("COORDINATOR_NAMESPACE").unwrap_or_else(|_| "default".into());
    let image = std::env::var("COORDINATOR_EXECUTOR_IMAGE")
        .unwrap_or_else(|_| "executor-demo/executor:demo".into());
    let settings = KubernetesSettings::new(&namespace, &image, repo("k8s/job.yaml"));
    let backend = KubernetesBackend::connect(settings, CancellationToken::new())
        .await
        .expect("a cluster from KUBECONFIG");
    backend.reconcile(&[]).await.expect("start-up clean-up");
    let modules = MirrorStore::open(&repo("host/wasm"), 1 << 20).unwrap();
    let expected = [
        ("add", json!(12)),
        ("fib", json!(144)),
        ("affine", json!(35)),
    ];
    for task in samples() {
        let module = modules.fetch(&task.wasm_cid).await.unwrap();
        let checked = task
            .check(&wasm_exec_task::IntakeRules::default())
            .expect("the samples pass the intake check");
        let result = backend.run(&checked, module).await;
        let want = &expected
            .iter()
            .find(|(id, _)| *id == task.task_id)
            .unwrap()
            .1;
        assert!(result.ok, "{}: {result:?}", task.task_id);
        assert_eq!(&result.result, want, "{}", task.task_id);
        let phases = result.phases.expect("phases");
        println!(
            "{}: scheduling {:.0} ms, starting {:.0} ms, running {:.0} ms",
            task.task_id, phases.scheduling_ms, phases.starting_ms, phases.running_ms
        );
    }
    let client = kube::Client::try_default().await.unwrap();
    let params = ListParams::default().labels(&managed_selector());
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let started = Instant::now();
    loop {
        let left = (
            jobs.list(&params).await.unwrap().items.len(),
            pods.list(&params).await.unwrap().items.len(),
            maps.list(&params).await.unwrap().items.len(),
        );
        if left == (0, 0, 0) {
            break;
        }
        assert!(
            started.elapsed() < GC_WAIT,
            "left behind after {GC_WAIT:?} (jobs, pods, configmaps): {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
