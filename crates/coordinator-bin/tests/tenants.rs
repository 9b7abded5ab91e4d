//! Tenants end to end, against the real binary with a tokens file made by `coordinator token
//! new`: a tenant sees, cancels and streams only its own tasks (404 for others'), a rate over
//! tasks_per_minute is a 429 with `Retry-After`, and one tenant's 10,000 queued tasks do not
//! hold up another's one (the figure is printed).

mod support;

use serde_json::{Value, json};
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Service, command, get, new_token, post};

const ADMIN: &str = "the-single-api-token";

/// A coordinator with tenants `a` (quota 2) and `b` (quota 1, 3 tasks per minute), and the
/// single API token; returns it and the tokens of a and b.
fn start(dir: &Path, concurrency: usize) -> (Service, String, String) {
    let (a, a_entry) = new_token(dir, "a-ci");
    let (b, b_entry) = new_token(dir, "b-ci");
    let file = json!({"tenants": [
        {"tenant": "a", "concurrency": 2, "tokens": [a_entry]},
        {"tenant": "b", "concurrency": 1, "tasks_per_minute": 3, "tokens": [b_entry]},
    ]});
    let path = dir.join("tokens.json");
    std::fs::write(&path, file.to_string()).expect("the tokens file");
    let mut cmd = command(&dir.join("state"));
    cmd.env("COORDINATOR_TOKENS_FILE", &path)
        .env("COORDINATOR_API_TOKEN", ADMIN)
        .env("COORDINATOR_CONCURRENCY", concurrency.to_string());
    (Service::start(cmd), a, b)
}

fn fib(id: &str, n: u64) -> String {
    json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [n]}})
        .to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| t["task_id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Opens `GET /v1/events?state=succeeded` as `token`; returns its lines once it is subscribed.
fn open_stream(base: &str, token: &str) -> std::sync::mpsc::Receiver<String> {
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let url = format!("{base}/v1/events?state=succeeded");
    let token = token.to_owned();
    std::thread::spawn(move || {
        let resp = ureq::get(&url)
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("the event stream");
        let _ = lines.send("open".into()); // subscribed once the headers are out
        for line in std::io::BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let open = received.recv_timeout(Duration::from_secs(10));
    assert_eq!(open.as_deref(), Ok("open"));
    received
}

/// The task ids of the stream's events until `last`'s (10 s at most).
fn streamed_until(received: &std::sync::mpsc::Receiver<String>, last: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut streamed = Vec::new();
    while !streamed.iter().any(|id| id == last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = received.recv_timeout(left).expect("the event within 10 s");
        if let Some(data) = line.strip_prefix("data:") {
            let event: Value = serde_json::from_str(data.trim()).expect("JSON");
            streamed.push(event["task_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    streamed
}

#[test]
fn a_tenant_sees_and_cancels_only_its_own_tasks_and_gets_404_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, a, b) = start(dir.path(), 2);
    let base = svc.base.clone();
    assert_eq!(
        post(&base, "/v1/tasks", &fib("a-1", 12), Some(&a)).status,
        201
    );
    let done = get(&base, "/v1/tasks/a-1?wait=10", Some(&a));
    assert_eq!(done.body["state"], "succeeded", "{done:?}");
    assert_eq!(done.body["tenant"], "a");
    for (path, token) in [
        ("/v1/tasks/a-1", b.as_str()),
        ("/v1/tasks/a-1/result", &b),
        ("/v1/tasks/a-1/receipt", &b),
        ("/v1/tasks/a-1?wait=5", &b),
        ("/v1/tasks/a-1", ADMIN),
    ] {
        assert_eq!(get(&base, path, Some(token)).status, 404, "{path}");
    }
    assert_eq!(
        post(&base, "/v1/tasks/a-1/cancel", "", Some(&b)).status,
        404
    );
    let taken = post(&base, "/v1/tasks", &fib("a-1", 12), Some(&b));
    assert_eq!(
        taken.status, 409,
        "b is not answered with a's task: {taken:?}"
    );
    let message = taken.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("choose another id"), "{message}");

    assert_eq!(
        post(&base, "/v1/tasks", &fib("b-1", 10), Some(&b)).status,
        201
    );
    assert_eq!(
        post(&base, "/v1/tasks", &fib("plain", 5), Some(ADMIN)).status,
        201
    );
    assert_eq!(ids(&get(&base, "/v1/tasks", Some(&a)).body), ["a-1"]);
    assert_eq!(ids(&get(&base, "/v1/tasks", Some(&b)).body), ["b-1"]);
    assert_eq!(ids(&get(&base, "/v1/tasks", Some(ADMIN)).body), ["plain"]);
    assert_eq!(get(&base, "/v1/tasks", None).status, 401);
    assert_eq!(get(&base, "/v1/tasks", Some("wx_guessed")).status, 401);
}

#[test]
fn a_tenants_event_stream_carries_only_its_own_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, a, b) = start(dir.path(), 2);
    let base = svc.base.clone();
    let received = open_stream(&base, &b);
    assert_eq!(
        post(&base, "/v1/tasks", &fib("a-1", 12), Some(&a)).status,
        201
    );
    assert_eq!(
        post(&base, "/v1/tasks", &fib("plain", 5), Some(ADMIN)).status,
        201
    );
    let done = get(&base, "/v1/tasks/a-1?wait=10", Some(&a));
    assert_eq!(done.body["state"], "succeeded", "{done:?}");
    assert_eq!(
        get(&base, "/v1/tasks/plain?wait=10", Some(ADMIN)).body["state"],
        "succeeded"
    );
    assert_eq!(
        post(&base, "/v1/tasks", &fib("b-1", 10), Some(&b)).status,
        201
    );
    let streamed = streamed_until(&received, "b-1");
    assert_eq!(
        streamed,
        ["b-1"],
        "b's stream carries none of a's or the default's"
    );
}

#[test]
fn a_rate_over_tasks_per_minute_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, _, b) = start(dir.path(), 1);
    for i in 0..3 {
        let r = post(&svc.base, "/v1/tasks", &fib(&format!("r{i}"), 1), Some(&b));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .post(format!("{}/v1/tasks", svc.base))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {b}"))
        .send(fib("r3", 1))
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one task's refill is 20 s: {retry}"
    );
    assert_eq!(
        get(&svc.base, "/v1/tasks/r3", Some(&b)).status,
        404,
        "not taken"
    );
}

