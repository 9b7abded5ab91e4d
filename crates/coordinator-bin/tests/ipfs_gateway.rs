//! The gateway module store end to end: a real js-ipfs node (started here, offline), the samples
//! added to it, and `coordinator --once` fetching them by CIDv0 and CIDv1 with an empty mirror.
//! Needs `scripts/install-test-peers` (run by `scripts/test`).

mod support;

use serde_json::{Value, json};
use std::process::Output;
use std::time::{Duration, Instant};
use support::JsIpfs;
use support::repo;
use wasm_exec_coordinator::source::placeholder::{ADD_CID, AFFINE_CID, FIB_CID};

/// `coordinator --once` over `tasks`, fetching only from `node`'s gateway; extra settings in `env`.
fn run_once(node: &JsIpfs, tasks: &Value, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty_mirror = dir.path().join("mirror");
    std::fs::create_dir(&empty_mirror).expect("create the empty mirror");
    let tasks_file = dir.path().join("tasks.json");
    std::fs::write(&tasks_file, tasks.to_string()).expect("write tasks file");
    std::process::Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .env_clear()
        .current_dir(dir.path())
        .env("COORDINATOR_IPFS_ENDPOINT", &node.gateway)
        .env("COORDINATOR_IPFS_MIRROR", &empty_mirror)
        .env("COORDINATOR_TASKS_FILE", &tasks_file)
        .env("COORDINATOR_STATE_DIR", dir.path().join("state"))
        .env("COORDINATOR_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .arg("--once")
        .output()
        .expect("run coordinator")
}

/// The table row of `task` (its first column), split into words.
fn row<'a>(out: &'a Output, task: &str) -> Vec<&'a str> {
    support::table_row(out, task).split_whitespace().collect()
}

fn sample(name: &str) -> Vec<u8> {
    let path = repo(&format!("host/wasm/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn js_ipfs_adds_files_with_the_cids_we_compute() {
    let node = JsIpfs::start();
    let fib = sample("fib");
    // Ground truth in testdata/ipfs/js-ipfs-cids.txt.
    let v0 = node.add(&fib, 0);
    assert_eq!(v0, "QmcDib5JxgqEPVs1f9UHvvZ6RoQqedWRq7TuRG9ATLQ7Z8");
    let v1 = node.add(&fib, 1);
    assert_eq!(v1, FIB_CID);
    for cid in [v0, v1] {
        let mut resp = ureq::get(format!("{}/{cid}", node.gateway))
            .call()
            .unwrap_or_else(|e| panic!("GET {cid} from the gateway: {e}\n{}", node.log()));
        let body = resp.body_mut().read_to_vec().expect("gateway body");
        assert!(body == fib, "the gateway serves other bytes for {cid}");
    }
}

#[test]
fn samples_run_from_a_real_ipfs_gateway_by_cidv0_and_cidv1() {
    let node = JsIpfs::start();
    let samples = [
        ("add", ADD_CID, Value::Null, "12"),
        ("fib", FIB_CID, json!({"entry": "fib", "args": [12]}), "144"),
        (
            "affine",
            AFFINE_CID,
            json!({"entry": "affine", "args": [13, 9, 2]}),
            "35",
        ),
    ];
    let mut tasks = Vec::new();
    for (name, placeholder_cid, input, _) in &samples {
        let bytes = sample(name);
        let v0 = node.add(&bytes, 0);
        assert!(v0.starts_with("Qm"), "{name}: CIDv0 expected, got {v0}");
        let v1 = node.add(&bytes, 1);
        assert_eq!(
            &v1, placeholder_cid,
            "{name}: CIDv1 differs from the placeholder's"
        );
        for (version, cid) in [("v0", v0), ("v1", v1)] {
            tasks.push(
                json!({"task_id": format!("{name}-{version}"), "wasm_cid": cid, "input": input}),
            );
        }
    }

    let out = run_once(&node, &Value::Array(tasks), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{out:?}\njs-ipfs log:\n{}",
        node.log()
    );
    for (name, _, _, result) in &samples {
        for version in ["v0", "v1"] {
            let task = format!("{name}-{version}");
            let cols = row(&out, &task);
            // TASK ENTRY STATE RESULT TIME
            assert_eq!(cols[2..4], ["succeeded", *result], "row {cols:?}");
        }
    }
}

#[test]
fn unknown_cid_on_a_real_gateway_is_module_unavailable() {
    let node = JsIpfs::start();
    let tasks = json!([
        {"task_id": "unknown", "wasm_cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"},
    ]);
    let started = Instant::now();
    // js-ipfs never answers for a CID it lacks (its bitswap waits for peers even offline), so
    // only the coordinator's request timeout ends each attempt: keep both short.
    let out = run_once(
        &node,
        &tasks,
        &[
            ("COORDINATOR_IPFS_TIMEOUT_SEC", "3"),
            ("COORDINATOR_IPFS_RETRIES", "1"),
        ],
    );
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        row(&out, "unknown")[2..4],
        ["failed", "(module_unavailable)"]
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[test]
fn wat_text_on_a_real_gateway_is_bad_module_never_quoted() {
    let node = JsIpfs::start();
    let wat = std::fs::read(repo("testdata/wat/busy_loop.wat")).expect("the WAT fixture");
    let wat_cid = node.add(&wat, 1);
    let add_cid = node.add(&sample("add"), 1);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("mirror")).expect("the empty mirror");
    let mut cmd = support::command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_ENDPOINT", &node.gateway)
        .env("COORDINATOR_IPFS_MIRROR", dir.path().join("mirror"))
        .env("COORDINATOR_CACHE_DIR", dir.path().join("cache"));
    let svc = support::Service::start(cmd);
    let started = Instant::now();
    let submit = |id: &str, cid: &str| {
        let body =
            json!({"task_id": id, "wasm_cid": cid, "input": {"entry": "count", "args": [3]}});
        let reply = support::post(&svc.base, "/v1/tasks", &body.to_string(), None);
        assert_eq!(reply.status, 201, "{reply:?}");
    };
    submit("wat", &wat_cid);
    let wat_task = support::wait_finished(&svc.base, "wat");
    let error = &wat_task["result"]["error"];
    assert_eq!(error["kind"], "bad_module", "{wat_task}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&wat_cid) && message.contains("no \\0asm magic"),
        "{message}"
    );
    assert!(
        !wat_task.to_string().contains("Counts down"),
        "the WAT was quoted: {wat_task}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !svc.log.lock().unwrap().contains("Counts down"),
        "the WAT was logged"
    );

    let add = json!({"task_id": "add", "wasm_cid": add_cid});
    assert_eq!(
        support::post(&svc.base, "/v1/tasks", &add.to_string(), None).status,
        201
    );
    assert_eq!(
        support::wait_finished(&svc.base, "add")["result"]["result"],
        12
    );
    assert_eq!(support::get(&svc.base, "/healthz", None).status, 200);
    assert_eq!(support::get(&svc.base, "/readyz", None).status, 200);
    let peak = svc.peak_rss_kib();
    eprintln!("peak RSS {} MiB", peak >> 10);
    assert!(peak < 256 << 10, "peak RSS {peak} KiB");
}
