//! Crash recovery: SIGKILL in the middle of a batch submitted through the API, restart on the
//! same state directory, and every task still ends with exactly one result.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{Service, command, get, post, repo, wait_finished};

const TASKS: usize = 40;

fn start(state: &std::path::Path) -> Service {
    let mut cmd = command(state);
    cmd.env("COORDINATOR_IPFS_MIRROR", repo("testdata/mirror"))
        .env("COORDINATOR_CONCURRENCY", "2");
    Service::start(cmd)
}

#[test]
fn sigkill_mid_batch_then_restart_gives_every_task_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path());
    for i in 0..TASKS {
        // About 10-30 ms of work each, so the batch is still running when the kill comes.
        let body = json!({"task_id": format!("job-{i:02}"), "wasm_cid": "busy_loop.wasm", "input": {"entry": "count", "args": [20_000_000 + i]}});
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
        svc.logged("resuming tasks left unfinished", Duration::from_secs(10)),
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

#[test]
fn sigkill_mid_batch_writes_each_result_back_to_the_source_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| json!({"task_id": format!("src-{i:02}"), "wasm_cid": "busy_loop.wasm", "input": {"entry": "count", "args": [20_000_000 + i]}}))
        .collect();
    let tasks_file = dir.path().join("tasks.json");
    std::fs::write(&tasks_file, serde_json::Value::from(tasks).to_string()).unwrap();
    let results = dir.path().join("results.jsonl");
    let state = dir.path().join("state");
    let start = || {
        let mut cmd = command(&state);
        cmd.env("COORDINATOR_IPFS_MIRROR", repo("testdata/mirror"))
            .env("COORDINATOR_CONCURRENCY", "2")
            .env("COORDINATOR_TASKS_FILE", &tasks_file)
            .env("COORDINATOR_RESULTS_FILE", &results);
        Service::start(cmd)
    };
    let lines = || {
        std::fs::read_to_string(&results)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let svc = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines() < 5 {
        assert!(Instant::now() < deadline, "no results written back");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        lines() < TASKS,
        "the batch finished before the kill; make the tasks slower"
    );
    assert_eq!(svc.signal_and_wait("KILL"), None);

    let svc = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines() < TASKS {
        assert!(
            Instant::now() < deadline,
            "only {} of {TASKS} results written back",
            lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Once every task's write-back is recorded, no further write-back of it can come.
    for i in 0..TASKS {
        wait_finished(&svc.base, &format!("src-{i:02}"));
    }
    let text = std::fs::read_to_string(&results).unwrap();
    for i in 0..TASKS {
        let id = format!("\"task_id\":\"src-{i:02}\"");
        assert_eq!(
            text.matches(&id).count(),
            1,
            "{id} written back once:\n{text}"
        );
        let task = get(&svc.base, &format!("/v1/tasks/src-{i:02}"), None).body;
        assert_eq!(task["reported"], true, "{task}");
    }
}
