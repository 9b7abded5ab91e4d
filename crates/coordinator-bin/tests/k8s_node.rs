//! The `coordinator` binary with `COORDINATOR_BACKEND=kubernetes` on the suite's REAL node
//! (`scripts/cluster node-up`: containerd 1.6, runc and a kubelet of the pinned release): every
//! task's pod really runs the hardened executor image, in a namespace where PodSecurity
//! `restricted` is enforced, under the coordinator's own ServiceAccount and Role
//! (`k8s/coordinator.yaml`).
//!
//! The template is `k8s/job.yaml` as shipped, placed on the real node (its nodeSelector and a
//! toleration of its taint, `RealNode::place`); the image is the one `scripts/test` built from
//! the suite's binaries and imported (`WASM_EXEC_NODE_EXECUTOR_IMAGE`). A watch of the test keeps
//! the last state of every pod, so each test checks what the kubelet reported, not only what the
//! coordinator made of it.

#[path = "support/kube.rs"]
mod kube_peer;
mod support;

use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, Pod};
use kube::api::Api;
use kube_peer::{assert_nothing_left, coordinator_identity, wait_finished, watch_each};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Service, command, post, repo};
use wasm_exec_coordinator::source::placeholder::{ADD_CID, AFFINE_CID, FIB_CID};
use wasm_exec_kube_backend::names::{TASK_LABEL, TaskNames};
use wasm_exec_kube_backend::render;
use wasm_exec_task::ErrorKind;
use wasm_exec_task::ResultEnvelope;
use wasm_exec_test_peers::golden::golden_cases;
use wasm_exec_test_peers::kube::{Namespace, RealNode};

/// How long one test waits for its tasks: image start, a kubelet's sync loop, the Job's end.
const TASK_WAIT: Duration = Duration::from_secs(180);

/// The last state seen of every pod, by name.
type Pods = Arc<Mutex<BTreeMap<String, Pod>>>;

/// One test's coordinator on the real node, in a namespace of its own.
struct Rig {
    node: RealNode,
    ns: Namespace,
    runtime: tokio::runtime::Runtime,
    pods: Pods,
    service: Service,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// The coordinator on `node` with the template `edit` makes from `k8s/job.yaml` (after it
    /// is placed on the node), running `image`; modules from a mirror of `host/wasm` and
    /// `testdata/wasm`.
    fn start(node: RealNode, prefix: &str, image: &str, edit: impl FnOnce(&mut Value)) -> Rig {
        let ns = node.cluster.namespace(
            prefix,
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kubeconfig = coordinator_identity(&node.cluster, &ns.name, dir.path());
        let template = template(&node, dir.path(), edit);
        let mirror = mirror(dir.path());
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let pods = watch_pods(&runtime, &ns.name);
        let mut cmd = command(&dir.path().join("state"));
        cmd.env("COORDINATOR_BACKEND", "kubernetes")
            .env("KUBECONFIG", &kubeconfig)
            .env("COORDINATOR_NAMESPACE", &ns.name)
            .env("COORDINATOR_JOB_TEMPLATE", &template)
            .env("COORDINATOR_EXECUTOR_IMAGE", image)
            .env("COORDINATOR_IPFS_MIRROR", &mirror)
            .env("COORDINATOR_CONCURRENCY", concurrency().to_string());
        let service = Service::start(cmd);
        Rig {
            node,
            ns,
            runtime,
            pods,
            service,
            _dir: dir,
        }
    }

    /// Submits `body` (201 expected).
    fn submit(&self, body: &Value) {
        let r = post(&self.service.base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(r.status, 201, "{body}: {r:?}");
    }

    /// The task's record once it is finished and reported.
    fn finished(&self, id: &str) -> Value {
        wait_finished(
            &self.service.base,
            id,
            Instant::now() + TASK_WAIT,
            &self.service,
        )
    }

    /// The last state seen of the pod of task `id`, and its executor container's end; panics
    /// when the watch saw none.
    fn pod_of(&self, id: &str) -> (Pod, ContainerStateTerminated) {
        let hash = TaskNames::for_task(id).task_hash;
        let pods = self.pods.lock().expect("the pods");
        let pod = pods
            .values()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(TASK_LABEL))
                    .is_some_and(|t| *t == hash)
            })
            .find(|p| executor_end(p).is_some())
            .cloned()
            .unwrap_or_else(|| panic!("no ended pod of {id} seen: {:?}", pods.keys()));
        let end = executor_end(&pod).expect("an end");
        (pod, end)
    }

    /// Waits until no Job, pod or ConfigMap of the coordinator is left in the API, and no
    /// container of the namespace runs in the node's containerd. (The exited ones are removed
    /// by the kubelet's container GC, which runs once a minute: 20 to 55 s after the pod's
    /// deletion, measured; `scripts/cluster down` removes what is left.)
    fn assert_nothing_left(&self) {
        self.runtime.block_on(assert_nothing_left(&self.ns.name));
        let started = Instant::now();
        loop {
            let left = self.node.running_containers_of(&self.ns.name);
            if left.is_empty() {
                eprintln!(
                    "no container running on the node after {:?}",
                    started.elapsed()
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "containers still running on {} after 60 s: {left:?}",
                self.node.name
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `k8s/job.yaml`, placed on the real node, then changed by `edit`; as JSON in `dir`.
fn template(node: &RealNode, dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    node.place(&mut job["spec"]["template"]["spec"]);
    edit(&mut job);
    let path = dir.join("template.json");
    std::fs::write(&path, job.to_string()).expect("writing the template");
    path
}

/// A module mirror with the samples, the test guests, and each golden case's module as
/// `golden-NAME.wasm`.
fn mirror(dir: &Path) -> PathBuf {
    let mirror = dir.join("mirror");
    std::fs::create_dir(&mirror).expect("the mirror directory");
    for file in [
        "host/wasm/add.wasm",
        "host/wasm/fib.wasm",
        "host/wasm/affine.wasm",
        "testdata/wasm/hostile.wasm",
        "testdata/wasm/command.wasm",
    ] {
        let from = repo(file);
        std::fs::copy(&from, mirror.join(from.file_name().expect("a file name"))).expect(file);
    }
    for case in golden_cases() {
        std::fs::write(
            mirror.join(format!("golden-{}.wasm", case.name)),
            &case.wasm,
        )
        .expect("a golden module");
    }
    mirror
}

/// A watch of the pods of `namespace` that keeps the last state of each.
fn watch_pods(runtime: &tokio::runtime::Runtime, namespace: &str) -> Pods {
    let client = runtime
        .block_on(kube::Client::try_default())
        .expect("the admin client");
    let pods = Pods::default();
    let seen = pods.clone();
    watch_each(
        runtime,
        Api::namespaced(client, namespace),
        "",
        move |p: &Pod| {
            let name = p.metadata.name.clone().unwrap_or_default();
            seen.lock().expect("the pods").insert(name, p.clone());
        },
    );
    pods
}

/// How the pod's executor container ended, once it has.
fn executor_end(pod: &Pod) -> Option<ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "executor")?
        .state
        .as_ref()?
        .terminated
        .clone()
}

/// The pod's executor container as specified.
fn executor(pod: &Pod) -> &Container {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "executor"))
        .expect("the executor container")
}

