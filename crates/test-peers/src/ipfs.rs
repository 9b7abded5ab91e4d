//! A real IPFS node for end-to-end tests: js-ipfs 0.66.1 from `peers/ipfs` (installed by
//! `scripts/install-test-peers`), with its own temporary repository, offline, on free ports.
//!
//! Trap: `--offline` does not stop js-ipfs's bitswap, so a gateway request for a CID the node
//! lacks hangs (no answer after minutes); callers need their own request timeout.

use serde_json::{Value, json};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for `jsipfs daemon` to serve (about 2 s idle, 10-20 s on two busy cores).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Fixed multipart boundary for [`JsIpfs::add`]; `add` refuses bytes that contain it.
const BOUNDARY: &str = "wasm-exec-test-boundary-7d3f9a";

/// A running `jsipfs daemon --offline` with a fresh repository; killed when dropped.
pub struct JsIpfs {
    child: Child,
    /// Holds `IPFS_PATH` and the daemon's log; removed after the daemon is gone (fields drop
    /// after `Drop::drop`), so no `repo.lock` or `api` file can outlive the test.
    dir: tempfile::TempDir,
    /// Gateway base to append a CID to: `http://127.0.0.1:PORT/ipfs`.
    pub gateway: String,
    /// HTTP API base: `http://127.0.0.1:PORT` (endpoints under `/api/v0/`).
    pub api: String,
    /// The gateway's port, polled by [`JsIpfs::wait_ready`].
    gateway_port: u16,
}

impl JsIpfs {
    /// Initialises a repository (`--profile test`), binds API, gateway and RPC to free ports on
    /// 127.0.0.1 with no swarm, bootstrap, discovery or pubsub, starts the daemon and waits until
    /// both the API and the gateway answer. Panics, with the daemon's log, if it does not.
    pub fn start() -> JsIpfs {
        let jsipfs = crate::repo("peers/ipfs/node_modules/.bin/jsipfs");
        assert!(
            jsipfs.exists(),
            "{} is missing: run scripts/install-test-peers (npm ci of js-ipfs in peers/ipfs)",
            jsipfs.display()
        );
        let dir = tempfile::tempdir().expect("temp dir for IPFS_PATH");
        let ipfs_path = dir.path().join("repo");
        let init = jsipfs_command(&jsipfs, &ipfs_path)
            .args(["init", "--profile", "test"])
            .output()
            .expect("run node (is Node.js 20 on PATH?)");
        assert!(init.status.success(), "jsipfs init failed: {init:?}");

        let [api, gateway, rpc] = free_ports();
        configure(&ipfs_path.join("config"), api, gateway, rpc);

        let child = spawn_daemon(&jsipfs, dir.path());
        // Owned at once, so a failed start below still kills and reaps the daemon.
        let mut node = JsIpfs {
            child,
            dir,
            gateway: format!("http://127.0.0.1:{gateway}/ipfs"),
            api: format!("http://127.0.0.1:{api}"),
            gateway_port: gateway,
        };
        node.wait_ready();
        node
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 10 s), keeps it down for `down`, then starts it
    /// again on the same repository and ports and waits until it serves: an outage of the node,
    /// after which it has every block it had.
    pub fn restart(&mut self, down: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("poll jsipfs daemon").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // A daemon stopped by SIGKILL leaves its lock behind; the next one would refuse the repo.
        let _ = std::fs::remove_file(self.dir.path().join("repo/repo.lock"));
        std::thread::sleep(down);
        let jsipfs = crate::repo("peers/ipfs/node_modules/.bin/jsipfs");
        self.child = spawn_daemon(&jsipfs, self.dir.path());
        self.wait_ready();
    }

