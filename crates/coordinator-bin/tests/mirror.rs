//! The mirror against hostile directories, through the real binary: links to host files, FIFOs,
//! devices, text and huge files are refused without leaking a byte, and unknown CIDs do not
//! re-hash the mirror.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Service, command, get, post, repo, table_row, wait_finished};
use wasm_exec_ipfs::file_cids;

/// A line no result, log or table may ever show.
const SECRET: &str = "MIRROR_TEST_SECRET=hunter2-5f0c1e";

/// `coordinator --once` over `mirror` and `tasks`, bounded by a deadline (a blocked coordinator
/// is killed, and the test fails); stdout and stderr go to files, so nothing can fill a pipe.
fn run_once(dir: &Path, mirror: &Path, tasks: &Value) -> (Output, String, Duration) {
    std::fs::write(dir.join("tasks.json"), tasks.to_string()).expect("mirror test setup");
    let out = std::fs::File::create(dir.join("stdout")).expect("mirror test setup");
    let err = std::fs::File::create(dir.join("stderr")).expect("mirror test setup");
    let (name, value) = SECRET.split_once('=').expect("mirror test setup");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .env_clear()
        .env(name, value)
        .env("COORDINATOR_IPFS_MIRROR", mirror)
        .env("COORDINATOR_STATE_DIR", dir.join("state"))
        .env("COORDINATOR_LISTEN", "127.0.0.1:0")
        .env("COORDINATOR_TASKS_FILE", dir.join("tasks.json"))
        .env("COORDINATOR_RESULTS_FILE", dir.join("results.jsonl"))
        .arg("--once")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start coordinator --once");
    let deadline = started + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("mirror test setup") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("coordinator --once blocked for 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let output = Output {
        status,
        stdout: std::fs::read(dir.join("stdout")).expect("mirror test setup"),
        stderr: std::fs::read(dir.join("stderr")).expect("mirror test setup"),
    };
    let results = std::fs::read_to_string(dir.join("results.jsonl")).unwrap_or_default();
    (output, results, elapsed)
}

/// The written-back result of `task` from the results file.
fn result_of(results: &str, task: &str) -> Value {
    results
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("mirror test setup"))
        .find(|r| r["task_id"] == task)
        .unwrap_or_else(|| panic!("no result for {task} in {results}"))["result"]
        .clone()
}

fn assert_no_secret(place: &str, text: &str) {
    assert!(
        !text.contains("hunter2"),
        "the secret leaked into {place}:\n{text}"
    );
}

/// Asserts that `task` failed with `kind` and a message containing `words`.
fn assert_failed(results: &str, task: &str, kind: &str, words: &str) {
    let result = result_of(results, task);
    assert_eq!(result["error"]["kind"], kind, "{task}: {result}");
    let message = result["error"]["message"]
        .as_str()
        .expect("mirror test setup");
    assert!(message.contains(words), "{task}: {message}");
}

/// The service is healthy after an attack and, when its mirror has the sample `fib.wasm`, still
/// runs an ordinary task.
fn still_serves(svc: &Service, with_fib: bool) {
    assert_eq!(get(&svc.base, "/healthz", None).status, 200);
    assert_eq!(get(&svc.base, "/readyz", None).status, 200);
    if with_fib {
        let task = json!({"task_id": "fib-after", "wasm_cid": "fib.wasm",
            "input": {"entry": "fib", "args": [12]}});
        assert_eq!(
            post(&svc.base, "/v1/tasks", &task.to_string(), None).status,
            201
        );
        assert_eq!(
            wait_finished(&svc.base, "fib-after")["result"]["result"],
            144
        );
    }
}

