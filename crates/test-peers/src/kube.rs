//! The suite's real Kubernetes control plane (`scripts/cluster`, kwok nodes): `scripts/test`
//! starts it once before the tests and stops it after; each test gets a fresh namespace of its
//! own, deleted when the test ends. Reached with `kubectl`, as `scripts/cluster` itself does.
//!
//! `WASM_EXEC_CLUSTER` says whether the cluster is there: `1` (set by `scripts/test` after `up`
//! succeeded, with `KUBECONFIG`) means it must answer, and a test fails if it does not; `0` (`up`
//! failed, `WASM_EXEC_CLUSTER_REASON` says why) or unset (`cargo test` run by hand) skips the
//! real-cluster tests, each saying so on stderr.
//!
//! The real node (`scripts/cluster node-up`: containerd and a kubelet) is told apart the same way:
//! [`REAL_NODE_VAR`] `1` means it is up and a [`RealNode`] test must reach it, `0` or unset skips
//! those tests with one line. It is labelled and tainted [`REAL_NODE_LABEL`], so only pods that
//! ask for it ([`RealNode::place`]) run there; kwok's nodes take all the others.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// `1` when the suite's cluster is up, `0` when it could not start.
pub const CLUSTER_VAR: &str = "WASM_EXEC_CLUSTER";
/// Why the cluster is absent, when [`CLUSTER_VAR`] is `0`.
pub const REASON_VAR: &str = "WASM_EXEC_CLUSTER_REASON";

/// `1` when the suite's cluster has its real node, `0` when the node could not come up.
pub const REAL_NODE_VAR: &str = "WASM_EXEC_REAL_NODE";
/// Why the real node is absent, when [`REAL_NODE_VAR`] is `0`.
pub const REAL_NODE_REASON_VAR: &str = "WASM_EXEC_REAL_NODE_REASON";
/// The executor image imported into the real node's containerd.
pub const NODE_IMAGE_VAR: &str = "WASM_EXEC_NODE_EXECUTOR_IMAGE";
/// The coordinator image imported into the real node's containerd.
pub const NODE_COORDINATOR_IMAGE_VAR: &str = "WASM_EXEC_NODE_COORDINATOR_IMAGE";
/// The label (and `NoSchedule` taint) of the real node: key and value.
pub const REAL_NODE_LABEL: (&str, &str) = ("wasm-exec.io/node", "real");