/// Asserts that `pod` ran on the real node, hardened: non-root, read-only root, no privilege
/// escalation, no capabilities, no service-account token, CPU and memory limits.
fn assert_hardened(node: &RealNode, pod: &Pod, end: &ContainerStateTerminated) {
    let spec = pod.spec.as_ref().expect("a spec");
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    assert_eq!(
        spec.node_name.as_deref(),
        Some(node.name.as_str()),
        "{name}"
    );
    assert!(
        end.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{name} ran in containerd: {end:?}"
    );
    assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
    let c = executor(pod);
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .all(|m| !m.mount_path.starts_with("/var/run/secrets")),
        "{name}: no token mounted: {:?}",
        c.volume_mounts
    );
    let pod_security = spec
        .security_context
        .as_ref()
        .expect("a pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true), "{name}");
    assert_eq!(pod_security.run_as_user, Some(65532), "{name}");
    let security = c.security_context.as_ref().expect("a securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
    assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert!(
        limits.contains_key("cpu") && limits.contains_key("memory"),
        "{name}: {limits:?}"
    );
}

/// Rounds of the three samples (`K8S_NODE_ROUNDS` overrides, to measure by hand: 34 gives
/// 102 tasks).
fn rounds_wanted() -> usize {
    std::env::var("K8S_NODE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// The executor's CPU request as `K8S_NODE_CPU_REQUEST` sets it, to measure by hand what the
/// template's 500m (4 pods on a 2-CPU node) bounds; the template's own otherwise.
fn cpu_request(job: &mut Value) {
    if let Ok(cpu) = std::env::var("K8S_NODE_CPU_REQUEST") {
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
            json!(cpu);
    }
}

/// Tasks in flight (`K8S_NODE_CONCURRENCY` overrides, to measure by hand; the node takes 20
/// pods).
fn concurrency() -> usize {
    std::env::var("K8S_NODE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// `rounds` rounds of the seed's samples: task id, request body, expected result.
fn sample_tasks(rounds: usize) -> Vec<(String, Value, Value)> {
    let samples = [
        ("add", ADD_CID, Value::Null, json!(12)),
        (
            "fib",
            FIB_CID,
            json!({"entry": "fib", "args": [12]}),
            json!(144),
        ),
        (
            "affine",
            AFFINE_CID,
            json!({"entry": "affine", "args": [13, 9, 2]}),
            json!(35),
        ),
    ];
    (0..rounds)
        .flat_map(|round| {
            samples.iter().map(move |(name, cid, input, want)| {
                let id = format!("{name}-{round}");
                // Each round runs again (a pod each), never answered from the result cache.
                let body = json!({"task_id": id, "wasm_cid": cid, "input": input, "cache": false});
                (id, body, want.clone())
            })
        })
        .collect()
}

/// Milliseconds from the task's creation to its end, from its own timeline.
fn submit_to_result_ms(record: &Value) -> f64 {
    let created = record["created_at_ms"].as_f64().unwrap_or(f64::NAN);
    let ended = record["timeline"]
        .as_array()
        .and_then(|t| t.last())
        .and_then(|e| e["at_ms"].as_f64())
        .unwrap_or(f64::NAN);
    ended - created
}

/// p50 and p95 of `values` (sorted in place).
fn p50_p95(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((values.len() as f64 * q).ceil() as usize).saturating_sub(1);
        values.get(i).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.95))
}

/// The same tasks on the local backend at the same concurrency: submit to result, p50 and p95.
fn local_figures(tasks: &[(String, Value, Value)]) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_CONCURRENCY", concurrency().to_string());
    let service = Service::start(cmd);
    for (id, body, _) in tasks {
        let r = post(&service.base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(r.status, 201, "{id}: {r:?}");
    }
    let mut times: Vec<f64> = tasks
        .iter()
        .map(|(id, _, want)| {
            let record = wait_finished(&service.base, id, Instant::now() + TASK_WAIT, &service);
            assert_eq!(record["result"]["result"], *want, "local {id}: {record}");
            submit_to_result_ms(&record)
        })
        .collect();
    p50_p95(&mut times)
}

#[test]
fn the_three_samples_run_in_real_pods_of_the_hardened_image_and_leave_nothing() {
    let test = "the_three_samples_run_in_real_pods_of_the_hardened_image_and_leave_nothing";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    let rig = Rig::start(node, "node-samples", &image, cpu_request);
    // The seed's samples, twice each (by default), so that the figures have more than one pod.
    let tasks = sample_tasks(rounds_wanted());
    let started = Instant::now();
    for (_, body, _) in &tasks {
        rig.submit(body);
    }
    let (mut total, mut pod_to_result) = (Vec::new(), Vec::new());
    for (id, _, want) in &tasks {
        let record = rig.finished(id);
        assert_eq!(record["state"], "succeeded", "{id}: {record}");
        assert_eq!(record["result"]["result"], *want, "{id}: {record}");
        let (pod, end) = rig.pod_of(id);
        assert_hardened(&rig.node, &pod, &end);
        assert_eq!(end.exit_code, 0, "{id}: {end:?}");
        // The result came from the termination message the executor wrote in the real pod.
        let message: Value = serde_json::from_str(end.message.as_deref().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{id}: termination message {end:?}: {e}"));
        assert_eq!(message["result"], *want, "{id}: {message}");
        assert_eq!(message["ok"], true, "{id}: {message}");
        let phases = &record["result"]["phases"];
        pod_to_result.push(
            ["starting_ms", "running_ms"]
                .iter()
                .map(|p| phases[p].as_f64().unwrap_or(f64::NAN))
                .sum(),
        );
        total.push(submit_to_result_ms(&record));
    }
    let rate = tasks.len() as f64 / started.elapsed().as_secs_f64();
    let (pod50, pod95) = p50_p95(&mut pod_to_result);
    let (all50, all95) = p50_p95(&mut total);
    let (local50, local95) = local_figures(&tasks);
    eprintln!(
        "{} tasks submitted at once, concurrency {}: real node: pod start to result p50 {pod50:.0} \
         ms, p95 {pod95:.0} ms; submit to result p50 {all50:.0} ms, p95 {all95:.0} ms; local \
         backend: submit to result p50 {local50:.1} ms, p95 {local95:.1} ms; {rate:.2} tasks/s \
         through real pods",
        tasks.len(),
        concurrency()
    );
    rig.assert_nothing_left();
}

#[test]
fn a_result_over_4096_bytes_comes_from_the_real_log() {
    let test = "a_result_over_4096_bytes_comes_from_the_real_log";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    let rig = Rig::start(node, "node-log", &image, |_| {});
    // 3 KiB on stdout and 3 KiB on stderr: the document is over the 4096 bytes of a
    // termination message, so the executor writes none and the coordinator reads the log.
    let bytes = 3 * 1024;
    rig.submit(&json!({"task_id": "flood", "wasm_cid": "command.wasm",
        "input": {"mode": "flood", "bytes": bytes}}));
    let record = rig.finished("flood");
    assert_eq!(record["state"], "succeeded", "{record}");
    let doc = &record["result"];
    assert_eq!(doc["stdout"].as_str().map(str::len), Some(bytes), "{doc}");
    assert_eq!(doc["stderr"].as_str().map(str::len), Some(bytes), "{doc}");
    assert!(
        doc["stdout"].as_str().unwrap().bytes().all(|b| b == b'x'),
        "{doc}"
    );
    let (pod, end) = rig.pod_of("flood");
    assert_hardened(&rig.node, &pod, &end);
    assert_eq!(end.exit_code, 0, "{end:?}");
    assert!(
        end.message.as_deref().unwrap_or("").is_empty(),
        "no termination message for a document over 4096 bytes: {end:?}"
    );
    rig.assert_nothing_left();
}

#[test]
fn a_memory_bomb_past_the_container_limit_is_oomkilled_and_out_of_memory() {
    let test = "a_memory_bomb_past_the_container_limit_is_oomkilled_and_out_of_memory";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    // The container may hold 128 MiB; the task's own budget (MAX_MEMORY_MB) is 1000 MiB, so
    // the kernel's limit comes first.
    let rig = Rig::start(node, "node-oom", &image, |job| {
        let c = &mut job["spec"]["template"]["spec"]["containers"][0];
        c["resources"] = json!({"requests": {"cpu": "500m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"}});
    });
    rig.submit(
        &json!({"task_id": "bomb", "wasm_cid": "hostile.wasm", "entry": "membomb",
        "limits": {"max_memory_mb": 1000, "timeout_sec": 60}}),
    );
    let record = rig.finished("bomb");
    assert_eq!(record["state"], "failed", "{record}");
    let error = &record["result"]["error"];
    assert_eq!(error["kind"], "out_of_memory", "{record}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("OOMKilled"),
        "{record}"
    );
    let (pod, end) = rig.pod_of("bomb");
    assert_hardened(&rig.node, &pod, &end);
    assert_eq!(end.reason.as_deref(), Some("OOMKilled"), "{end:?}");
    assert_eq!(end.exit_code, 137, "{end:?}");
    rig.assert_nothing_left();
}

#[test]
fn an_endless_loop_ends_as_timeout_saying_which_limit() {
    let test = "an_endless_loop_ends_as_timeout_saying_which_limit";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    let rig = Rig::start(node, "node-loop", &image, |_| {});
    // The executor's own limit (TIMEOUT_SEC = 2) comes long before activeDeadlineSeconds
    // (the timeout plus 120 s).
    rig.submit(
        &json!({"task_id": "spin", "wasm_cid": "hostile.wasm", "entry": "spin",
        "limits": {"timeout_sec": 2}}),
    );
    let record = rig.finished("spin");
    assert_eq!(record["state"], "failed", "{record}");
    let error = &record["result"]["error"];
    assert_eq!(error["kind"], "timeout", "{record}");
    let message = error["message"].as_str().unwrap_or("");
    assert!(
        message.contains("time limit of 2 s (TIMEOUT_SEC)"),
        "the message says which limit: {record}"
    );
    let (pod, end) = rig.pod_of("spin");
    assert_hardened(&rig.node, &pod, &end);
    assert_eq!(end.exit_code, ErrorKind::Timeout.exit_code(), "{end:?}");
    rig.assert_nothing_left();
}

#[test]
fn a_job_deadline_before_the_executors_limit_ends_as_timeout_saying_so() {
    let test = "a_job_deadline_before_the_executors_limit_ends_as_timeout_saying_so";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    // The template's activeDeadlineSeconds (kept as the operator set it) is 5 s; the task's
    // own limit is 120 s: Kubernetes stops the pod first.
    let rig = Rig::start(node, "node-deadline", &image, |job| {
        job["spec"]["activeDeadlineSeconds"] = json!(5);
    });
    let started = Instant::now();
    rig.submit(
        &json!({"task_id": "spin", "wasm_cid": "hostile.wasm", "entry": "spin",
        "limits": {"timeout_sec": 120}}),
    );
    let record = rig.finished("spin");
    let took = started.elapsed();
    assert_eq!(record["state"], "failed", "{record}");
    let error = &record["result"]["error"];
    assert_eq!(error["kind"], "timeout", "{record}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("activeDeadlineSeconds (5 s"),
        "the message says which limit: {record}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    rig.assert_nothing_left();
}

#[test]
fn a_stdout_flood_stays_bounded() {
    let test = "a_stdout_flood_stays_bounded";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    let rig = Rig::start(node, "node-flood", &image, |_| {});
    // 16 MiB to each stream; 2 KiB kept of each.
    rig.submit(&json!({"task_id": "flood", "wasm_cid": "command.wasm",
        "input": {"mode": "flood", "bytes": 16 << 20}, "limits": {"max_output_bytes": 2048}}));
    let record = rig.finished("flood");
    assert_eq!(record["state"], "succeeded", "{record}");
    let doc = &record["result"];
    assert_eq!(doc["truncated"], true, "{doc}");
    assert_eq!(doc["stdout"].as_str().map(str::len), Some(2048), "{doc}");
    assert_eq!(doc["stderr"].as_str().map(str::len), Some(2048), "{doc}");
    let (pod, end) = rig.pod_of("flood");
    assert_hardened(&rig.node, &pod, &end);
    assert_eq!(end.exit_code, 0, "{end:?}");
    rig.assert_nothing_left();
}

#[test]
fn a_missing_image_fails_fast_naming_it() {
    let test = "a_missing_image_fails_fast_naming_it";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    // No registry is reachable and this image was never imported: with `Never` the kubelet
    // says ErrImageNeverPull at once.
    let image = "docker.io/executor-demo/executor:not-imported";
    let rig = Rig::start(node, "node-image", image, |job| {
        job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    });
    let started = Instant::now();
    rig.submit(&json!({"task_id": "noimage", "wasm_cid": FIB_CID,
        "input": {"entry": "fib", "args": [5]}}));
    let record = rig.finished("noimage");
    let took = started.elapsed();
    assert_eq!(record["state"], "failed", "{record}");
    let message = record["result"]["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(image) && message.contains("ErrImageNeverPull"),
        "the message names the image: {record}"
    );
    assert!(
        took < Duration::from_secs(60),
        "failed fast, not at a deadline: {took:?}"
    );
    eprintln!("missing image failed in {took:.1?}: {message}");
    rig.assert_nothing_left();
}

/// `manifest` (a file of `k8s/`) for the real node: on it, running `image`, its hostPath
/// volumes pointed at this repository's `host/wasm` and at `shared`; as JSON in `dir`.
fn demo_manifest(node: &RealNode, manifest: &str, shared: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo(manifest)).expect("the manifest");
    let mut object: Value = serde_saphyr::from_str(&text).expect("the manifest parses");
    let spec = if object["kind"] == "Job" {
        &mut object["spec"]["template"]["spec"]
    } else {
        &mut object["spec"]
    };
    node.place(spec);
    spec["containers"][0]["image"] = json!(node.executor_image);
    for volume in spec["volumes"].as_array_mut().expect("volumes") {
        let path = match volume["name"].as_str() {
            // A hostPath may not contain `..`.
            Some("wasm") => repo("host/wasm").canonicalize().expect("host/wasm"),
            Some("shared") => shared.to_path_buf(),
            other => panic!("{manifest}: unexpected volume {other:?}"),
        };
        volume["hostPath"]["path"] = json!(path);
    }
    let path = dir.join(manifest.replace('/', "-"));
    std::fs::write(&path, object.to_string()).expect("writing the manifest");
    path
}

/// The last non-empty line of `log`, parsed as the result document.
fn last_document(log: &str) -> Value {
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}\nlog:\n{log}"))
}

/// A namespace for the seed's demo manifests on the real node, and the directory their
/// `shared` hostPath volume points at.
struct Demo {
    node: RealNode,
    ns: Namespace,
    dir: tempfile::TempDir,
    shared: PathBuf,
}

impl Demo {
    fn new(node: RealNode) -> Demo {
        // hostPath volumes are not allowed under PodSecurity baseline or restricted: a
        // namespace without enforcement, as the demo's own cluster would have.
        let ns = node.cluster.namespace("node-demo", &[]);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("the shared directory");
        // Written by the executor's uid 65532.
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(&shared, mode).expect("chmod");
        Demo {
            node,
            ns,
            dir,
            shared,
        }
    }

    /// `kubectl ARGS` in the demo's namespace.
    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["--namespace", self.ns.name.as_str()];
        all.extend_from_slice(args);
        self.node.cluster.kubectl(&all)
    }

    /// Applies `manifest` made for the real node ([`demo_manifest`]); returns its path.
    fn apply(&self, manifest: &str) -> PathBuf {
        let path = demo_manifest(&self.node, manifest, &self.shared, self.dir.path());
        self.kubectl(&["apply", "-f", &path.to_string_lossy()])
            .unwrap_or_else(|e| panic!("applying {manifest}: {e}"));
        path
    }
}

#[test]
fn the_seeds_demo_job_gives_fib_12_as_the_readme_tells() {
    let test = "the_seeds_demo_job_gives_fib_12_as_the_readme_tells";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let demo = Demo::new(node);
    // `make k8s-apply` (kubectl apply -f k8s/job.yaml), then scripts/tail-k8s.sh.
    let job = demo.apply("k8s/job.yaml");
    let kubectl = format!(
        "kubectl --kubeconfig={} --namespace={}",
        demo.node.cluster.kubeconfig.display(),
        demo.ns.name
    );
    let tail = std::process::Command::new(repo("scripts/tail-k8s.sh"))
        .env("KUBECTL", kubectl)
        .env("JOB_TEMPLATE", &job)
        .output()
        .expect("scripts/tail-k8s.sh");
    assert!(tail.status.success(), "tail-k8s.sh: {tail:?}");
    let doc = last_document(&String::from_utf8_lossy(&tail.stdout));
    assert_eq!(
        (&doc["ok"], &doc["result"]),
        (&json!(true), &json!(144)),
        "{doc}"
    );
    demo.kubectl(&[
        "wait",
        "--for=condition=Complete",
        "job/wasm-executor-job",
        "--timeout=120s",
    ])
    .expect("the Job completes");
    // `kubectl logs job/wasm-executor-job`: its last line is the document.
    let logs = demo
        .kubectl(&["logs", "job/wasm-executor-job"])
        .expect("kubectl logs");
    assert_eq!(last_document(&logs)["result"], 144, "{logs}");
    let file = std::fs::read_to_string(demo.shared.join("result.json")).expect("the result file");
    // The result file holds the document pretty-printed.
    let written: Value = serde_json::from_str(&file).expect("the result file is JSON");
    assert_eq!(written["result"], 144, "{file}");
}

#[test]
fn the_seeds_demo_pod_gives_fib_12_in_its_log_and_termination_message() {
    let test = "the_seeds_demo_pod_gives_fib_12_in_its_log_and_termination_message";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let demo = Demo::new(node);
    demo.apply("k8s/pod.yaml");
    demo.kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/wasm-executor-demo",
        "--timeout=120s",
    ])
    .expect("the pod succeeds");
    let logs = demo
        .kubectl(&["logs", "pod/wasm-executor-demo"])
        .expect("kubectl logs");
    assert_eq!(last_document(&logs)["result"], 144, "{logs}");
    let status = |path: &str| {
        demo.kubectl(&[
            "get",
            "pod/wasm-executor-demo",
            "-o",
            &format!("jsonpath={path}"),
        ])
        .expect("the pod's status")
    };
    let message = status("{.status.containerStatuses[0].state.terminated.message}");
    assert_eq!(last_document(&message)["result"], 144, "{message}");
    assert_eq!(status("{.spec.nodeName}"), demo.node.name);
}

/// `k8s/pod.yaml` on the real node with its module from the ConfigMap `late` (not yet created)
/// and its shared volume an emptyDir.
fn late_configmap_pod(node: &RealNode) -> Value {
    let text = std::fs::read_to_string(repo("k8s/pod.yaml")).expect("k8s/pod.yaml");
    let mut pod: Value = serde_saphyr::from_str(&text).expect("k8s/pod.yaml parses");
    node.place(&mut pod["spec"]);
    let container = &mut pod["spec"]["containers"][0];
    container["image"] = json!(node.executor_image);
    assert_eq!(container["env"][0]["name"], "WASM_PATH");
    container["env"][0]["value"] = json!("/mnt/wasm/module.wasm");
    pod["spec"]["volumes"] = json!([
        {"name": "wasm", "configMap": {"name": "late"}},
        {"name": "shared", "emptyDir": {}},
    ]);
    pod
}

#[test]
fn a_configmap_mounted_before_it_exists_is_waited_for_then_the_task_runs() {
    let test = "a_configmap_mounted_before_it_exists_is_waited_for_then_the_task_runs";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    // What the coordinator relies on when its Job's pod starts before the task's ConfigMap is
    // created: the kubelet waits for the volume (FailedMount) and starts the pod once it exists.
    let pod = late_configmap_pod(&node);
    let demo = Demo::new(node);
    let kubectl = |args: &[&str]| demo.kubectl(args);
    demo.node
        .cluster
        .apply(&demo.ns.name, &pod.to_string())
        .expect("applying the pod");
    let waiting = Instant::now() + Duration::from_secs(60);
    loop {
        let events =
            kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"]).expect("the events");
        if events.contains("FailedMount") {
            break;
        }
        assert!(Instant::now() < waiting, "no FailedMount: {events}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let phase = kubectl(&[
        "get",
        "pod/wasm-executor-demo",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(phase.as_deref(), Ok("Pending"), "waits for its volume");
    let module = format!(
        "--from-file=module.wasm={}",
        repo("host/wasm/fib.wasm").display()
    );
    kubectl(&["create", "configmap", "late", &module]).expect("the ConfigMap");
    kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/wasm-executor-demo",
        "--timeout=150s",
    ])
    .expect("the pod runs once its ConfigMap exists");
    let message = kubectl(&[
        "get",
        "pod/wasm-executor-demo",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.terminated.message}",
    ])
    .expect("the pod's status");
    assert_eq!(last_document(&message)["result"], 144, "{message}");
}

