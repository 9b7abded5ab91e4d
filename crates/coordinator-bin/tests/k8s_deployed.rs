//! The coordinator deployed INTO the suite's cluster from `k8s/coordinator.yaml`, as a user
//! deploys it: its image (the one `scripts/test` built and imported into the real node), its
//! ServiceAccount, Role and binding, its PersistentVolumeClaim, Deployment and Service, with the
//! Job template in the ConfigMap its comment names. Tasks go in through its Service's ClusterIP
//! (kube-proxy on the real node routes it), and the coordinator reaches the API server through
//! the `kubernetes` Service with its own token: the samples succeeding proves that the Role's
//! verbs are enough, and one verb taken away gives the clear 403.
//!
//! What a one-node cluster lacks and the test supplies, as its user would: a PersistentVolume
//! for the claim (a host directory), and the placement on the real node (kwok's fake nodes would
//! take the pods otherwise).

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{get, post, repo};
use wasm_exec_coordinator::source::placeholder::{ADD_CID, samples};
use wasm_exec_test_peers::kube::{Cluster, Namespace, RealNode};

/// How long the Deployment may take to be available, and each task to finish.
const PATIENCE: Duration = Duration::from_secs(180);
/// The coordinator's names in `k8s/coordinator.yaml`.
const NAME: &str = "wasm-exec-coordinator";
/// The uid the coordinator image runs as (its state volume must be writable by it).
const RUNTIME_UID: u32 = 65532;

#[test]
fn the_coordinator_deployed_from_its_manifest_runs_tasks_through_its_service() {
    let test = "the_coordinator_deployed_from_its_manifest_runs_tasks_through_its_service";
    let Some(node) = RealNode::from_env(test) else {
        return;
    };
    let Some(image) = node.coordinator_image.clone() else {
        eprintln!("{test}: skipped: no coordinator image on the real node");
        return;
    };
    if let Some(why) = node.services_unrouted() {
        eprintln!("{test}: skipped: Services do not route on the real node: {why}");
        return;
    }
    let ns = node.cluster.namespace(
        "deployed",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let _volume = deploy(&node, &image, &ns, dir.path());
    let base = service_url(&node.cluster, &ns);
    eprintln!("the coordinator's Service: {base}");
    routed(&base);
    // The seed's samples, through the API under ids of their own (the coordinator's placeholder
    // source runs them too, as `add`, `fib` and `affine`): add 12, fib 144, affine 35.
    for (mut task, want) in samples().into_iter().zip([12, 144, 35]) {
        task.task_id = format!("api-{}", task.task_id);
        let id = task.task_id.as_str();
        let body = serde_json::to_string(&task).expect("a task is JSON");
        let reply = post(&base, "/v1/tasks", &body, None);
        assert_eq!(reply.status, 201, "{id}: {reply:?}");
        let record = finished(&base, id, &ns);
        assert_eq!(record["state"], "succeeded", "{id}: {record}");
        assert_eq!(record["result"]["result"], want, "{id}: {record}");
    }
    nothing_of_the_tasks_left(&node.cluster, &ns);
    assert_a_missing_verb_is_named(&node.cluster, &ns, &base);
}

/// Deploys the coordinator in `ns` as a user does (its state volume, the Job template's
/// ConfigMap, `k8s/coordinator.yaml`) and waits for its rollout; the volume, deleted on drop.
fn deploy(node: &RealNode, image: &str, ns: &Namespace, dir: &Path) -> StateVolume {
    let volume = StateVolume::create(&node.cluster, ns, dir);
    job_template_config_map(node, ns, dir);
    let manifest = coordinator_manifest(node, image, dir);
    node.cluster
        .kubectl(&["apply", "-n", &ns.name, "-f", path(&manifest)])
        .expect("k8s/coordinator.yaml applies");
    let rollout = node.cluster.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{NAME}"),
        "-n",
        &ns.name,
        &format!("--timeout={}s", PATIENCE.as_secs()),
    ]);
    assert!(
        rollout.is_ok(),
        "{rollout:?}\n{}\n{}",
        ns.state(),
        coordinator_log(ns)
    );
    volume
}

