//! `POST /v1/tasks:batch` end to end, against the real binary: 1,000 items with bad ones among
//! them (each answered on its own, the good ones all run), the same batch again (nothing runs
//! twice), 1,001 items (refused whole, nothing taken), and clients that hang up before the answer
//! (every task taken still runs).

mod support;

use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};
use support::{Service, command, get, post};

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// 1,000 items: fib tasks `{prefix}{i}` with three bad items at 7, 500 and 999.
fn thousand(prefix: &str) -> Vec<Value> {
    (0..1000u64)
        .map(|i| match i {
            7 => json!({"task_id": format!("{prefix}{i}"), "input": [1]}),
            500 => json!({"task_id": format!("{prefix}{i}"), "wasm_cid": "fib.wasm",
                          "input": {"entry": "fib", "args": [1]}, "limits": {"timeout_sec": 1e9}}),
            999 => json!({"task_id": format!("{prefix}{i}"), "wasm_cid": "fib.wasm",
                          "input": {"entry": "fib", "args": [1]}, "callback_url": "http://127.0.0.1:9/"}),
            _ => json!({"task_id": format!("{prefix}{i}"), "wasm_cid": "fib.wasm",
                        "input": {"entry": "fib", "args": [i % 30]}}),
        })
        .collect()
}

fn batch(base: &str, tasks: &[Value]) -> support::Reply {
    post(
        base,
        "/v1/tasks:batch",
        &json!({ "tasks": tasks }).to_string(),
        None,
    )
}

/// How many tasks are in `state` (up to 1,000).
fn count(base: &str, state: &str) -> usize {
    let r = get(base, &format!("/v1/tasks?state={state}&limit=1000"), None);
    r.body["tasks"].as_array().map_or(0, Vec::len)
}

fn coordinator(dir: &std::path::Path) -> Service {
    let mut cmd = command(dir);
    cmd.env("COORDINATOR_CONCURRENCY", "2");
    Service::start(cmd)
}

/// Checks the first answer to [`thousand`]: 997 taken, the three bad items refused, naming why.
fn check_first_answer(r: &support::Reply) {
    assert_eq!(r.status, 200, "{r:?}");
    let counts = (r.body["taken"].as_u64(), r.body["refused"].as_u64());
    assert_eq!(counts, (Some(997), Some(3)));
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    for (i, item) in results.iter().enumerate() {
        assert_eq!(item["index"], i, "{item}");
        let want = if matches!(i, 7 | 500 | 999) { 400 } else { 201 };
        assert_eq!(item["status"], want, "{item}");
    }
    let message = |i: usize| results[i]["message"].as_str().unwrap_or_default();
    assert!(message(7).contains("wasm_cid"), "{}", message(7));
    assert_eq!(
        results[500]["field"], "limits.timeout_sec",
        "{}",
        results[500]
    );
    assert!(
        message(999).contains("COORDINATOR_WEBHOOK_SECRET"),
        "{}",
        message(999)
    );
}

#[test]
fn a_batch_of_1000_runs_its_good_items_answers_each_and_runs_nothing_twice_when_resent() {
    let dir = tempfile::tempdir().unwrap();
    let svc = coordinator(dir.path());
    let started = Instant::now();
    let r = batch(&svc.base, &thousand("b"));
    let took = started.elapsed();
    check_first_answer(&r);
    eprintln!("a batch of 1,000 answered in {} ms", took.as_millis());

    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&svc.base, "succeeded") < 997 {
        let done = count(&svc.base, "succeeded");
        assert!(Instant::now() < deadline, "{done} succeeded");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "997 tasks succeeded {} ms after the batch",
        started.elapsed().as_millis()
    );
    for i in [0u64, 13, 29, 998] {
        let task = get(&svc.base, &format!("/v1/tasks/b{i}"), None).body;
        assert_eq!(task["result"]["result"], fib(i % 30), "{task}");
    }
    assert_eq!(get(&svc.base, "/v1/tasks/b7", None).status, 404);

    let again = batch(&svc.base, &thousand("b"));
    assert_eq!(again.body["taken"], 997, "{again:?}");
    let statuses: Vec<u64> = again.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.get("status").and_then(Value::as_u64).unwrap_or(0))
        .collect();
    let known = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(known, 997, "all known already");
    assert_eq!(count(&svc.base, "succeeded"), 997, "nothing ran twice");
    assert_eq!(count(&svc.base, "pending"), 0);
}

#[test]
fn a_batch_of_1001_is_refused_whole_and_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = coordinator(dir.path());
    let mut over = thousand("c");
    over.push(json!({"task_id": "c1000", "wasm_cid": "fib.wasm", "input": [1]}));
    let r = batch(&svc.base, &over);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["error"]["field"], "tasks");
    let message = r.body["error"]["message"].as_str().unwrap();
    let names_limit = message.contains("1001 tasks") && message.contains("limit is 1000");
    assert!(names_limit, "{message}");
    assert_eq!(
        get(&svc.base, "/v1/tasks/c0", None).status,
        404,
        "nothing taken"
    );
    assert_eq!(count(&svc.base, "pending"), 0);
}

/// The coordinator's count of tasks in `state`, from `/metrics`.
fn metric(base: &str, state: &str) -> u64 {
    let reply = get(base, "/metrics", None);
    let text = reply.body.as_str().unwrap_or_default();
    let line = format!("wasm_exec_tasks{{state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str())?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn batches_whose_clients_hang_up_before_the_answer_still_run_every_task_taken() {
    let dir = tempfile::tempdir().unwrap();
    let svc = coordinator(dir.path());
    let addr = svc.base.trim_start_matches("http://");
    for round in 0..5 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"task_id": format!("h{round}-{i}"), "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [1]}}))
            .collect();
        let body = json!({ "tasks": tasks }).to_string();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        write!(
            client,
            "POST /v1/tasks:batch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // Gone before the answer: while the batch is being journaled, or before it is read.
        drop(client);
    }
    // Before the handover ran on a task of its own, the hang-up dropped the handler between the
    // journal and the scheduler: its tasks stayed pending until the next start.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open: u64 = ["pending", "fetching", "running"]
            .iter()
            .map(|s| metric(&svc.base, s))
            .sum();
        let done = metric(&svc.base, "succeeded");
        if open == 0 && done > 0 {
            assert_eq!(
                done % 1000,
                0,
                "a batch is taken whole or not at all: {done}"
            );
            eprintln!("{} of 5 batches taken, every task run", done / 1000);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} tasks taken but not run, {done} succeeded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