/// The running cluster, as its kubeconfig.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The admin kubeconfig (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// The suite's cluster, or `None` after printing why `test` is skipped. Panics when
    /// [`CLUSTER_VAR`] says the cluster is up but `KUBECONFIG` is unset or the API server does
    /// not answer `/readyz`.
    pub fn from_env(test: &str) -> Option<Cluster> {
        match std::env::var(CLUSTER_VAR).as_deref() {
            Ok("1") => {}
            Ok("0") => {
                let reason = std::env::var(REASON_VAR).unwrap_or_else(|_| "reason unknown".into());
                eprintln!("{test}: skipped: no Kubernetes cluster ({reason})");
                return None;
            }
            Err(_) => {
                eprintln!(
                    "{test}: skipped: {CLUSTER_VAR} is unset; scripts/test starts the cluster \
                     (or: eval \"$(scripts/cluster up)\" && {CLUSTER_VAR}=1 cargo test ...)"
                );
                return None;
            }
            Ok(other) => panic!("{CLUSTER_VAR}={other:?}: expected 1 (cluster up) or 0 (absent)"),
        }
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{CLUSTER_VAR}=1 but KUBECONFIG is unset"));
        let cluster = Cluster { kubeconfig };
        if let Err(e) = cluster.kubectl(&["get", "--raw", "/readyz", "--request-timeout=10s"]) {
            panic!("{CLUSTER_VAR}=1 but the cluster of KUBECONFIG does not answer /readyz: {e}");
        }
        Some(cluster)
    }

    /// The cluster of `KUBECONFIG`, unprobed: for helpers called inside a test that
    /// [`Cluster::from_env`] has already let run. Panics when `KUBECONFIG` is unset.
    pub fn current() -> Cluster {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("KUBECONFIG is unset"));
        Cluster { kubeconfig }
    }

    /// Waits (up to a minute) until no Job, pod or ConfigMap labelled `selector` is left in
    /// `namespace`: the garbage collector has followed every ownerReference. Panics with what
    /// is left.
    pub fn assert_nothing_left(&self, namespace: &str, selector: &str) {
        let started = std::time::Instant::now();
        let args = [
            "get",
            "jobs,pods,configmaps",
            "-l",
            selector,
            "-n",
            namespace,
            "-o",
            "name",
        ];
        loop {
            let left = self.kubectl(&args).unwrap_or_else(|e| e);
            if left.trim().is_empty() {
                eprintln!("nothing left after {:?}", started.elapsed());
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "left behind after 60 s in {namespace}: {}",
                left.trim()
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Runs `kubectl ARGS` against the cluster: its stdout, or its stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_with_input(args, None)
    }

    /// Applies the manifests `yaml` (`kubectl apply -f -`) in `namespace`.
    pub fn apply(&self, namespace: &str, yaml: &str) -> Result<String, String> {
        self.kubectl_with_input(&["apply", "--namespace", namespace, "-f", "-"], Some(yaml))
    }

    /// A fresh namespace named after `prefix` with `labels` (for example PodSecurity's
    /// `pod-security.kubernetes.io/enforce=restricted`), deleted when dropped.
    pub fn namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> Namespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl(&["create", "namespace", &name])
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let namespace = Namespace {
            name,
            cluster: self.clone(),
        };
        if !labels.is_empty() {
            let mut args = vec!["label", "namespace", namespace.name.as_str()];
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            args.extend(pairs.iter().map(String::as_str));
            self.kubectl(&args)
                .unwrap_or_else(|e| panic!("labelling namespace {}: {e}", namespace.name));
        }
        namespace.await_default_service_account();
        namespace
    }

    /// Kills the API server (`scripts/cluster stop-apiserver`: SIGKILL, a crash); `None` when
    /// the cluster is not one `scripts/cluster` made (a user's own), whose API server a test
    /// cannot stop.
    pub fn stop_apiserver(&self) -> Option<Result<(), String>> {
        self.cluster_script("stop-apiserver")
    }

    /// Starts the API server [`Self::stop_apiserver`] stopped, as it was, and waits for /readyz.
    pub fn start_apiserver(&self) -> Option<Result<(), String>> {
        self.cluster_script("start-apiserver")
    }

    /// Runs `scripts/cluster COMMAND` on this cluster's state directory (the kubeconfig's, with
    /// the script's marker file in it).
    fn cluster_script(&self, command: &str) -> Option<Result<(), String>> {
        let dir = self.kubeconfig.parent()?;
        if !dir.join(".wasm-exec-cluster").exists() {
            return None;
        }
        let out = Command::new(crate::repo("scripts/cluster"))
            .arg(command)
            .env("WASM_EXEC_CLUSTER_DIR", dir)
            .output();
        Some(match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "scripts/cluster {command} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("starting scripts/cluster {command}: {e}")),
        })
    }

    fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting kubectl: {e}"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| format!("writing to kubectl: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {} ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// A namespace of one test, deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    cluster: Cluster,
}

impl Namespace {
    /// Runs `kubectl ARGS --namespace NAME`: its stdout, or its stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut args = args.to_vec();
        args.extend(["--namespace", self.name.as_str()]);
        self.cluster.kubectl(&args)
    }

    /// What is in the namespace now (Jobs, pods and events, `kubectl get`), for a failing test
    /// to say what it saw.
    pub fn state(&self) -> String {
        let args = [
            "get",
            "jobs,pods,events",
            "-o",
            "wide",
            "-n",
            self.name.as_str(),
        ];
        self.cluster.kubectl(&args).unwrap_or_else(|e| e)
    }

    /// Waits (up to a minute) for the serviceaccount controller to make the namespace's `default`
    /// ServiceAccount, as the Kubernetes e2e framework does: until then the ServiceAccount
    /// admission plugin refuses every pod of the namespace, and the job controller retries on a
    /// growing backoff (a test after an API server restart saw no pod for a minute).
    fn await_default_service_account(&self) {
        let started = std::time::Instant::now();
        let args = ["get", "serviceaccount", "default", "-n", self.name.as_str()];
        while let Err(e) = self.cluster.kubectl(&args) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "namespace {}: no default ServiceAccount after 60 s (is the serviceaccount \
                 controller of kube-controller-manager running?): {e}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let deleted = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
        if let Err(e) = deleted {
            eprintln!("deleting test namespace {}: {e}", self.name);
        }
    }
}

/// The real node of the suite's cluster: a kubelet on containerd that really runs images.
#[derive(Debug, Clone)]
pub struct RealNode {
    /// The cluster it belongs to.
    pub cluster: Cluster,
    /// The node's name.
    pub name: String,
    /// The executor image its containerd holds ([`NODE_IMAGE_VAR`]).
    pub executor_image: String,
    /// The coordinator image its containerd holds ([`NODE_COORDINATOR_IMAGE_VAR`]), if given.
    pub coordinator_image: Option<String>,
}