/// The Role less `create` on ConfigMaps: the next task fails at once, naming the grant.
fn assert_a_missing_verb_is_named(cluster: &Cluster, ns: &Namespace, base: &str) {
    remove_verb(cluster, ns, "configmaps", "create");
    let body = json!({"task_id": "no-create", "wasm_cid": ADD_CID,
        "input": {"entry": "add", "args": [1, 2]}});
    let reply = post(base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(reply.status, 201, "{reply:?}");
    let record = finished(base, "no-create", ns);
    let message = record["result"]["error"]["message"].as_str().unwrap_or("");
    eprintln!("without create on configmaps: {message}");
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        message.contains("403 Forbidden")
            && message.contains("grant verb \"create\" on resource \"configmaps\""),
        "the message names the missing permission: {record}"
    );
}

/// The record of task `id` once it is finished and reported; panics after [`PATIENCE`] with
/// what the namespace holds and the coordinator's log.
fn finished(base: &str, id: &str, ns: &Namespace) -> Value {
    let started = Instant::now();
    loop {
        let r = get(base, &format!("/v1/tasks/{id}"), None);
        if support::is_finished(&r) {
            return r.body;
        }
        if started.elapsed() > PATIENCE {
            panic!(
                "{id} not finished: {r:?}\n{}\n{}",
                ns.state(),
                coordinator_log(ns)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of the coordinator's log, and of its previous container's if it restarted.
fn coordinator_log(ns: &Namespace) -> String {
    let deployment = format!("deployment/{NAME}");
    let log = |previous: &str| {
        ns.kubectl(&["logs", &deployment, "--tail=40", previous])
            .unwrap_or_else(|e| e)
    };
    format!(
        "coordinator log:\n{}\nprevious container:\n{}",
        log("--previous=false"),
        log("--previous=true")
    )
}

/// A host directory owned by the coordinator's uid, as a PersistentVolume bound in advance to
/// the manifest's claim (a one-node cluster has no provisioner); deleted with the test.
struct StateVolume {
    cluster: Cluster,
    name: String,
}

impl StateVolume {
    fn create(cluster: &Cluster, ns: &Namespace, dir: &Path) -> StateVolume {
        let state = dir.join("state");
        std::fs::create_dir(&state).expect("the state directory");
        std::os::unix::fs::chown(&state, Some(RUNTIME_UID), Some(RUNTIME_UID))
            .expect("the state directory owned by the coordinator's uid (the suite runs as root)");
        let name = format!("{}-state", ns.name);
        let volume = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": path(&state), "type": "Directory"},
                "claimRef": {"namespace": ns.name, "name": format!("{NAME}-state")},
            },
        });
        let file = dir.join("volume.json");
        std::fs::write(&file, volume.to_string()).expect("writing the volume");
        cluster
            .kubectl(&["apply", "-f", path(&file)])
            .expect("the PersistentVolume");
        StateVolume {
            cluster: cluster.clone(),
            name,
        }
    }
}

impl Drop for StateVolume {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "pv", &self.name, "--wait=false"]);
    }
}

/// `k8s/job.yaml` placed on the real node, in the ConfigMap `k8s/coordinator.yaml` mounts
/// (`kubectl create configmap wasm-exec-job-template --from-file=job.yaml=...`).
fn job_template_config_map(node: &RealNode, ns: &Namespace, dir: &Path) {
    let text = std::fs::read_to_string(repo("k8s/job.yaml")).expect("k8s/job.yaml");
    let mut job: Value = serde_saphyr::from_str(&text).expect("k8s/job.yaml parses");
    node.place(&mut job["spec"]["template"]["spec"]);
    let file = dir.join("job.yaml");
    std::fs::write(&file, job.to_string()).expect("writing the template");
    node.cluster
        .kubectl(&[
            "create",
            "configmap",
            "wasm-exec-job-template",
            "-n",
            &ns.name,
            &format!("--from-file=job.yaml={}", path(&file)),
        ])
        .expect("the Job template's ConfigMap");
}

