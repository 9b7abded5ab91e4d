//! Cancel, `?wait=` and the event stream end to end, against the real binary: a `loop {}` guest
//! is interrupted within 100 ms of its cancel, a cancel survives a crash, a wait returns when
//! the task ends, and SSE delivers the changes asked for.

mod support;

use serde_json::{Value, json};
use std::io::BufRead;
use std::time::{Duration, Instant};
use support::{Service, command, get, post};

const SPIN: &str = r#"(module (func (export "spin") (loop br 0)))"#;

/// Uploads the `loop {}` module; returns its CID.
fn upload_spin(base: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(format!("{base}/v1/modules"))
        .header("Content-Type", "text/wat")
        .send(SPIN)
        .expect("upload");
    let text = resp
        .body_mut()
        .read_to_string()
        .expect("the upload's answer");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    body["cid_v1"].as_str().expect("a CID").to_owned()
}

fn submit(base: &str, body: &Value) -> Value {
    let r = post(base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

fn spin_task(id: &str, cid: &str) -> Value {
    json!({"task_id": id, "wasm_cid": cid, "input": {"entry": "spin"}, "limits": {"timeout_sec": 120}})
}

fn fib_task(id: &str) -> Value {
    json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]}})
}

fn cancel(base: &str, id: &str) -> support::Reply {
    post(base, &format!("/v1/tasks/{id}/cancel"), "", None)
}

/// Polls the task until `done` holds for it (10 s at most).
fn until(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(base, &format!("/v1/tasks/{id}"), None);
        if done(&r.body) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "task {id}: {r:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When the task entered `state`, per its timeline (Unix ms).
fn entered(task: &Value, state: &str) -> u64 {
    task["timeline"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["state"] == state))
        .and_then(|s| s["at_ms"].as_u64())
        .unwrap_or_else(|| panic!("no {state} step in {task}"))
}

#[test]
fn a_cancel_drops_a_queued_task_and_interrupts_a_running_loop_within_100_ms() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_CONCURRENCY", "1");
    let svc = Service::start(cmd);
    let cid = upload_spin(&svc.base);
    submit(&svc.base, &spin_task("spin", &cid));
    until(&svc.base, "spin", |t| t["state"] == "running");
    submit(&svc.base, &fib_task("next"));
    submit(&svc.base, &fib_task("later"));
    let next = until(&svc.base, "next", |t| t["waiting"].is_object());
    assert_eq!(next["waiting"], json!({"reason": "waiting_for_slot"}));
    let later = get(&svc.base, "/v1/tasks/later", None).body;
    assert_eq!(later["waiting"], json!({"reason": "queued", "ahead": 1}));

    let r = cancel(&svc.base, "later");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body["state"], "cancelled",
        "a queued task is cancelled at once"
    );
    assert_eq!(r.body["result"]["error"]["kind"], "cancelled_by_request");
    assert_eq!(r.body["cancelled"]["by"], "anonymous");

    let r = cancel(&svc.base, "spin");
    assert_eq!(r.status, 200, "{r:?}");
    let cancelled_at = r.body["cancelled"]["at_ms"].as_u64().unwrap();
    // The loop's slot is the next task's once the guest has stopped: the time from the cancel
    // to that task's fetch is the interruption, plus the scheduler's hand-over.
    let next = until(&svc.base, "next", |t| t["state"] == "succeeded");
    let handed_over_ms = entered(&next, "fetching") - cancelled_at;
    eprintln!("cancel to the next task's start: {handed_over_ms} ms");
    assert!(
        handed_over_ms < 100,
        "{handed_over_ms} ms from the cancel to the slot freed"
    );
    assert_eq!(next["result"]["result"], 144);

    let spin = get(&svc.base, "/v1/tasks/spin", None).body;
    assert_eq!(
        spin["state"], "cancelled",
        "the interrupted run's result does not replace it"
    );
    let steps: Vec<&str> = spin["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["state"].as_str())
        .collect();
    assert_eq!(steps, ["pending", "fetching", "running", "cancelled"]);
    let later = get(&svc.base, "/v1/tasks/later", None).body;
    assert_eq!(later["attempts"], 0, "the queued task never ran: {later}");
    assert_eq!(
        cancel(&svc.base, "spin").status,
        200,
        "cancelling again is the same answer"
    );
    let r = cancel(&svc.base, "next");
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already ended (succeeded)")
    );
    assert_eq!(cancel(&svc.base, "nope").status, 404);
}

#[test]
fn a_task_cancelled_while_running_stays_cancelled_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let cid = upload_spin(&svc.base);
    submit(&svc.base, &spin_task("spin", &cid));
    until(&svc.base, "spin", |t| t["state"] == "running");
    assert_eq!(cancel(&svc.base, "spin").status, 200);
    svc.kill_and_drain();

    let svc = Service::start(command(dir.path()));
    submit(&svc.base, &fib_task("after"));
    until(&svc.base, "after", |t| t["state"] == "succeeded");
    let spin = get(&svc.base, "/v1/tasks/spin", None).body;
    assert_eq!(spin["state"], "cancelled", "{spin}");
    assert_eq!(spin["attempts"], 1, "it was not started again: {spin}");
}

#[test]
fn a_wait_holds_until_the_task_ends_or_its_time_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    submit(&svc.base, &fib_task("fib"));
    let done = get(&svc.base, "/v1/tasks/fib?wait=20", None);
    assert_eq!(done.body["state"], "succeeded", "{done:?}");
    assert_eq!(done.body["result"]["result"], 144);

    let cid = upload_spin(&svc.base);
    submit(&svc.base, &spin_task("spin", &cid));
    let started = Instant::now();
    let held = get(&svc.base, "/v1/tasks/spin?wait=0.5", None);
    let took = started.elapsed();
    assert!(
        !held.body["state"].as_str().unwrap().ends_with("ed"),
        "{held:?}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A cancel from elsewhere ends a wait at once.
    let base = svc.base.clone();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (
            get(&base, "/v1/tasks/spin?wait=30", None),
            started.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cancel(&svc.base, "spin").status, 200);
    let (reply, took) = waiter.join().unwrap();
    assert_eq!(reply.body["state"], "cancelled");
    assert!(
        took < Duration::from_secs(5),
        "the wait ended with the task: {took:?}"
    );
    assert_eq!(get(&svc.base, "/v1/tasks/fib?wait=soon", None).status, 400);
}

#[test]
fn the_event_stream_sends_the_changes_of_the_states_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let (lines, received) = std::sync::mpsc::channel::<String>();
    let url = format!("{}/v1/events?state=running,succeeded", svc.base);
    std::thread::spawn(move || {
        let resp = ureq::get(&url).call().expect("the event stream");
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // The stream is open once the coordinator answers its headers; a task submitted after a
    // short settle is seen whole.
    std::thread::sleep(Duration::from_millis(300));
    submit(&svc.base, &fib_task("seen"));
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !states.contains(&"succeeded".to_owned()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = received.recv_timeout(left).expect("an event within 10 s");
        if let Some(data) = line.strip_prefix("data:") {
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            assert_eq!(event["task_id"], "seen");
            states.push(event["state"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        states,
        ["running", "succeeded"],
        "only the states asked for"
    );
    assert_eq!(get(&svc.base, "/v1/events?state=done", None).status, 400);
}