#[test]
fn links_to_host_files_fail_and_their_bytes_appear_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    std::fs::write(dir.path().join("secret.txt"), format!("{SECRET}\n")).unwrap();
    let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, mirror.join(name)).unwrap();
    link("secret.wasm", &dir.path().join("secret.txt"));
    link("env.wasm", Path::new("/proc/self/environ"));
    link("shadow.wasm", Path::new("/etc/shadow"));
    std::fs::copy(repo("host/wasm/fib.wasm"), mirror.join("fib.wasm")).unwrap();
    let names = ["secret.wasm", "env.wasm", "shadow.wasm"];
    let tasks: Vec<_> = names
        .iter()
        .map(|n| json!({"task_id": n.trim_end_matches(".wasm"), "wasm_cid": n}))
        .collect();

    let (out, results, _) = run_once(dir.path(), &mirror, &Value::from(tasks.clone()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for task in ["secret", "env", "shadow"] {
        assert!(table_row(&out, task).contains("failed (bad_module)"));
        assert_failed(
            &results,
            task,
            "bad_module",
            "is a symbolic link, not a regular file",
        );
    }
    assert_no_secret("the results file", &results);
    assert_no_secret("stdout", &String::from_utf8_lossy(&out.stdout));
    assert_no_secret("the log", &String::from_utf8_lossy(&out.stderr));

    let (name, value) = SECRET.split_once('=').unwrap();
    let mut cmd = command(&dir.path().join("api-state"));
    cmd.env(name, value).env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    for task in &tasks {
        assert_eq!(
            post(&svc.base, "/v1/tasks", &task.to_string(), None).status,
            201
        );
        let view = wait_finished(&svc.base, task["task_id"].as_str().unwrap());
        assert_eq!(view["result"]["error"]["kind"], "bad_module", "{view}");
        assert_no_secret("the API's task view", &view.to_string());
    }
    let listing = get(&svc.base, "/v1/tasks?limit=100", None);
    assert_no_secret("the API's task list", &listing.body.to_string());
    assert_no_secret("the service log", &svc.log.lock().unwrap());
    still_serves(&svc, true);
}

#[test]
fn fifos_directories_and_devices_named_wasm_are_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(mirror.join("dir.wasm")).unwrap();
    let made = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(&mirror)
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(made("mkfifo", &["fifo.wasm"]), "mkfifo");
    // A character device (/dev/zero's numbers) needs CAP_MKNOD: checked where the test may make one.
    let device = made("mknod", &["zero.wasm", "c", "1", "5"]);
    let mut tasks = vec![
        json!({"task_id": "fifo", "wasm_cid": "fifo.wasm"}),
        json!({"task_id": "dir", "wasm_cid": "dir.wasm"}),
    ];
    if device {
        tasks.push(json!({"task_id": "zero", "wasm_cid": "zero.wasm"}));
    } else {
        eprintln!("mknod refused here: the device case is not checked");
    }
    let (out, results, elapsed) = run_once(dir.path(), &mirror, &Value::from(tasks));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_failed(
        &results,
        "fifo",
        "bad_module",
        "is a FIFO, not a regular file",
    );
    assert_failed(
        &results,
        "dir",
        "bad_module",
        "is a directory, not a regular file",
    );
    if device {
        assert_failed(&results, "zero", "bad_module", "is a character device");
    }
}

#[test]
fn wat_and_other_text_in_the_mirror_is_bad_module_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    std::fs::copy(
        repo("testdata/wat/busy_loop.wat"),
        mirror.join("busy_loop.wat"),
    )
    .unwrap();
    std::fs::write(mirror.join("notes.wasm"), format!("{SECRET}\n")).unwrap();
    let tasks = json!([
        {"task_id": "wat", "wasm_cid": "busy_loop.wat", "input": {"entry": "count", "args": [3]}},
        {"task_id": "notes", "wasm_cid": "notes.wasm"},
    ]);
    let (out, results, _) = run_once(dir.path(), &mirror, &tasks);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for task in ["wat", "notes"] {
        assert_failed(
            &results,
            task,
            "bad_module",
            "not a binary Wasm module (no \\0asm magic); compile WAT with wat2wasm first",
        );
    }
    assert!(
        !results.contains("Counts down"),
        "the WAT text was quoted: {results}"
    );
    assert_no_secret("the results file", &results);
    assert_no_secret("the log", &String::from_utf8_lossy(&out.stderr));
}

