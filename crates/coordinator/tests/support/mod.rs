//! Starts the real `coordinator` binary on a free port and talks to its API over HTTP.

#![allow(dead_code)] // each test binary uses a different part of this helper

pub mod ipfs;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The line of `coordinator --once`'s table whose first column is `task`; panics with the whole
/// output if there is none.
pub fn table_row<'a>(out: &'a std::process::Output, task: &str) -> &'a str {
    let stdout = std::str::from_utf8(&out.stdout).expect("utf-8 table");
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(task))
        .unwrap_or_else(|| {
            panic!(
                "no row for {task} in:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A running coordinator; killed when dropped.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
}

/// The coordinator command with a clean environment, the sample mirror and a free API port.
pub fn command(state_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.env_clear()
        .env("COORDINATOR_IPFS_MIRROR", repo("host/wasm"))
        .env("COORDINATOR_STATE_DIR", state_dir)
        .env("COORDINATOR_LISTEN", "127.0.0.1:0")
        .env(
            "COORDINATOR_TASKS_FILE",
            repo("testdata/input/no-tasks.json"),
        );
    cmd
}

impl Service {
    /// Starts `cmd` and waits (up to 20 s) until its API listens.
    pub fn start(mut cmd: Command) -> Service {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start coordinator");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        // Owned by a `Service` at once, so a failed start still kills and reaps the process.
        let mut service = Service {
            child,
            base: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = service.log.lock().expect("log").clone();
            if let Some(line) = text.lines().find(|l| l.contains("API listening")) {
                let address = line
                    .split("address=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .expect("address");
                service.base = format!("http://{address}");
                return service;
            }
            assert!(Instant::now() < deadline, "API did not start; log:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the log has a line containing `text` within `within` (the log is read as the
    /// process writes it, and the API listens before the scheduler starts).
    pub fn logged(&self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.log.lock().expect("the log").contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the exit code.
    pub fn signal_and_wait(mut self, signal: &str) -> Option<i32> {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait");
        status.code()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response: status and JSON (or text as a JSON string).
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body parsed as JSON, or the raw text as a string.
    pub body: Value,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn reply(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

/// `GET base+path`, with a bearer token if given.
pub fn get(base: &str, path: &str, token: Option<&str>) -> Reply {
    let mut req = agent().get(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    reply(req.call())
}

/// `GET base+path` as status and raw text (for bytes that must not be re-encoded).
pub fn get_text(base: &str, path: &str) -> (u16, String) {
    let mut resp = agent()
        .get(format!("{base}{path}"))
        .call()
        .expect("HTTP request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// `POST base+path` with a body, with a bearer token if given.
pub fn post(base: &str, path: &str, body: &str, token: Option<&str>) -> Reply {
    let mut req = agent()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json");
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    reply(req.send(body))
}

/// Polls `GET /v1/tasks/{id}` until the task is finished and its write-back recorded (10 s at
/// most); returns it.
pub fn wait_finished(base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(base, &format!("/v1/tasks/{id}"), None);
        if r.status == 200
            && matches!(r.body["state"].as_str(), Some("succeeded" | "failed"))
            && r.body["reported"] == Value::Bool(true)
        {
            return r.body;
        }
        assert!(Instant::now() < deadline, "task {id} not finished: {r:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
