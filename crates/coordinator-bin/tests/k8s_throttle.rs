//! The `coordinator` binary throttled by the real API server's Priority and Fairness, on the
//! suite's control plane: it waits as long as each `429`'s `Retry-After` asks, keeps trying for
//! as long as the server throttles it (past its own few attempts), and the task still ends right.
//!
//! - The coordinator runs under the ServiceAccount of `k8s/coordinator.yaml`. A FlowSchema puts
//!   it, and a second ServiceAccount (the holder), at a priority level with no seats of its own
//!   and no queue: a request there runs only while no other does, and is refused with `429` at
//!   once otherwise.
//! - The holder takes that one seat and keeps it: a `POST` whose body never comes (the API server
//!   reads it inside the seat). The test then sends refused requests of its own, so that the
//!   server's `Retry-After` grows past 1 s, and submits a task while the seat is held for longer
//!   than the coordinator's own retries (about 3 s) would last.

#[path = "support/kube.rs"]
mod kube_peer;
mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube_peer::{
    ACCOUNT, FlowSchema, assert_nothing_left, coordinator_identity, held_template, is_held,
    local_runtime, release, tail, wait_finished,
};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Service, command, post};
use wasm_exec_coordinator::source::placeholder::FIB_CID;
use wasm_exec_kube_backend::names::managed_selector;
use wasm_exec_test_peers::kube::Cluster;

/// The second ServiceAccount, whose request holds the priority level's one seat.
const HOLDER: &str = "seat-holder";
/// How long the seat stays held after the task is submitted.
const HELD: Duration = Duration::from_secs(8);

#[test]
fn a_throttled_coordinator_waits_as_the_api_server_asks_and_the_task_ends_right() {
    let Some(cluster) = Cluster::from_env(
        "a_throttled_coordinator_waits_as_the_api_server_asks_and_the_task_ends_right",
    ) else {
        return;
    };
    let ns = cluster.namespace("throttle", &[]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = coordinator_identity(&cluster, &ns.name, dir.path());
    let holder = Holder::new(&cluster, &ns.name);

    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_BACKEND", "kubernetes")
        .env("KUBECONFIG", &kubeconfig)
        .env("COORDINATOR_NAMESPACE", &ns.name)
        .env("COORDINATOR_JOB_TEMPLATE", held_template(dir.path()));
    let service = Service::start(cmd);

    let level = SeatlessLevel::create(&cluster, &ns.name);
    let flow = FlowSchema::create(&cluster, &ns.name, &level.name, &[ACCOUNT, HOLDER]);
    let seat = holder.take_the_seat();
    let asked = holder.push_retry_after_to(2, Duration::from_secs(30));
    let rejected_before = flow.rejected();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let executor = {
        let ns = ns.name.clone();
        runtime.spawn(async move { play_the_executor_once(&ns).await })
    };
    let body = json!({"task_id": "throttled", "wasm_cid": FIB_CID, "input": {"entry": "fib", "args": [12]}});
    let submitted = Instant::now();
    let r = post(&service.base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(r.status, 201, "{r:?}");
    std::thread::sleep(HELD);
    drop(seat);
    let task = wait_finished(
        &service.base,
        "throttled",
        Instant::now() + Duration::from_secs(90),
        &service,
    );
    let took = submitted.elapsed();
    let log = service.log.lock().expect("the log").clone();
    assert_eq!(
        (task["state"].as_str(), &task["result"]["result"]),
        (Some("succeeded"), &json!(144)),
        "{task}\ncoordinator log tail:\n{}",
        tail(&log, 3000)
    );
    runtime.block_on(executor).expect("the executor's run");

    let rejected = flow.rejected() - rejected_before;
    assert_waited_as_asked(&log, rejected, asked, took);
    runtime.block_on(assert_nothing_left(&ns.name));
    drop(flow);
    drop(service);
}

/// Each wait after a 429 is the one the server asked for (whole seconds, at least 1), and the
/// first was the grown one; the API server refused no more of the coordinator's requests than
/// those waits allow in the time the seat was held.
fn assert_waited_as_asked(log: &str, rejected: u64, asked: u64, took: Duration) {
    let waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("retrying") && l.contains("Too many requests"))
        .filter_map(|l| {
            l.split("retry_in_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    eprintln!(
        "Retry-After grown to {asked} s; the coordinator waited {waits:?} ms; the API server \
         refused {rejected} of its requests; the task took {took:.1?} with the seat held {HELD:?}"
    );
    assert!(
        !waits.is_empty(),
        "no throttled retry logged:\n{}",
        tail(log, 3000)
    );
    assert!(
        waits.iter().all(|ms| *ms >= 1000 && ms % 1000 == 0),
        "waits not the server's: {waits:?}"
    );
    assert!(
        waits[0] >= 2000,
        "the first wait ignored the grown Retry-After: {waits:?}"
    );
    assert!(took >= HELD, "finished in {took:?} while the seat was held");
    assert!(
        rejected >= waits.len() as u64 && rejected <= HELD.as_secs() + 2,
        "{rejected} refused requests for {} logged waits",
        waits.len()
    );
}

/// A priority level with no seats of its own, none to borrow, and no queue: the API server runs
/// one of its requests only while none other runs, and refuses the rest at once; deleted when
/// dropped.
struct SeatlessLevel {
    cluster: Cluster,
    name: String,
}

impl SeatlessLevel {
    fn create(cluster: &Cluster, namespace: &str) -> Self {
        let name = format!("wasm-exec-seatless-{namespace}");
        let level = json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 0,
                "lendablePercent": 0,
                "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            }},
        });
        cluster
            .apply(namespace, &level.to_string())
            .expect("the priority level");
        Self {
            cluster: cluster.clone(),
            name,
        }
    }
}

impl Drop for SeatlessLevel {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "prioritylevelconfiguration",
            &self.name,
            "--wait=false",
        ]);
    }
}

