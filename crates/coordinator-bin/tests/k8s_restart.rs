//! Start-up reconcile and adoption after a SIGKILL of the coordinator with Jobs in flight, on
//! the suite's real control plane (`scripts/cluster`, kwok nodes, pods held until released; see
//! `support/kube.rs`).
//!
//! One task finishes before the kill; the others are in flight, their pods held. While the
//! coordinator is down, some pods are released (their Jobs complete unwatched), the others stay
//! held, and an orphan appears: a Job and a ConfigMap with the coordinator's label for a task it
//! does not have. Restarted on the same state directory, the coordinator must adopt every Job in
//! flight (a watch of the test records each Job and pod created, by uid: none twice for a task),
//! give every task its own result exactly once, delete the orphan, and leave nothing behind.

#[path = "support/kube.rs"]
mod kube_peer;
mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::core::Resource;
use kube_peer::{
    assert_nothing_left, coordinator_identity, held_template, is_held, local_runtime, release,
    wait_finished, watch_each,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Service, command};
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::source::placeholder::FIB_CID;
use wasm_exec_kube_backend::names::{
    MANAGED_BY_KEY, MANAGED_BY_VALUE, TASK_ID_ANNOTATION, TaskNames, managed_selector,
};
use wasm_exec_kube_backend::render::{JobTemplate, RunSettings};
use wasm_exec_task::TaskSpec;
use wasm_exec_test_peers::kube::Cluster;

/// Finishes before the kill.
const EARLY: &str = "early";
/// In flight at the kill, released while the coordinator is down.
const DOWN: [&str; 3] = ["down-0", "down-1", "down-2"];
/// In flight at the kill, still held when it restarts; released after.
const HELD: [&str; 3] = ["held-0", "held-1", "held-2"];
/// The task of the orphan Job: no task of the coordinator's.
const ORPHAN: &str = "orphan";

/// Uids seen per object name, from a watch of one kind.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

#[test]
fn sigkill_with_jobs_in_flight_then_restart_adopts_each_and_removes_the_orphan() {
    let Some(cluster) = Cluster::from_env(
        "sigkill_with_jobs_in_flight_then_restart_adopts_each_and_removes_the_orphan",
    ) else {
        return;
    };
    let ns = cluster.namespace("restart", &[]);
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::new(&cluster, &ns.name, dir.path());
    let job_uids = record(&rig.runtime, rig.jobs.clone(), |j: &Job| {
        j.meta().name.clone()
    });
    let pod_uids = record(&rig.runtime, rig.pods.clone(), |p: &Pod| {
        p.meta().labels.as_ref()?.get("job-name").cloned()
    });
    let deadline = Instant::now() + Duration::from_secs(120);

    let first = rig.start();
    rig.release(EARLY);
    let early = wait_finished(&first.base, EARLY, deadline, &first);
    for id in DOWN.iter().chain(&HELD) {
        rig.held_pod(id);
    }
    let first_log = first.kill_and_drain();
    assert!(!first_log.contains("adopting"), "nothing to adopt at first");

    for id in DOWN {
        rig.release(id);
    }
    for id in DOWN {
        let job = TaskNames::for_task(id).job;
        rig.runtime.block_on(job_complete(&rig.jobs, &job));
    }
    rig.runtime
        .block_on(make_orphan(&rig.jobs, &rig.maps, &rig.template));

    let second = rig.start();
    assert!(
        second.logged("resuming tasks left unfinished", Duration::from_secs(20)),
        "resumed on start"
    );
    for id in HELD {
        rig.release(id);
    }
    let mut finished = BTreeMap::from([(EARLY.to_owned(), early)]);
    for id in DOWN.iter().chain(&HELD) {
        let record = wait_finished(&second.base, id, deadline, &second);
        finished.insert((*id).to_owned(), record);
    }
    let second_log = second.log.lock().expect("the log").clone();
    rig.assert_each_right_once(&finished);
    let adopted = second_log
        .lines()
        .filter(|l| l.contains("adopting the Job a previous run made"))
        .count();
    assert_eq!(adopted, DOWN.len() + HELD.len(), "log:\n{second_log}");

    rig.runtime.block_on(assert_nothing_left(&ns.name));
    let created = assert_one_each(&job_uids, &pod_uids);
    eprintln!(
        "{} tasks, {adopted} Jobs adopted after the SIGKILL, the orphan removed; {created} Jobs \
         created in all (the orphan's included), none twice for a task",
        all_tasks().len(),
    );
}