/// `k8s/coordinator.yaml` with the Deployment placed on the real node and the suite's images
/// (coordinator, and the executor its Jobs run); every other document as written.
fn coordinator_manifest(node: &RealNode, image: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("k8s/coordinator.yaml")).expect("k8s/coordinator.yaml");
    let mut documents = Vec::new();
    for doc in text.split("\n---") {
        let mut object: Value = serde_saphyr::from_str(doc).expect("k8s/coordinator.yaml parses");
        if object["kind"] == "Deployment" {
            let spec = &mut object["spec"]["template"]["spec"];
            node.place(spec);
            let container = &mut spec["containers"][0];
            container["image"] = json!(image);
            let env = container["env"]
                .as_array_mut()
                .expect("the container's env");
            let executor = env
                .iter_mut()
                .find(|e| e["name"] == "COORDINATOR_EXECUTOR_IMAGE")
                .expect("COORDINATOR_EXECUTOR_IMAGE in the Deployment");
            executor["value"] = json!(node.executor_image);
        }
        documents.push(object);
    }
    let file = dir.join("coordinator.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": documents});
    std::fs::write(&file, list.to_string()).expect("writing the manifest");
    file
}

/// `http://CLUSTER-IP:PORT` of the coordinator's Service.
fn service_url(cluster: &Cluster, ns: &Namespace) -> String {
    let ip_port = cluster
        .kubectl(&[
            "get",
            "service",
            NAME,
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}",
        ])
        .expect("the coordinator's Service");
    format!("http://{ip_port}")
}

/// Waits (up to 30 s) until the Service answers `/healthz`: kube-proxy routes it a moment after
/// the pod is Ready (the rollout's end), and until then a connection is refused.
fn routed(base: &str) {
    let started = Instant::now();
    loop {
        let answered = ureq::get(format!("{base}/healthz"))
            .call()
            .map(|r| r.status().as_u16());
        if matches!(answered, Ok(200)) {
            eprintln!(
                "the Service routes {:?} after the rollout",
                started.elapsed()
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{base}/healthz: {answered:?} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (up to a minute) until no Job, pod or ConfigMap of a task is left in `ns`.
fn nothing_of_the_tasks_left(cluster: &Cluster, ns: &Namespace) {
    let started = Instant::now();
    let selector = wasm_exec_kube_backend::names::managed_selector();
    loop {
        let left = cluster
            .kubectl(&[
                "get",
                "jobs,pods,configmaps",
                "-n",
                &ns.name,
                "-l",
                &selector,
                "-o",
                "name",
            ])
            .expect("listing what the tasks made");
        if left.trim().is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "left after the results: {left}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Removes `verb` from the Role's rule for `resource`.
fn remove_verb(cluster: &Cluster, ns: &Namespace, resource: &str, verb: &str) {
    let role = cluster
        .kubectl(&["get", "role", NAME, "-n", &ns.name, "-o", "json"])
        .expect("the Role");
    let role: Value = serde_json::from_str(&role).expect("the Role is JSON");
    let rules = role["rules"].as_array().expect("the Role's rules");
    let index = rules
        .iter()
        .position(|r| r["resources"] == json!([resource]))
        .unwrap_or_else(|| panic!("a rule for {resource} in k8s/coordinator.yaml"));
    let verbs: Vec<&Value> = rules[index]["verbs"]
        .as_array()
        .expect("verbs")
        .iter()
        .filter(|v| *v != verb)
        .collect();
    let patch = json!([{"op": "replace", "path": format!("/rules/{index}/verbs"), "value": verbs}]);
    cluster
        .kubectl(&[
            "patch",
            "role",
            NAME,
            "-n",
            &ns.name,
            "--type=json",
            "-p",
            &patch.to_string(),
        ])
        .expect("removing the verb");
}

/// A path as the UTF-8 `kubectl` takes.
fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
