//! Module upload end to end: `POST /v1/modules` then a task naming the returned CID, against the
//! real binary with an empty mirror and no IPFS, so the upload is the only place it can come from.

mod support;

use serde_json::{Value, json};
use support::{Service, command, get, post, repo, wait_finished};
use wasm_exec_ipfs::file_cids;

/// `POST base/v1/modules` with `bytes` declared as `content_type`: status and JSON body.
fn upload(base: &str, bytes: &[u8], content_type: &str) -> (u16, Value) {
    upload_as(base, bytes, content_type, None)
}

/// [`upload`] with a bearer token, if given.
fn upload_as(base: &str, bytes: &[u8], content_type: &str, token: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(format!("{base}/v1/modules"))
        .header("Content-Type", content_type);
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let mut resp = req.send(bytes).expect("HTTP request");
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        resp.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn an_uploaded_module_runs_by_its_cid_with_no_mirror_or_ipfs() {
    let (dir, empty) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_IPFS_MIRROR", empty.path());
    let svc = Service::start(cmd);
    let fib = std::fs::read(repo("host/wasm/fib.wasm")).unwrap();
    let cids = file_cids(&fib);

    let (status, info) = upload(&svc.base, &fib, "application/wasm");
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["cid_v1"], cids.v1.to_string());
    assert_eq!(info["cid_v0"], cids.v0.to_string());
    assert_eq!(info["size_bytes"], fib.len());
    let signatures: Vec<&str> = info["exports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["signature"].as_str())
        .collect();
    assert!(signatures.contains(&"fib(i64) -> i64"), "{info}");

    let (status, again) = upload(&svc.base, &fib, "application/wasm");
    assert_eq!(
        (status, &again),
        (200, &info),
        "a second upload is the same module"
    );
    let by_v0 = get(&svc.base, &format!("/v1/modules/{}", cids.v0), None);
    assert_eq!((by_v0.status, &by_v0.body), (200, &info));

    let task = json!({"task_id": "up-1", "wasm_cid": cids.v1.to_string(), "input": {"entry": "fib", "args": [12]}});
    let r = post(&svc.base, "/v1/tasks", &task.to_string(), None);
    assert_eq!(r.status, 201, "{r:?}");
    let done = wait_finished(&svc.base, "up-1");
    assert_eq!(done["result"]["result"], 144, "{done}");

    // Nothing else could have served it: a module that was not uploaded is not found.
    let other =
        json!({"task_id": "up-2", "wasm_cid": file_cids(b"\0asm\x01\0\0\0").v1.to_string()});
    post(&svc.base, "/v1/tasks", &other.to_string(), None);
    let missing = wait_finished(&svc.base, "up-2");
    assert_eq!(
        missing["result"]["error"]["kind"], "module_unavailable",
        "{missing}"
    );
}

#[test]
fn uploads_that_are_not_modules_are_refused_with_the_reason() {
    const TOKEN: &str = "s3cret";
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_MAX_MODULE_MB", "1")
        .env("COORDINATOR_MAX_BODY_KB", "1")
        .env("COORDINATOR_API_TOKEN", TOKEN);
    let svc = Service::start(cmd);
    let up =
        |bytes: &[u8], content_type: &str| upload_as(&svc.base, bytes, content_type, Some(TOKEN));
    let (status, body) = up(b"#!/bin/sh\nrm -rf /\n", "application/wasm");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "bad_module");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither binary Wasm"),
        "{body}"
    );
    let invalid = br#"(module (func (export "f") (result i32) i64.const 1))"#;
    let (status, body) = up(invalid, "text/wat");
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (400, Some("bad_module")),
        "{body}"
    );
    assert_eq!(
        announced_upload_status(&svc.base, TOKEN, (1 << 20) + 1),
        413
    );
    let (status, _) = up(b"\0asm\x01\0\0\0", "text/plain");
    assert_eq!(
        status, 415,
        "a type a browser sends cross-site without asking is refused"
    );
    let fib = std::fs::read(repo("host/wasm/fib.wasm")).unwrap();
    let (status, _) = upload(&svc.base, &fib, "application/wasm");
    assert_eq!(status, 401, "uploads need the token");

    // 4 KiB of data: over the JSON body cap (1 KiB), well under the module cap.
    let wat = format!(
        r#"(module (memory 1) (data (i32.const 0) "{}") (func (export "seven") (result i64) i64.const 7))"#,
        "x".repeat(4096)
    );
    let (status, info) = up(wat.as_bytes(), "text/wat");
    assert_eq!(status, 201, "{info}");
    assert!(info["size_bytes"].as_u64().unwrap() > 4096, "{info}");
    assert_eq!(info["exports"][0]["signature"], "seven() -> i64");
    assert_eq!(
        get(&svc.base, "/v1/modules/bafkreiaaaa", Some(TOKEN)).status,
        404
    );
}

/// The status answered to an upload announcing `length` bytes, before any of them is sent.
fn announced_upload_status(base: &str, token: &str, length: usize) -> u16 {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /v1/modules HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/wasm\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
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