/// A number from `/proc/PID/{file}` (`key: N ...`) of the process whose environment holds
/// `marker`: `("status", "VmHWM")` is its peak resident set in KiB, `("io", "rchar")` the bytes
/// it has read.
fn proc_figure(marker: &str, file: &str, key: &str) -> u64 {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            let text = std::fs::read_to_string(entry.path().join(file)).expect("a /proc file");
            let line = text
                .lines()
                .find(|l| l.split(':').next() == Some(key))
                .expect("the key");
            let value = line.split_whitespace().nth(1).expect("a value");
            return value.parse().expect("a number");
        }
    }
    panic!("no process with {marker} in its environment");
}

fn peak_rss_kib(marker: &str) -> u64 {
    proc_figure(marker, "status", "VmHWM")
}

/// Submits `task` and waits for its result; returns the task view and how long it took.
fn submit(svc: &Service, task: &Value) -> (Value, Duration) {
    let started = Instant::now();
    assert_eq!(
        post(&svc.base, "/v1/tasks", &task.to_string(), None).status,
        201
    );
    let view = wait_finished(
        &svc.base,
        task["task_id"].as_str().expect("mirror test setup"),
    );
    (view, started.elapsed())
}

#[test]
fn a_sparse_4gb_file_and_proc_files_are_refused_quickly_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let big = std::fs::File::create(mirror.join("big.wasm")).unwrap();
    std::io::Write::write_all(&mut &big, b"\0asm\x01\0\0\0").unwrap();
    big.set_len(4 << 30).unwrap();
    std::fs::copy(repo("host/wasm/fib.wasm"), mirror.join("fib.wasm")).unwrap();

    let marker = "MIRROR_TEST_RUN=sparse-4gb";
    let (name, value) = marker.split_once('=').unwrap();
    let mut cmd = command(&dir.path().join("state"));
    cmd.env(name, value).env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let (view, took) = submit(&svc, &json!({"task_id": "big", "wasm_cid": "big.wasm"}));
    assert_eq!(
        view["result"]["error"]["kind"], "module_too_large",
        "{view}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let rss = peak_rss_kib(marker);
    eprintln!("4 GiB sparse file refused in {took:?}; peak RSS {rss} KiB");
    assert!(rss < 200 << 10, "peak RSS {rss} KiB");
    still_serves(&svc, true);

    // /proc files report size 0; pagemap reads on for gigabytes, environ holds the secret.
    let marker = "MIRROR_TEST_RUN=proc-self";
    let (name, value) = marker.split_once('=').unwrap();
    let (secret_name, secret_value) = SECRET.split_once('=').unwrap();
    let mut cmd = command(&dir.path().join("state-proc"));
    cmd.env(name, value)
        .env(secret_name, secret_value)
        .env("COORDINATOR_IPFS_MIRROR", "/proc/self");
    let svc = Service::start(cmd);
    for file in ["pagemap", "environ", "mem"] {
        let (view, took) = submit(&svc, &json!({"task_id": file, "wasm_cid": file}));
        assert_eq!(view["state"], "failed", "{view}");
        assert!(took < Duration::from_secs(2), "{file} took {took:?}");
        assert_no_secret("the API's task view", &view.to_string());
        eprintln!(
            "/proc/self/{file}: {} in {took:?}",
            view["result"]["error"]["kind"]
        );
    }
    let rss = peak_rss_kib(marker);
    eprintln!("/proc/self as the mirror: peak RSS {rss} KiB");
    assert!(rss < 200 << 10, "peak RSS {rss} KiB");
    assert_no_secret("the service log", &svc.log.lock().unwrap());
    still_serves(&svc, false);
}

