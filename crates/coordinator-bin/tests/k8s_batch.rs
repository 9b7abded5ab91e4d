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
//! - kwok runs no container, so the test plays the executor for every held pod (see
//!   `support/kube.rs`). Each task has its own arguments, so a result given to the wrong task
//!   fails the test.

#[path = "support/kube.rs"]
mod kube_peer;
mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube_peer::{
    ACCOUNT, FlowSchema, assert_nothing_left, coordinator_identity, held_template, is_held,
    local_runtime, release, wait_finished,
};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Service, command, post};
use wasm_exec_coordinator::source::placeholder::{ADD_CID, FIB_CID};
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_test_peers::kube::Cluster;

/// Tasks in the batch (`K8S_BATCH_TASKS` overrides, to measure by hand).
fn tasks_wanted() -> usize {
    std::env::var("K8S_BATCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}
const CONCURRENCY: usize = 8;

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
    let flow = FlowSchema::create(&cluster, &ns.name, "workload-high", &[ACCOUNT]);

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
    let before = flow.dispatched();

    let started = Instant::now();
    let count = tasks_wanted();
    let tasks: Vec<(String, Value)> = (0..count).map(task).collect();
    for (id, body) in &tasks {
        let r = post(&base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(r.status, 201, "{id}: {r:?}");
    }
    let (wrong, [scheduling, starting, running]) = results(&base, &tasks, started, &service);
    let took = started.elapsed();
    let requests = flow.dispatched() - before;
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
    // Every task makes its Job: none is answered from the result cache.
    let body = json!({"task_id": id, "wasm_cid": cid, "input": input, "cache": false});
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

/// Until `stop`: runs the task of every held pod in `namespace` from its ConfigMap and releases
/// the pod with the document as its termination message. Returns the number of pods played.
async fn play_the_executor(namespace: &str, stop: &AtomicBool) -> usize {
    let client = kube::Client::try_default().await.expect("the admin client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client, namespace);
    let local = local_runtime();
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
            let held = is_held(&pod);
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