impl RealNode {
    /// The suite's real node, or `None` after printing why `test` is skipped (no cluster, or no
    /// node: [`REAL_NODE_VAR`] not `1`). Panics when the variable says the node is up but it is
    /// not a Ready node of the cluster.
    pub fn from_env(test: &str) -> Option<RealNode> {
        match std::env::var(REAL_NODE_VAR).as_deref() {
            Ok("1") => {}
            Ok("0") => {
                let reason =
                    std::env::var(REAL_NODE_REASON_VAR).unwrap_or_else(|_| "reason unknown".into());
                eprintln!("{test}: skipped: no real Kubernetes node ({reason})");
                return None;
            }
            Err(_) => {
                eprintln!(
                    "{test}: skipped: {REAL_NODE_VAR} is unset; scripts/test starts the real node \
                     (or: scripts/cluster node-up && {REAL_NODE_VAR}=1 {NODE_IMAGE_VAR}=IMAGE ...)"
                );
                return None;
            }
            Ok(other) => panic!("{REAL_NODE_VAR}={other:?}: expected 1 (node up) or 0 (absent)"),
        }
        let cluster = Cluster::from_env(test)?;
        let executor_image = std::env::var(NODE_IMAGE_VAR)
            .unwrap_or_else(|_| panic!("{REAL_NODE_VAR}=1 but {NODE_IMAGE_VAR} is unset"));
        let (key, value) = REAL_NODE_LABEL;
        let ready = cluster
            .kubectl(&[
                "get",
                "nodes",
                "--selector",
                &format!("{key}={value}"),
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ])
            .unwrap_or_else(|e| panic!("listing the real node: {e}"));
        let name = ready
            .lines()
            .find_map(|l| l.strip_suffix(" True"))
            .unwrap_or_else(|| {
                panic!("{REAL_NODE_VAR}=1 but no Ready node {key}={value}: {ready:?}")
            })
            .to_string();
        Some(RealNode {
            cluster,
            name,
            executor_image,
            coordinator_image: std::env::var(NODE_COORDINATOR_IMAGE_VAR).ok(),
        })
    }

    /// Why Services do not route on this node, if they do not: `scripts/cluster node-up`
    /// starts kube-proxy and marks the node once `https://10.0.0.1` (the `kubernetes` Service)
    /// answers through it; without iptables it cannot, and says so in its log.
    pub fn services_unrouted(&self) -> Option<String> {
        let marker = self.state_dir().join("node/services-routed");
        (!marker.exists()).then(|| {
            format!(
                "no {} (scripts/cluster node-up could not start kube-proxy; see its \
                 `cluster:` lines)",
                marker.display()
            )
        })
    }

    /// The cluster's state directory (`WASM_EXEC_CLUSTER_DIR`, the kubeconfig's).
    fn state_dir(&self) -> &std::path::Path {
        self.cluster
            .kubeconfig
            .parent()
            .expect("the cluster's state directory")
    }

    /// The ids of the containers (pod sandboxes included) of `namespace` whose task runs in
    /// the node's containerd, asked with `ctr` on the socket `scripts/cluster` gives it under
    /// the cluster's state directory; panics when it cannot be asked.
    pub fn running_containers_of(&self, namespace: &str) -> Vec<String> {
        let filter = format!("labels.\"io.kubernetes.pod.namespace\"=={namespace}");
        let ours = self.ctr(&["containers", "list", "--quiet", &filter]);
        let running: Vec<String> = self
            .ctr(&["tasks", "list"])
            .lines()
            .filter_map(|l| {
                let mut fields = l.split_whitespace();
                let id = fields.next()?;
                (fields.nth(1)? == "RUNNING").then(|| id.to_owned())
            })
            .collect();
        ours.lines()
            .filter(|id| running.iter().any(|r| r == id))
            .map(str::to_owned)
            .collect()
    }

    /// `ctr --namespace k8s.io ARGS` on the node's containerd: its stdout.
    fn ctr(&self, args: &[&str]) -> String {
        let socket = self.state_dir().join("node/containerd/containerd.sock");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("starting ctr: {e}"));
        assert!(
            out.status.success(),
            "ctr {} on {}: {}",
            args.join(" "),
            socket.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Puts the pod spec `spec` on this node: its nodeSelector and a toleration of its taint.
    pub fn place(&self, spec: &mut serde_json::Value) {
        let (key, value) = REAL_NODE_LABEL;
        spec["nodeSelector"] = serde_json::json!({ key: value });
        spec["tolerations"] = serde_json::json!([
            {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
        ]);
    }
}
