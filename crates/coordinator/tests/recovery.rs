//! Crash recovery: SIGKILL in the middle of a batch submitted through the API, restart on the
//! same state directory, and every task still ends with exactly one result.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{Service, command, get, post, repo, wait_finished};

const TASKS: usize = 40;

fn start(state: &std::path::Path) -> Service {
    let mut cmd = command(state);
    cmd.env("COORDINATOR_IPFS_MIRROR", repo("testdata/wat"))
        .env("COORDINATOR_CONCURRENCY", "2");
    Service::start(cmd)
}

#[test]
fn sigkill_mid_batch_then_restart_gives_every_task_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path());
    for i in 0..TASKS {
        // About 10-30 ms of work each, so the batch is still running when the kill comes.
        let body = json!({"task_id": format!("job-{i:02}"), "wasm_cid": "busy_loop.wat", "input": {"entry": "count", "args": [20_000_000 + i]}});
        assert_eq!(
            post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
            201
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = get(&svc.base, "/v1/tasks?state=succeeded&limit=1000", None);
        let n = done.body["tasks"].as_array().map_or(0, Vec::len);
        if n >= 5 {
            assert!(
                n < TASKS,
                "the batch finished before the kill; make the tasks slower"
            );
            break;
        }
        assert!(Instant::now() < deadline, "tasks do not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_log = svc.log.lock().unwrap().clone();
    assert_eq!(svc.signal_and_wait("KILL"), None, "killed by a signal");

    let svc = start(dir.path());
    assert!(
        svc.log
            .lock()
            .unwrap()
            .contains("resuming tasks left unfinished"),
        "resumed on start"
    );
    for i in 0..TASKS {
        let id = format!("job-{i:02}");
        let task = wait_finished(&svc.base, &id);
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["result"]["result"], 0, "count(n) returns 0: {task}");
        assert_eq!(task["reported"], true);
        let attempts = task["attempts"].as_u64().unwrap();
        assert!(
            (1..=2).contains(&attempts),
            "run at most once more after the crash: {task}"
        );
        let finished_before = first_log
            .lines()
            .any(|l| l.contains(&format!("task_id={id} ")) && l.contains("task finished"));
        if finished_before {
            assert_eq!(
                attempts, 1,
                "a task finished before the crash is not run again: {task}"
            );
        }
    }
}