#[test]
fn one_tenants_10000_queued_tasks_do_not_hold_up_anothers_one() {
    let dir = tempfile::tempdir().unwrap();
    let (svc, a, b) = start(dir.path(), 1);
    for batch in 0..10 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| {
                let id = format!("a{batch}-{i:03}");
                json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [25]}})
            })
            .collect();
        let body = json!({ "tasks": tasks }).to_string();
        let r = post(&svc.base, "/v1/tasks:batch", &body, Some(&a));
        assert_eq!(r.body["taken"], 1000, "{:?}", r.body["results"][0]);
    }
    let submitted = Instant::now();
    assert_eq!(
        post(&svc.base, "/v1/tasks", &fib("b-urgent", 12), Some(&b)).status,
        201
    );
    let done = get(&svc.base, "/v1/tasks/b-urgent?wait=30", Some(&b));
    let waited = submitted.elapsed();
    assert_eq!(done.body["state"], "succeeded", "{done:?}");
    let pending = get(&svc.base, "/v1/tasks?state=pending&limit=1000", Some(&a));
    let a_left = ids(&pending.body).len();
    let metrics = get(&svc.base, "/metrics", Some(ADMIN)).body;
    let metrics = metrics.as_str().unwrap_or_default();
    let all_pending = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasm_exec_tasks{state=\"pending\"} "))
        .unwrap_or("?")
        .to_owned();
    eprintln!(
        "b's one task ended {} ms after its submission, with {all_pending} of a's 10,000 still \
         pending",
        waited.as_millis()
    );
    assert_eq!(
        a_left, 1000,
        "a's queue was far from done (a page of 1,000 pending)"
    );
    assert!(waited < Duration::from_secs(2), "b waited {waited:?}");
}