#[test]
fn without_the_roles_pods_log_verb_a_big_result_fails_with_a_clear_403() {
    let test = "without_the_roles_pods_log_verb_a_big_result_fails_with_a_clear_403";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    let rig = Rig::start(node, "node-rbac", &image, |_| {});
    // k8s/coordinator.yaml's Role less its one rule for pods/log.
    let rules = rig
        .node
        .cluster
        .kubectl(&[
            "get",
            "role",
            "wasm-exec-coordinator",
            "--namespace",
            &rig.ns.name,
            "-o",
            "json",
        ])
        .expect("the Role");
    let rules: Value = serde_json::from_str(&rules).expect("the Role is JSON");
    let index = rules["rules"]
        .as_array()
        .and_then(|r| r.iter().position(|r| r["resources"] == json!(["pods/log"])))
        .expect("a rule for pods/log in k8s/coordinator.yaml");
    let patch = json!([{"op": "remove", "path": format!("/rules/{index}")}]).to_string();
    rig.node
        .cluster
        .kubectl(&[
            "patch",
            "role",
            "wasm-exec-coordinator",
            "--namespace",
            &rig.ns.name,
            "--type=json",
            "-p",
            &patch,
        ])
        .expect("removing the rule");
    // Over 4096 bytes, so the result can only come from the log.
    rig.submit(&json!({"task_id": "big", "wasm_cid": "command.wasm",
        "input": {"mode": "flood", "bytes": 3 * 1024}}));
    let record = rig.finished("big");
    assert_eq!(record["state"], "failed", "{record}");
    let message = record["result"]["error"]["message"].as_str().unwrap_or("");
    eprintln!("without pods/log: {message}");
    assert!(
        message.contains("403 Forbidden")
            && message.contains("grant verb \"get\" on resource \"pods/log\""),
        "the message names the missing permission: {record}"
    );
}