/// The holder's ServiceAccount, allowed to create and list ConfigMaps (so its request gets past
/// authorization, which runs inside the seat, to reading its body), with a token; requests by
/// curl against the API server.
struct Holder {
    server: String,
    token: String,
    url: String,
}

impl Holder {
    fn new(cluster: &Cluster, namespace: &str) -> Self {
        let run = |args: &[&str]| {
            cluster
                .kubectl(args)
                .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
        };
        run(&["-n", namespace, "create", "serviceaccount", HOLDER]);
        run(&[
            "-n",
            namespace,
            "create",
            "role",
            HOLDER,
            "--verb=create,list",
            "--resource=configmaps",
        ]);
        let account = format!("{namespace}:{HOLDER}");
        run(&[
            "-n",
            namespace,
            "create",
            "rolebinding",
            HOLDER,
            "--role",
            HOLDER,
            "--serviceaccount",
            &account,
        ]);
        let token = run(&["-n", namespace, "create", "token", HOLDER])
            .trim()
            .to_owned();
        let server = run(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]);
        let url = format!("{server}/api/v1/namespaces/{namespace}/configmaps");
        Self { server, token, url }
    }

    /// curl with the holder's token (the API server is on loopback, its CA not checked).
    fn curl(&self) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token));
        cmd
    }

    /// Sends a `POST` whose body never ends; the seat is held until the returned child is
    /// dropped. Returns once the holder's own next request is refused.
    fn take_the_seat(&self) -> Seat {
        let child = self
            .curl()
            .args([
                "-o",
                "/dev/null",
                "-T",
                "-",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .arg(&self.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("curl");
        let seat = Seat(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.probe().0 != 429 {
            assert!(
                Instant::now() < deadline,
                "the seat was not taken in 30 s ({})",
                self.server
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        seat
    }

    /// One `GET`: its status and `Retry-After` seconds (0 without one).
    fn probe(&self) -> (u16, u64) {
        let out = self
            .curl()
            .args(["-o", "/dev/null", "-D", "-"])
            .arg(&self.url)
            .output()
            .expect("curl");
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let retry_after = head
            .lines()
            .find_map(|l| l.strip_prefix("retry-after:")?.trim().parse().ok())
            .unwrap_or(0);
        (status, retry_after)
    }

    /// Sends refused requests until the server's `Retry-After` is at least `seconds` (it grows
    /// while a priority level keeps refusing); returns the value reached.
    fn push_retry_after_to(&self, seconds: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let (status, retry_after) = self.probe();
            assert_eq!(status, 429, "the seat was lost");
            if retry_after >= seconds {
                return retry_after;
            }
            assert!(
                Instant::now() < deadline,
                "Retry-After still {retry_after} s"
            );
        }
    }
}

/// The holder's endless request; ended (curl killed, the API server's read fails) when dropped.
struct Seat(Child);

impl Drop for Seat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays the executor for the one held pod in `namespace` (see `support/kube.rs`).
async fn play_the_executor_once(namespace: &str) {
    let client = kube::Client::try_default().await.expect("the admin client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client, namespace);
    let params = ListParams::default().labels(&managed_selector());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = pods.list(&params).await.expect("the pods");
        if let Some(pod) = list.items.iter().find(|p| is_held(p)) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let job = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("job-name").cloned())
                .expect("the pod's job-name label");
            release(&pods, &maps, &local_runtime(), &name, &job).await;
            return;
        }
        assert!(Instant::now() < deadline, "no held pod in 90 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
