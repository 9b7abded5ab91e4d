//! The HTTP API end to end, against the real binary serving on a free port.

mod support;

use serde_json::json;
use support::{Service, command, get, post, wait_finished};

#[test]
fn submitted_task_runs_and_its_result_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let body = json!({"task_id": "fib-1", "wasm_cid": "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je", "input": {"entry": "fib", "args": [12]}});
    let r = post(&svc.base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["task_id"], "fib-1");
    let done = wait_finished(&svc.base, "fib-1");
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["result"]["result"], 144);
    assert_eq!(done["reported"], true);

    let again = post(&svc.base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(
        again.status, 200,
        "same id and body: the existing task, not a new run"
    );
    assert_eq!(again.body["attempts"], 1);
    let other = json!({"task_id": "fib-1", "wasm_cid": "fib.wasm"});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &other.to_string(), None).status,
        409
    );

    let generated = post(&svc.base, "/v1/tasks", r#"{"wasm_cid": "add.wasm"}"#, None);
    assert_eq!(generated.status, 201);
    let id = generated.body["task_id"].as_str().unwrap().to_owned();
    assert_eq!(wait_finished(&svc.base, &id)["result"]["result"], 12);
}

#[test]
fn bad_requests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let cases = [
        (r#"{"input": {}}"#, "wasm_cid"),
        (r#"{"wasm_cid": "fib.wasm", "inptu": 1}"#, "inptu"),
        (r#"{"wasm_cid": "../etc/passwd"}"#, "wasm_cid"),
        (r#"{"wasm_cid": "fib.wasm", "task_id": "a b"}"#, "task_id"),
        (r#"{"wasm_cid": "fib.wasm", "input": {"args": 5}}"#, "input"),
        (
            r#"{"wasm_cid": "fib.wasm", "limits": {"timeout_sec": -1}}"#,
            "limits.timeout_sec",
        ),
        (
            r#"{"wasm_cid": "fib.wasm", "limits": {"fuel": "lots"}}"#,
            "limits.fuel",
        ),
        ("not json", "body"),
        (r#"{"wasm_cid": "fib.wasm"} xyz"#, "body"),
        (r#"{"wasm_cid": "fib\n.wasm"}"#, "wasm_cid"),
    ];
    for (body, field) in cases {
        let r = post(&svc.base, "/v1/tasks", body, None);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        let text = r.body["error"].to_string();
        assert!(
            text.contains(field),
            "{body}: error should name {field}: {text}"
        );
    }
    assert_eq!(oversize_post_status(&svc.base, 2 << 20), 413);
    let missing = get(&svc.base, "/v1/tasks/nope", None);
    assert_eq!(missing.status, 404);
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(get(&svc.base, "/v1/tasks?state=sleeping", None).status, 400);
    let listed = get(&svc.base, "/v1/tasks", None);
    assert_eq!(
        listed.body["tasks"],
        serde_json::json!([]),
        "nothing refused was stored"
    );
}

#[test]
fn limits_over_the_maxima_and_forged_log_lines_are_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let cases = [
        (
            r#"{"wasm_cid": "fib.wasm", "entry": "fib\nINFO forged"}"#,
            "entry",
        ),
        (
            r#"{"wasm_cid": "fib.wasm", "limits": {"max_memory_mb": 4096}}"#,
            "COORDINATOR_MAX_TASK_MEMORY_MB",
        ),
        (
            r#"{"wasm_cid": "fib.wasm", "limits": {"max_memory_mb": 18446744073709551615}}"#,
            "limits.max_memory_mb",
        ),
        (
            r#"{"wasm_cid": "fib.wasm", "limits": {"timeout_sec": 1e20}}"#,
            "COORDINATOR_MAX_TASK_TIMEOUT_SEC",
        ),
    ];
    for (body, expected) in cases {
        let r = post(&svc.base, "/v1/tasks", body, None);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            r.body["error"].to_string().contains(expected),
            "{body}: {r:?}"
        );
    }
}

#[test]
fn submissions_must_be_declared_json_and_hold_only_exact_integers() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let body = r#"{"wasm_cid": "fib.wasm"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = support::post_as(&svc.base, "/v1/tasks", body, content_type);
        assert_eq!(r.status, 415, "{content_type:?}: {r:?}");
        assert!(r.body.to_string().contains("application/json"), "{r:?}");
    }
    let charset = Some("application/json; charset=utf-8");
    let r = support::post_as(&svc.base, "/v1/tasks", body, charset);
    assert_eq!(r.status, 201, "{r:?}");
    let huge = r#"{"wasm_cid": "fib.wasm", "input": [123456789012345678901234567890]}"#;
    let r = post(&svc.base, "/v1/tasks", huge, None);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.to_string().contains("decimal string"), "{r:?}");
    let listed = get(&svc.base, "/v1/tasks", None);
    let stored = listed.body["tasks"].as_array().map_or(0, Vec::len);
    assert_eq!(
        stored, 1,
        "only the one good submission was stored: {listed:?}"
    );
}

#[test]
fn failing_tasks_are_failed_with_their_kind_and_the_service_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    let cases = [
        (
            json!({"task_id": "unknown", "wasm_cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}),
            "module_unavailable",
        ),
        (
            json!({"task_id": "no-entry", "wasm_cid": "fib.wasm", "entry": "fibb"}),
            "entry_not_found",
        ),
        (
            json!({"task_id": "bad-arg", "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [1.5]}}),
            "bad_input",
        ),
        (
            json!({"task_id": "missing-file", "wasm_cid": "nothing.wasm"}),
            "module_unavailable",
        ),
    ];
    for (body, _) in &cases {
        assert_eq!(
            post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
            201
        );
    }
    for (body, kind) in &cases {
        let done = wait_finished(&svc.base, body["task_id"].as_str().unwrap());
        assert_eq!(done["state"], "failed");
        assert_eq!(done["result"]["error"]["kind"], *kind, "{done}");
    }
    let ok = post(
        &svc.base,
        "/v1/tasks",
        r#"{"task_id": "after", "wasm_cid": "add.wasm"}"#,
        None,
    );
    assert_eq!(ok.status, 201);
    assert_eq!(wait_finished(&svc.base, "after")["result"]["result"], 12);
}

#[test]
fn list_pages_by_state_and_metrics_count_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(command(dir.path()));
    // Five identical tasks: the first runs, the result cache answers the next three; the last
    // opts out of the cache, so it runs again (on the compiled module the first one left).
    for i in 0..5 {
        let mut body = json!({"task_id": format!("t{i}"), "wasm_cid": "add.wasm"});
        if i == 4 {
            body["cache"] = json!(false);
        }
        assert_eq!(
            post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
            201
        );
    }
    for i in 0..5 {
        wait_finished(&svc.base, &format!("t{i}"));
    }
    let page = get(&svc.base, "/v1/tasks?state=succeeded&limit=2", None);
    assert_eq!(page.body["tasks"].as_array().unwrap().len(), 2);
    let next = page.body["next"].as_str().unwrap().to_owned();
    let rest = get(
        &svc.base,
        &format!("/v1/tasks?state=succeeded&after={next}&limit=10"),
        None,
    );
    assert_eq!(rest.body["tasks"].as_array().unwrap().len(), 3);
    let metrics = get(&svc.base, "/metrics", None).body;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("wasm_exec_tasks{state=\"succeeded\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("wasm_exec_task_results_total{kind=\"ok\"} 5"),
        "{text}"
    );
    for line in [
        "wasm_exec_result_cache_total{outcome=\"hit\"} 3",
        "wasm_exec_result_cache_total{outcome=\"miss\"} 1",
        "wasm_exec_result_cache_entries 1",
        "wasm_exec_compiled_module_cache_total{outcome=\"hit\"} 1",
        "wasm_exec_compiled_module_cache_total{outcome=\"miss\"} 1",
        "wasm_exec_task_run_seconds_count 5",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    assert!(
        text.contains("wasm_exec_module_fetched_bytes_total 330"),
        "{text}"
    );
}

#[test]
fn token_guards_everything_but_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_API_TOKEN", "s3cret");
    let svc = Service::start(cmd);
    assert_eq!(get(&svc.base, "/healthz", None).status, 200);
    assert_eq!(get(&svc.base, "/readyz", None).status, 200);
    assert_eq!(get(&svc.base, "/v1/tasks", None).status, 401);
    assert_eq!(get(&svc.base, "/v1/tasks", Some("wrong")).status, 401);
    assert_eq!(get(&svc.base, "/metrics", None).status, 401);
    assert_eq!(
        post(&svc.base, "/v1/tasks", r#"{"wasm_cid":"add.wasm"}"#, None).status,
        401
    );
    assert_eq!(get(&svc.base, "/v1/tasks", Some("s3cret")).status, 200);
    assert!(
        !svc.log.lock().unwrap().contains("s3cret"),
        "the token is never logged"
    );
}

#[test]
fn sigterm_finishes_running_tasks_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = support::repo("testdata/wasm");
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let slow = json!({"task_id": "slow", "wasm_cid": "hostile.wasm", "entry": "spin", "limits": {"timeout_sec": 1}});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &slow.to_string(), None).status,
        201
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let base = svc.base.clone();
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    // Restart on the same state: the task has its one result, persisted before exit.
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let done = wait_finished(&svc.base, "slow");
    assert_ne!(base, "");
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(done["result"]["error"]["kind"], "timeout");
}

/// The status a `POST /v1/tasks` announcing a `length`-byte body gets before any of the body is
/// sent. (Sending it whole races the server, which answers 413 and closes at once, against the
/// client still writing: the client may see a broken pipe instead of the answer.)
fn oversize_post_status(base: &str, length: usize) -> u16 {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/tasks HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the headers");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

#[test]
fn list_pages_are_bounded_in_bytes_and_still_reach_every_task() {
    // Six results of 1 MiB of 0x01 on stdout and on stderr each (about 2 MiB as encoded): a
    // page of 100 held all of them, 12 MiB, before pages were bounded in bytes.
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let wasm = wat::parse_file(support::repo("testdata/wat/control_flood.wat")).unwrap();
    std::fs::write(mirror.join("flood.wasm"), wasm).unwrap();
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    for i in 0..6 {
        let body = json!({"task_id": format!("f{i}"), "wasm_cid": "flood.wasm",
            "input": {"args": [1024]}});
        assert_eq!(
            post(&svc.base, "/v1/tasks", &body.to_string(), None).status,
            201
        );
    }
    for i in 0..6 {
        wait_finished(&svc.base, &format!("f{i}"));
    }
    let (mut seen, mut pages, mut after) = (Vec::new(), 0, String::new());
    loop {
        let (status, text) = support::get_text(&svc.base, &format!("/v1/tasks?limit=100{after}"));
        assert_eq!(status, 200, "{text:.200}");
        assert!(text.len() <= 8 << 20, "a page of {} bytes", text.len());
        let page: serde_json::Value = serde_json::from_str(&text).unwrap();
        pages += 1;
        for task in page["tasks"].as_array().unwrap() {
            seen.push(task["task_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["f0", "f1", "f2", "f3", "f4", "f5"], "{pages} pages");
    assert!(pages >= 2, "one page held it all");
}

#[test]
fn the_result_cache_answers_only_identical_tasks_and_never_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    std::fs::copy(support::repo("host/wasm/fib.wasm"), mirror.join("fib.wasm")).unwrap();
    std::fs::copy(
        support::repo("testdata/wasm/hostile.wasm"),
        mirror.join("spin.wasm"),
    )
    .unwrap();
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let fib = |fuel: u64| json!({"wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [20]}, "limits": {"fuel": fuel}});
    let spin = json!({"wasm_cid": "spin.wasm", "input": {"entry": "spin"}, "limits": {"timeout_sec": 0.3}});
    // (task, its kind, whether the cache answers it)
    let cases = [
        (fib(1_000_000), "ok", false),
        (fib(1_000_000), "ok", true),
        (fib(2_000_000), "ok", false),
        (fib(100), "out_of_fuel", false),
        (fib(100), "out_of_fuel", true),
        (spin.clone(), "timeout", false),
        (spin, "timeout", false),
    ];
    let mut first: Option<serde_json::Value> = None;
    let mut hits = 0;
    for (n, (body, kind, hit)) in cases.iter().enumerate() {
        let (result, took) = run_task(&svc.base, &format!("c{n}"), body);
        let got = result["error"]["kind"].as_str().unwrap_or("ok");
        assert_eq!(got, *kind, "c{n}: {result}");
        if *kind == "timeout" {
            assert!(took.as_secs_f64() >= 0.3, "c{n} in {took:?}: not run");
        }
        // The same limits give the same document, fuel included, cached or not.
        let first = first.get_or_insert_with(|| result.clone());
        if n < 3 {
            assert_eq!(result["result"], first["result"], "c{n}");
            assert_eq!(result["fuel_consumed"], first["fuel_consumed"], "c{n}");
        }
        hits += usize::from(*hit);
        let metrics = get(&svc.base, "/metrics", None).body;
        let text = metrics.as_str().unwrap();
        let mut lines = vec![format!(
            "wasm_exec_result_cache_total{{outcome=\"miss\"}} {}",
            n + 1 - hits
        )];
        if hits > 0 {
            lines.push(format!(
                "wasm_exec_result_cache_total{{outcome=\"hit\"}} {hits}"
            ));
        }
        for line in lines {
            assert!(text.contains(&line), "c{n}: no {line} in:\n{text}");
        }
    }
}

/// Submits `body` as task `id` and waits for it: its result document, and the time from the
/// submission to the result.
fn run_task(
    base: &str,
    id: &str,
    body: &serde_json::Value,
) -> (serde_json::Value, std::time::Duration) {
    let mut body = body.clone();
    body["task_id"] = json!(id);
    let started = std::time::Instant::now();
    assert_eq!(post(base, "/v1/tasks", &body.to_string(), None).status, 201);
    let done = wait_finished(base, id);
    (done["result"].clone(), started.elapsed())
}
