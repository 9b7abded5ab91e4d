//! Tasks through real Jobs: the coordinator binary with `COORDINATOR_BACKEND=kubernetes` on the
//! suite's control plane (`scripts/cluster`: kube-apiserver, etcd, the controllers, kwok nodes),
//! at concurrency 8 and 32.
//!
//! kwok ends each pod at once with the executor's document for fib(12) as its termination message
//! (the template's annotations), so what is measured is the control plane and the coordinator:
//! - tasks/s from the first submission to the last result;
//! - the latency the coordinator adds beyond the Job's own phases, per task: from the task's
//!   `running` step to its `succeeded` step (its timeline, ms), minus the phases the backend saw
//!   (Job created to pod bound, to container running, to its exit);
//! - the CPU each process used over the run (the coordinator, kube-apiserver, etcd,
//!   kube-controller-manager, kube-scheduler, kwok), to say what bounds the rate.
//!
//! Run with a cluster up (`eval "$(scripts/cluster up)"`):
//! `WASM_EXEC_CLUSTER=1 cargo bench -p coordinator --bench kube` (env `KUBE_BENCH_TASKS`,
//! default 300 per concurrency; `WASM_EXEC_CLUSTER_DIR` where `scripts/cluster` keeps its pids,
//! default `/tmp/wasm-exec-cluster`). Prints a markdown table.

#[path = "../tests/support/kube.rs"]
mod kube_peer;
#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Service, command, post, repo};
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::source::placeholder::FIB_CID;
use wasm_exec_task::{IntakeRules, TaskSpec};
use wasm_exec_test_peers::kube::Cluster;

/// The processes whose CPU is reported, as `scripts/cluster` names their pid files.
const COMPONENTS: [&str; 5] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

fn main() {
    let Some(cluster) = Cluster::from_env("kube bench") else {
        return;
    };
    let tasks: usize = std::env::var("KUBE_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let document = runtime.block_on(fib12_document());
    println!(
        "| concurrency | tasks | tasks/s | added p50 ms | added p95 ms | CPU s: coordinator | {} |",
        COMPONENTS.join(" | ")
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(COMPONENTS.len())
    );
    for concurrency in [8, 32] {
        let row = run(&cluster, concurrency, tasks, &document);
        println!("{row}");
    }
}

/// One run at `concurrency`: its table row.
fn run(cluster: &Cluster, concurrency: usize, tasks: usize, document: &str) -> String {
    let ns = cluster.namespace(&format!("bench{concurrency}"), &[]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = kube_peer::coordinator_identity(cluster, &ns.name, dir.path());
    let template = finishing_template(dir.path(), document);
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_BACKEND", "kubernetes")
        .env("KUBECONFIG", &kubeconfig)
        .env("COORDINATOR_NAMESPACE", &ns.name)
        .env("COORDINATOR_JOB_TEMPLATE", &template)
        .env("COORDINATOR_CONCURRENCY", concurrency.to_string());
    let service = Service::start(cmd);
    let cpu_before = cpu_seconds(service.pid());
    let components_before: Vec<f64> = COMPONENTS.iter().map(|c| component_cpu(c)).collect();
    let started = Instant::now();
    let ids: Vec<String> = (0..tasks).map(|i| format!("bench-{i}")).collect();
    for id in &ids {
        let body = json!({"task_id": id, "wasm_cid": FIB_CID, "input": {"entry": "fib", "args": [12]}, "cache": false});
        let r = post(&service.base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(r.status, 201, "{id}: {r:?}");
    }
    let deadline = started + Duration::from_secs(900);
    let records: Vec<Value> = ids
        .iter()
        .map(|id| kube_peer::wait_finished(&service.base, id, deadline, &service))
        .collect();
    let took = started.elapsed();
    let cpu = cpu_seconds(service.pid()) - cpu_before;
    let components: Vec<String> = COMPONENTS
        .iter()
        .zip(&components_before)
        .map(|(c, before)| format!("{:.1}", component_cpu(c) - before))
        .collect();
    let mut added: Vec<f64> = records.iter().filter_map(added_ms).collect();
    added.sort_by(f64::total_cmp);
    let failed = records.iter().filter(|r| r["state"] != "succeeded").count();
    assert_eq!(failed, 0, "tasks that did not succeed");
    let at = |q: f64| {
        added
            .get(((added.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    drop(service);
    format!(
        "| {concurrency} | {tasks} | {:.1} | {:.0} | {:.0} | {cpu:.1} | {} |",
        tasks as f64 / took.as_secs_f64(),
        at(0.5),
        at(0.95),
        components.join(" | ")
    )
}

/// The time the coordinator's backend spent on a task beyond the Job's phases, in ms.
fn added_ms(record: &Value) -> Option<f64> {
    let steps = record["timeline"].as_array()?;
    let at = |state: &str| {
        steps
            .iter()
            .rev()
            .find(|s| s["state"] == state)
            .and_then(|s| s["at_ms"].as_f64())
    };
    let backend = at("succeeded")? - at("running")?;
    let phases = &record["result"]["phases"];
    let seen: f64 = ["scheduling_ms", "starting_ms", "running_ms"]
        .iter()
        .filter_map(|p| phases[p].as_f64())
        .sum();
    Some(backend - seen)
}

/// The executor's document for fib(12), from the runtime the executor calls.
async fn fib12_document() -> String {
    let module = std::fs::read(repo("host/wasm/fib.wasm")).expect("host/wasm/fib.wasm");
    let spec = TaskSpec::new("fib", "fib.wasm", json!({"entry": "fib", "args": [12]}));
    let checked = spec.check(&IntakeRules::default()).expect("a valid task");
    let local = kube_peer::local_runtime();
    local
        .run(&checked, std::sync::Arc::new(module))
        .await
        .to_line()
}

/// `k8s/job.yaml` whose pods kwok ends at once with exit 0 and `document`, as JSON in `dir`.
fn finishing_template(dir: &Path, document: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    let annotations = &mut job["spec"]["template"]["metadata"]["annotations"];
    annotations[kube_peer::EXIT_CODE] = json!("0");
    annotations[kube_peer::MESSAGE] = json!(document);
    let path = dir.join("finishing.yaml");
    std::fs::write(&path, job.to_string()).expect("writing the template");
    path
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of the cluster component `name` so far (from `scripts/cluster`'s pid file).
fn component_cpu(name: &str) -> f64 {
    let dir =
        std::env::var("WASM_EXEC_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/wasm-exec-cluster".into());
    std::fs::read_to_string(format!("{dir}/pids/{name}.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .map_or(f64::NAN, cpu_seconds)
}