/// Every task of the test.
fn all_tasks() -> Vec<&'static str> {
    [EARLY].iter().chain(&DOWN).chain(&HELD).copied().collect()
}

/// The coordinator's files and identity, and the test's own client of the cluster.
struct Rig {
    runtime: tokio::runtime::Runtime,
    jobs: Api<Job>,
    pods: Api<Pod>,
    maps: Api<ConfigMap>,
    local: Arc<LocalBackend>,
    namespace: String,
    kubeconfig: PathBuf,
    template: PathBuf,
    tasks_file: PathBuf,
    results: PathBuf,
    state: PathBuf,
}

impl Rig {
    /// The coordinator's identity and files in `dir`: every task in its tasks file.
    fn new(cluster: &Cluster, namespace: &str, dir: &Path) -> Self {
        let tasks: Vec<Value> = all_tasks().into_iter().map(task).collect();
        let tasks_file = dir.join("tasks.json");
        std::fs::write(&tasks_file, Value::from(tasks).to_string())
            .expect("writing the tasks file");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let client = runtime
            .block_on(kube::Client::try_default())
            .expect("the admin client");
        Self {
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            maps: Api::namespaced(client, namespace),
            runtime,
            local: local_runtime(),
            namespace: namespace.to_owned(),
            kubeconfig: coordinator_identity(cluster, namespace, dir),
            template: held_template(dir),
            tasks_file,
            results: dir.join("results.jsonl"),
            state: dir.join("state"),
        }
    }

    /// Starts the coordinator on the state directory.
    fn start(&self) -> Service {
        let mut cmd = command(&self.state);
        cmd.env("COORDINATOR_BACKEND", "kubernetes")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("COORDINATOR_NAMESPACE", &self.namespace)
            .env("COORDINATOR_JOB_TEMPLATE", &self.template)
            .env("COORDINATOR_CONCURRENCY", "8")
            .env("COORDINATOR_TASKS_FILE", &self.tasks_file)
            .env("COORDINATOR_RESULTS_FILE", &self.results);
        Service::start(cmd)
    }

    /// Waits for the held pod of task `id`; returns its name.
    fn held_pod(&self, id: &str) -> String {
        let job = TaskNames::for_task(id).job;
        self.runtime.block_on(held_pod(&self.pods, &job))
    }

    /// Plays the executor for task `id`'s held pod.
    fn release(&self, id: &str) {
        let pod = self.held_pod(id);
        let job = TaskNames::for_task(id).job;
        self.runtime
            .block_on(release(&self.pods, &self.maps, &self.local, &pod, &job));
    }

    /// Every task succeeded with its own result, run once more only if in flight at the kill,
    /// and written back once.
    fn assert_each_right_once(&self, finished: &BTreeMap<String, Value>) {
        for (id, record) in finished {
            assert_eq!(record["state"], "succeeded", "{id}: {record}");
            let want = json!(fib(fib_arg(id)));
            assert_eq!(record["result"]["result"], want, "{id}: {record}");
            let attempts = if id == EARLY { 1 } else { 2 };
            assert_eq!(record["attempts"], attempts, "{id}: {record}");
        }
        let written = std::fs::read_to_string(&self.results).expect("the results file");
        for id in all_tasks() {
            let key = format!("\"task_id\":\"{id}\"");
            assert_eq!(written.matches(&key).count(), 1, "{id} once:\n{written}");
        }
    }
}

