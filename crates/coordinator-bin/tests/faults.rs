//! Faults a real disk and a real process meet, through the real binary: a full state disk, a
//! damaged journal. An acknowledged task is never lost; a refused one is never run.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Service, command, get, post};
use wasm_exec_test_peers::Tmpfs;

/// A submission of about 20 KB (the input carries padding), under a chosen id.
fn padded(id: &str) -> String {
    let pad = "x".repeat(20_000);
    format!(
        r#"{{"task_id": "{id}", "wasm_cid": "fib.wasm", "input": {{"entry": "fib", "args": [12], "pad": "{pad}"}}}}"#
    )
}

#[test]
fn a_full_state_disk_is_refused_with_503_and_writes_come_back_with_the_space() {
    let Some(disk) = Tmpfs::mount("3m") else {
        return;
    };
    let mut cmd = command(disk.path());
    cmd.env("COORDINATOR_STATE_LOW_WATERMARK_MB", "1");
    let svc = Service::start(cmd);
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    for n in 0..400 {
        let id = format!("t{n}");
        let reply = post(&svc.base, "/v1/tasks", &padded(&id), None);
        match reply.status {
            201 => taken.push(id),
            503 => {
                let text = reply.body.to_string();
                assert!(text.contains("retry"), "{reply:?}");
                refused.push(id);
            }
            other => panic!("submission {n} answered {other}, not 201 or 503: {reply:?}"),
        }
    }
    assert!(
        !taken.is_empty() && !refused.is_empty(),
        "{} taken, {} refused",
        taken.len(),
        refused.len()
    );

    disk.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = loop {
        let reply = post(&svc.base, "/v1/tasks", &padded("after"), None);
        if reply.status == 201 {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not come back with the space: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(again.body["task_id"], "after");
    assert_eq!(get(&svc.base, "/readyz", None).status, 200);
    for id in taken.iter().chain(std::iter::once(&"after".to_owned())) {
        let task = support::wait_finished(&svc.base, id);
        assert_eq!(task["result"]["result"], 144, "{id}: {task}");
    }
    // A refused submission may have landed (the answer says so): it must then run once, like any
    // task; most were refused before any write, and those are unknown.
    let unknown = refused
        .iter()
        .filter(|id| get(&svc.base, &format!("/v1/tasks/{id}"), None).status == 404)
        .count();
    eprintln!(
        "{unknown} of {} refused submissions unknown after the space came back",
        refused.len()
    );
    assert!(unknown > 0, "every refused submission was kept anyway");
}

/// Submits until the journal holds records after the last durable commit, then SIGKILLs.
fn kill_with_records_in_the_journal(state: &Path) -> usize {
    for _ in 0..10 {
        let svc = Service::start(command(state));
        let mut ids = 0;
        for n in 0..60 {
            let body = format!(r#"{{"task_id": "k{n}", "wasm_cid": "fib.wasm", "input": [12]}}"#);
            if post(&svc.base, "/v1/tasks", &body, None).status == 201 {
                ids += 1;
            }
        }
        assert_eq!(svc.signal_and_wait("KILL"), None);
        let journal = std::fs::metadata(state.join("journal.log")).map_or(0, |m| m.len());
        if journal > 2_000 {
            return ids;
        }
    }
    panic!("the journal was checkpointed before every kill in ten tries");
}

#[test]
fn a_journal_damaged_mid_file_refuses_the_start_and_state_salvage_keeps_every_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    kill_with_records_in_the_journal(dir.path());
    let journal = dir.path().join("journal.log");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[20] ^= 0x55; // inside the first record's batch: intact records follow it
    std::fs::write(&journal, &bytes).unwrap();

    let out = command(dir.path()).arg("--once").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("salvage"),
        "the refusal says how to recover: {stderr}"
    );
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        bytes,
        "the evidence is left as found"
    );

    let check = command(dir.path())
        .args(["state", "check"])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let salvage = command(dir.path())
        .args(["state", "salvage"])
        .output()
        .unwrap();
    assert_eq!(salvage.status.code(), Some(0), "{salvage:?}");
    let report = String::from_utf8_lossy(&salvage.stdout);
    assert!(report.contains("intact records"), "{report}");

    let svc = Service::start(command(dir.path()));
    let listed = get(&svc.base, "/v1/tasks?limit=1000", None);
    assert_eq!(listed.status, 200, "{listed:?}");
    let kept = listed.body["tasks"].as_array().map_or(0, Vec::len);
    eprintln!("{kept} tasks kept by salvage");
    assert!(kept > 0, "salvage kept nothing: {listed:?}");
    let first: &Value = &listed.body["tasks"][0];
    assert!(
        first["task_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('k'))
    );
}

#[test]
fn reads_while_the_disk_is_full_answer_200_or_503_never_500() {
    let Some(disk) = Tmpfs::mount("16m") else {
        return;
    };
    let mut cmd = command(disk.path());
    // No watermark: the disk fills for real and writes fail with ENOSPC.
    cmd.env("COORDINATOR_STATE_LOW_WATERMARK_MB", "0");
    let svc = Service::start(cmd);
    assert_eq!(
        post(&svc.base, "/v1/tasks", &padded("before"), None).status,
        201
    );
    support::wait_finished(&svc.base, "before");
    let ballast = disk.fill();
    let mut failed_writes = 0;
    for n in 0..50 {
        let reply = post(&svc.base, "/v1/tasks", &padded(&format!("full-{n}")), None);
        assert!(matches!(reply.status, 201 | 503), "{reply:?}");
        failed_writes += usize::from(reply.status == 503);
        for path in ["/v1/tasks/before", "/v1/tasks?limit=1", "/metrics"] {
            let read = get(&svc.base, path, None);
            assert!(
                matches!(read.status, 200 | 503),
                "{path} answered {} while the disk is full: {read:?}",
                read.status
            );
        }
    }
    assert!(failed_writes > 0, "the disk never filled");
    std::fs::remove_file(ballast).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&svc.base, "/v1/tasks/before", None).status != 200
        || get(&svc.base, "/readyz", None).status != 200
    {
        assert!(Instant::now() < deadline, "the store did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}
