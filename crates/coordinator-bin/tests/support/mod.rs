//! The real `coordinator` binary of this crate, started by the test peers' [`Service`] on a free
//! port; the peers' HTTP helpers talk to its API.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of this helper

pub use wasm_exec_test_peers::http::{Reply, get, get_text, post, post_as};
pub use wasm_exec_test_peers::{JsIpfs, Service, repo};

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// The coordinator command with a clean environment, the sample mirror and a free API port.
pub fn command(state_dir: &Path) -> Command {
    settings(Command::new(env!("CARGO_BIN_EXE_coordinator")), state_dir)
}

/// util-linux's `prlimit`, which sets a process's limits (the environment is cleared, so no PATH).
pub const PRLIMIT: &str = "/usr/bin/prlimit";

/// [`command`] under a file-descriptor limit of `nofile`, soft and hard (`prlimit` execs the
/// coordinator, so the process id is the coordinator's).
pub fn command_with_nofile(state_dir: &Path, nofile: u64) -> Command {
    let mut cmd = Command::new(PRLIMIT);
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_coordinator"));
    settings(cmd, state_dir)
}

fn settings(mut cmd: Command, state_dir: &Path) -> Command {
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

/// Whether `reply` to `GET /v1/tasks/{id}` shows the task finished and its write-back recorded.
pub fn is_finished(reply: &Reply) -> bool {
    reply.status == 200
        && matches!(reply.body["state"].as_str(), Some("succeeded" | "failed"))
        && reply.body["reported"] == Value::Bool(true)
}

/// Polls `GET /v1/tasks/{id}` until the task is finished and its write-back recorded (10 s at
/// most); returns it.
pub fn wait_finished(base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(base, &format!("/v1/tasks/{id}"), None);
        if is_finished(&r) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "task {id} not finished: {r:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A token of `coordinator token new NAME` (run with state directory `dir`): the token, and its
/// entry for the tokens file, which holds no token.
pub fn new_token(dir: &Path, name: &str) -> (String, Value) {
    let out = command(dir)
        .args(["token", "new", name])
        .output()
        .expect("coordinator token new");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    let token = lines.next().expect("the token").to_owned();
    let entry: Value = serde_json::from_str(lines.next().expect("the entry")).expect("JSON");
    assert_eq!(entry["name"], name);
    assert!(
        !text.contains(&format!("\"{token}\"")),
        "the entry holds no token"
    );
    (token, entry)
}