/// How many log lines hold `event`, and the sum of their `field=N`.
fn logged_sum(log: &str, event: &str, field: &str) -> (u64, u64) {
    let prefix = format!(" {field}=");
    let values: Vec<u64> = log
        .lines()
        .filter(|l| l.contains(event))
        .map(|l| {
            let rest = l.split(&prefix).nth(1).expect("the field in the line");
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().expect("a count")
        })
        .collect();
    (values.len() as u64, values.iter().sum())
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn unknown_cids_rescan_by_change_without_rehashing_the_mirror() {
    const FILE: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let modules: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let tail = (0..FILE).map(|j| ((j * 31 + i) % 251) as u8);
            b"\0asm".iter().copied().chain(tail).collect()
        })
        .collect();
    for (i, bytes) in modules.iter().enumerate() {
        std::fs::write(mirror.join(format!("m{i}.wasm")), bytes).unwrap();
    }
    let marker = "MIRROR_TEST_RUN=rescan";
    let (name, value) = marker.split_once('=').unwrap();
    let mut cmd = command(&dir.path().join("state"));
    cmd.env(
        "RUST_LOG",
        "info,wasm_exec_coordinator::module::mirror=debug",
    )
    .env(name, value)
    .env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let log = || svc.log.lock().unwrap().clone();
    let (_, indexed) = logged_sum(&log(), "mirror indexed", "hashed_bytes");
    assert_eq!(
        indexed,
        4 * (FILE as u64 + 4),
        "each file hashed once at open"
    );

    let read_before = proc_figure(marker, "io", "rchar");
    let started = Instant::now();
    for i in 0..20 {
        let cid = file_cids(format!("nobody-{i}").as_bytes()).v1.to_string();
        let (view, _) = submit(
            &svc,
            &json!({"task_id": format!("unknown-{i}"), "wasm_cid": cid}),
        );
        assert_eq!(
            view["result"]["error"]["kind"], "module_unavailable",
            "{view}"
        );
    }
    let elapsed = started.elapsed();
    let read = proc_figure(marker, "io", "rchar") - read_before;
    let (rescans, rehashed) = logged_sum(&log(), "mirror rescanned", "rehashed_bytes");
    eprintln!(
        "20 unknown CIDs in {elapsed:?}: {read} bytes read, {rescans} re-scans, {rehashed} bytes re-hashed"
    );
    assert!(
        read < 1 << 20,
        "{read} bytes read: the mirror was read again"
    );
    assert_eq!(rehashed, 0, "unchanged files are not re-hashed");
    assert!(
        rescans <= elapsed.as_secs() + 1,
        "{rescans} re-scans in {elapsed:?}"
    );

    // A file added later is found once the next re-scan is due; only it is hashed.
    let add = std::fs::read(repo("host/wasm/add.wasm")).unwrap();
    std::fs::write(mirror.join("late.wasm"), &add).unwrap();
    let late = file_cids(&add).v1.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0.. {
        let task = json!({"task_id": format!("late-{i}"), "wasm_cid": late, "input": {"entry": "add", "args": [5, 7]}});
        let (view, _) = submit(&svc, &task);
        if view["state"] == "succeeded" {
            assert_eq!(view["result"]["result"], 12, "{view}");
            break;
        }
        assert_eq!(
            view["result"]["error"]["kind"], "module_unavailable",
            "{view}"
        );
        assert!(Instant::now() < deadline, "late.wasm never found");
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = proc_figure(marker, "io", "rchar") - read_before;
    let (rescans, rehashed) = logged_sum(&log(), "mirror rescanned", "rehashed_bytes");
    eprintln!(
        "late.wasm found: {read} bytes read in all, {rescans} re-scans, {rehashed} bytes re-hashed"
    );
    assert_eq!(rehashed, add.len() as u64, "only the new file is hashed");
    assert!(
        read < 1 << 20,
        "{read} bytes read: the mirror was read again"
    );

    // Bytes changed after indexing are still caught when served.
    let m0 = file_cids(&modules[0]).v1.to_string();
    let mut changed = modules[0].clone();
    changed[FILE / 2] ^= 1;
    std::fs::write(mirror.join("m0.wasm"), &changed).unwrap();
    let (view, _) = submit(&svc, &json!({"task_id": "changed", "wasm_cid": m0}));
    assert_eq!(view["result"]["error"]["kind"], "integrity", "{view}");
}