    /// Adds `bytes` through the HTTP API and returns the CID it printed: `cid_version` 0 gives
    /// the `ipfs add` defaults (`Qm...`), 1 gives raw leaves in base32 (`bafkrei...` up to 256 KiB).
    pub fn add(&self, bytes: &[u8], cid_version: u8) -> String {
        let query = match cid_version {
            0 => "",
            1 => "?cid-version=1&raw-leaves=true&cid-base=base32",
            v => panic!("CID version {v}: only 0 and 1 exist"),
        };
        assert!(
            !bytes
                .windows(BOUNDARY.len())
                .any(|w| w == BOUNDARY.as_bytes()),
            "the bytes contain the multipart boundary"
        );
        // js-ipfs answers 500 to a part without a Content-Type.
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"module\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());

        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut resp = agent
            .post(format!("{}/api/v0/add{query}", self.api))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .send(&body[..])
            .expect("POST /api/v0/add");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("add reply body");
        assert_eq!(status, 200, "POST /api/v0/add{query}: {text}");
        let reply: Value = serde_json::from_str(&text).expect("add reply is JSON");
        reply["Hash"]
            .as_str()
            .unwrap_or_else(|| panic!("no Hash in the add reply: {text}"))
            .to_string()
    }

    /// What the daemon printed so far (stdout and stderr), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Polls until the API answers `POST /api/v0/id` and the gateway port accepts connections;
    /// panics with the log if the daemon exits or [`START_TIMEOUT`] passes.
    fn wait_ready(&mut self) {
        let gateway_port = self.gateway_port;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let started = Instant::now();
        loop {
            let api_up = agent
                .post(format!("{}/api/v0/id", self.api))
                .send_empty()
                .is_ok_and(|r| r.status() == 200);
            if api_up && TcpStream::connect(("127.0.0.1", gateway_port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll jsipfs daemon") {
                panic!(
                    "jsipfs daemon exited ({status}) before serving; log:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "jsipfs daemon not serving after {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for JsIpfs {
    fn drop(&mut self) {
        // SIGKILL leaves `repo.lock` and `api` behind; harmless, as the repository goes with
        // `self.dir` right after this.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jsipfs daemon --offline` on the repository in `dir`, appending to `dir/daemon.log`.
fn spawn_daemon(jsipfs: &Path, dir: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .expect("open daemon.log");
    jsipfs_command(jsipfs, &dir.join("repo"))
        .args(["daemon", "--offline"])
        .stdout(log.try_clone().expect("clone daemon.log handle"))
        .stderr(log)
        .spawn()
        .expect("start jsipfs daemon")
}

/// `node <jsipfs>` with `IPFS_PATH` set; node comes from PATH, as the shim's shebang would.
fn jsipfs_command(jsipfs: &Path, ipfs_path: &Path) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(jsipfs)
        .env("IPFS_PATH", ipfs_path)
        .stdin(Stdio::null());
    cmd
}

/// Three distinct free ports: all bound at once (so distinct), then released for the daemon.
fn free_ports() -> [u16; 3] {
    let listeners = [(); 3].map(|()| TcpListener::bind("127.0.0.1:0").expect("bind a free port"));
    listeners.map(|l| l.local_addr().expect("local address").port())
}

/// Edits the repository config directly (one `jsipfs config` call costs about 2 s).
fn configure(config_path: &Path, api: u16, gateway: u16, rpc: u16) {
    let text = std::fs::read_to_string(config_path).expect("read IPFS config");
    let mut config: Value = serde_json::from_str(&text).expect("IPFS config is JSON");
    let addresses = &mut config["Addresses"];
    addresses["API"] = json!(format!("/ip4/127.0.0.1/tcp/{api}"));
    addresses["Gateway"] = json!(format!("/ip4/127.0.0.1/tcp/{gateway}"));
    addresses["RPC"] = json!(format!("/ip4/127.0.0.1/tcp/{rpc}"));
    addresses["Swarm"] = json!([]);
    config["Bootstrap"] = json!([]);
    config["Discovery"]["MDNS"]["Enabled"] = json!(false);
    config["Discovery"]["webRTCStar"]["Enabled"] = json!(false);
    config["Pubsub"]["Enabled"] = json!(false);
    let text = serde_json::to_string_pretty(&config).expect("serialise IPFS config");
    std::fs::write(config_path, text).expect("write IPFS config");
}