#[test]
fn the_golden_result_hashes_come_out_of_real_pods_too() {
    let test = "the_golden_result_hashes_come_out_of_real_pods_too";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let image = node.executor_image.clone();
    let rig = Rig::start(node, "node-golden", &image, |_| {});
    // testdata/result_hash/golden.json: the hashes the executor binary and the local backend
    // give (tests/golden.rs, crates/executor/tests/e2e/golden.rs); here each from a real pod.
    let cases = golden_cases();
    for case in &cases {
        rig.submit(&json!({
            "task_id": case.name,
            "wasm_cid": format!("golden-{}.wasm", case.name),
            "input": case.input,
            "limits": case.limits,
        }));
    }
    let mut mismatches = Vec::new();
    for case in &cases {
        let record = rig.finished(&case.name);
        let envelope: ResultEnvelope =
            serde_json::from_value(record["result"].clone()).expect("a result document");
        let outcome = envelope.kind().map_or("ok", |k| k.as_str());
        let hash = envelope.result_hash().to_string();
        mismatches.extend(case.compare(outcome, &hash, &record["result"].to_string()));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    rig.assert_nothing_left();
}

/// `k8s/job.yaml` for the real node running the Go module (`testdata/wasm/go_fib.wasm`, 4.4 MB:
/// too big for a task's ConfigMap, so from a hostPath) with the compiled-module cache opted in
/// as docs/KUBERNETES.md tells: the hostPath `cache` as the `wasm-cache` volume and the Secret
/// `secret` as the key's, mounted where the coordinator's rendering mounts them.
fn go_job_with_cache(demo: &Demo, name: &str, cache: &Path, secret: &str) -> Value {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    job["metadata"]["name"] = json!(name);
    let pod = &mut job["spec"]["template"]["spec"];
    demo.node.place(pod);
    // The Secret's files are root's, readable by this group (its defaultMode 0440).
    pod["securityContext"]["fsGroup"] = json!(render::RUN_AS);
    let wasm = repo("testdata/wasm").canonicalize().expect("testdata/wasm");
    pod["volumes"] = json!([
        {"name": "wasm", "hostPath": {"path": wasm, "type": "Directory"}},
        {"name": "shared", "hostPath": {"path": demo.shared, "type": "Directory"}},
        {"name": render::CACHE_VOLUME, "hostPath": {"path": cache, "type": "Directory"}},
        {"name": render::CACHE_KEY_VOLUME, "secret": {"secretName": secret, "defaultMode": 0o440}},
    ]);
    let container = &mut pod["containers"][0];
    container["image"] = json!(demo.node.executor_image);
    container["env"] = json!([
        {"name": "WASM_PATH", "value": "/mnt/wasm/go_fib.wasm"},
        {"name": "ARGS_JSON", "value": r#"{"entry":"fib","args":[12]}"#},
        {"name": "TIMEOUT_SEC", "value": "120"},
        {"name": "WASM_CACHE_DIR", "value": render::CACHE_DIR},
        {"name": "WASM_CACHE_KEY_FILE", "value": render::CACHE_KEY_FILE},
    ]);
    // Compiling 4.4 MB of Wasm takes more than the demo's half core and 512 MiB.
    container["resources"] = json!({
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    });
    container["volumeMounts"]
        .as_array_mut()
        .expect("volumeMounts")
        .extend([
            json!({"name": render::CACHE_VOLUME, "mountPath": render::CACHE_MOUNT}),
            json!({"name": render::CACHE_KEY_VOLUME, "mountPath": render::CACHE_KEY_MOUNT, "readOnly": true}),
        ]);
    job
}

/// Runs `job` to completion; returns its executor's cache outcome and `load_ms` (the start until
/// the module was loaded), after checking it gave fib(12).
fn run_go_job(demo: &Demo, job: &Value) -> (String, f64) {
    let name = job["metadata"]["name"].as_str().expect("a name").to_owned();
    let path = demo.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, job.to_string()).expect("writing the Job");
    demo.kubectl(&["apply", "-f", &path.to_string_lossy()])
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
    let waited = demo.kubectl(&[
        "wait",
        "--for=condition=Complete",
        &format!("job/{name}"),
        "--timeout=180s",
    ]);
    let logs = demo
        .kubectl(&["logs", &format!("job/{name}")])
        .unwrap_or_default();
    waited.unwrap_or_else(|e| panic!("{name} did not complete: {e}\n{logs}"));
    assert_eq!(last_document(&logs)["result"], 144, "{logs}");
    let line = logs
        .lines()
        .find(|l| l.contains("task finished"))
        .unwrap_or_else(|| panic!("no outcome line in:\n{logs}"));
    let field = |key: &str| {
        line.split(&format!("{key}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .trim_matches('"')
            .to_owned()
    };
    let load_ms = field("load_ms").parse().expect("load_ms is a number");
    (field("cache"), load_ms)
}

#[test]
fn a_second_job_of_the_go_module_on_the_node_loads_what_the_first_compiled() {
    let test = "a_second_job_of_the_go_module_on_the_node_loads_what_the_first_compiled";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let demo = Demo::new(node);
    // The node's cache directory, as its operator prepares it: the executor's uid's alone.
    let cache = demo.dir.path().join("cache");
    std::fs::create_dir(&cache).expect("the cache directory");
    let uid = u32::try_from(render::RUN_AS).expect("a uid");
    std::os::unix::fs::chown(&cache, Some(uid), Some(uid)).expect("chown");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(&cache, mode).expect("chmod");
    // The key, made once and given to every node as a Secret (docs/KUBERNETES.md).
    let key = demo.dir.path().join("key");
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
        &mut bytes,
    )
    .expect("random bytes");
    std::fs::write(&key, bytes).expect("writing the key");
    let from_file = format!("--from-file=key={}", key.display());
    demo.kubectl(&["create", "secret", "generic", "cache-key", &from_file])
        .expect("the key's Secret");
    let first = run_go_job(
        &demo,
        &go_job_with_cache(&demo, "go-fib-1", &cache, "cache-key"),
    );
    let second = run_go_job(
        &demo,
        &go_job_with_cache(&demo, "go-fib-2", &cache, "cache-key"),
    );
    eprintln!("go_fib on the node: first Job {first:?}, second {second:?} (cache, load_ms)");
    assert_eq!(first.0, "miss", "the first Job compiles");
    assert_eq!(second.0, "hit", "the second loads the first's code");
    assert!(
        second.1 < first.1 / 4.0,
        "loading is far quicker than compiling: {second:?} against {first:?}"
    );
    let engine_dirs: Vec<_> = std::fs::read_dir(&cache)
        .expect("the cache directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        engine_dirs,
        [std::ffi::OsString::from("compiled")],
        "no key was made on the node: it came from the Secret"
    );
}