/// One Job and one pod per task were ever created, none of another name but the orphan's,
/// whose Job was there; returns the Jobs created.
fn assert_one_each(job_uids: &Seen, pod_uids: &Seen) -> usize {
    let orphan = TaskNames::for_task(ORPHAN).job;
    let jobs = job_uids.lock().expect("the uids").clone();
    assert_eq!(jobs.get(&orphan).map(BTreeSet::len), Some(1), "the orphan");
    for (kind, seen) in [
        ("Job", jobs.clone()),
        ("pod", pod_uids.lock().expect("the uids").clone()),
    ] {
        for id in all_tasks() {
            let name = TaskNames::for_task(id).job;
            let uids = seen.get(&name).map_or(0, BTreeSet::len);
            assert_eq!(uids, 1, "{id}: one {kind} in all, saw {seen:?}");
        }
        let others = seen.keys().filter(|k| **k != orphan).count();
        assert_eq!(
            others,
            all_tasks().len(),
            "no {kind} of another name: {seen:?}"
        );
    }
    jobs.values().map(BTreeSet::len).sum()
}

/// Task `id`: fib of its argument, from the sample mirror.
fn task(id: &str) -> Value {
    json!({"task_id": id, "wasm_cid": FIB_CID, "input": {"entry": "fib", "args": [fib_arg(id)]}})
}

/// A different argument per task, so a result given to the wrong task fails the test.
fn fib_arg(id: &str) -> u64 {
    10 + id.bytes().map(u64::from).sum::<u64>() % 30
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// Records the uid of every object of the coordinator's `api` shows from now on, by
/// `name(object)`: a list, then a watch from its resourceVersion, resumed from the last one
/// seen (a fresh list after `410 Gone`), so no object created meanwhile is missed.
fn record<K>(runtime: &tokio::runtime::Runtime, api: Api<K>, name: fn(&K) -> Option<String>) -> Seen
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = Seen::default();
    let add = {
        let seen = seen.clone();
        move |object: &K| {
            if let (Some(key), Some(uid)) = (name(object), object.meta().uid.clone()) {
                seen.lock()
                    .expect("the uids")
                    .entry(key)
                    .or_default()
                    .insert(uid);
            }
        }
    };
    watch_each(runtime, api, &managed_selector(), add);
    seen
}

/// Waits (up to 60 s) for the held pod of Job `job`; returns its name.
async fn held_pod(pods: &Api<Pod>, job: &str) -> String {
    let params = ListParams::default().labels(&format!("job-name={job}"));
    let started = Instant::now();
    loop {
        let list = pods.list(&params).await.expect("listing pods");
        if let Some(pod) = list.items.iter().find(|p| is_held(p)) {
            return pod.meta().name.clone().expect("a pod's name");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no held pod of {job}: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 60 s) until the job controller has marked Job `name` complete.
async fn job_complete(jobs: &Api<Job>, name: &str) {
    let started = Instant::now();
    loop {
        let job = jobs.get(name).await.expect("the Job");
        let complete = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            });
        if complete {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} not complete: {:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Job as the coordinator renders it, and a ConfigMap of its own, for a task the coordinator
/// does not have: what a crash between a task's end and its clean-up, or a lost state
/// directory, leaves.
async fn make_orphan(jobs: &Api<Job>, maps: &Api<ConfigMap>, template: &Path) {
    let names = TaskNames::for_task(ORPHAN);
    let spec = TaskSpec::new(ORPHAN, FIB_CID, json!({"entry": "fib", "args": [1]}));
    let run = RunSettings {
        image: "executor-demo/executor:demo".into(),
        timeout_sec: 10.0,
        max_memory_mb: 64,
        max_output_bytes: 1024,
        fuel: None,
        start_allowance_sec: 120,
    };
    let job = JobTemplate::load(template)
        .expect("the template")
        .render(&spec, &names, &run);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("creating the orphan Job");
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(names.job.clone()),
            labels: Some([(MANAGED_BY_KEY.into(), MANAGED_BY_VALUE.into())].into()),
            annotations: Some([(TASK_ID_ANNOTATION.into(), ORPHAN.into())].into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &map)
        .await
        .expect("creating the orphan ConfigMap");
}
