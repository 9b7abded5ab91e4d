//! The gateway store against a stand-in gateway (an axum server inside the test) that can lie,
//! fail or stall: every byte must be verified against the CID before it is handed out; and over
//! HTTPS, whose certificate is checked against the same roots as the chain RPC's.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasm_exec_coordinator::module::ModuleStore;
use wasm_exec_coordinator::module::gateway::{GatewayConfig, GatewayStore};
use wasm_exec_ipfs::file_cids;
use wasm_exec_task::ErrorKind;
use wasm_exec_test_peers::TestCa;

/// One scripted answer of the stand-in gateway.
#[derive(Clone)]
enum Answer {
    Plain(Vec<u8>),
    Car(Vec<u8>),
    Status(u16),
}

/// A gateway that answers every request with the next scripted answer (the last one repeats).
struct StandIn {
    base: String,
    hits: Arc<AtomicUsize>,
}

async fn stand_in(answers: Vec<Answer>) -> StandIn {
    let answers = Arc::new(Mutex::new(answers));
    let hits = Arc::new(AtomicUsize::new(0));
    let (a, h) = (answers.clone(), hits.clone());
    let app = Router::new().route(
        "/ipfs/{cid}",
        get(move || {
            let (a, h) = (a.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let mut answers = a.lock().expect("answers");
                let answer = if answers.len() > 1 {
                    answers.remove(0)
                } else {
                    answers[0].clone()
                };
                match answer {
                    Answer::Plain(bytes) => bytes.into_response(),
                    Answer::Car(bytes) => {
                        ([(header::CONTENT_TYPE, "application/vnd.ipld.car")], bytes)
                            .into_response()
                    }
                    Answer::Status(code) => {
                        StatusCode::from_u16(code).expect("status").into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/ipfs", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .map(|_: ()| Response::new(()))
    });
    StandIn { base, hits }
}

fn store(endpoint: &str, cache: Option<&Path>) -> GatewayStore {
    GatewayStore::new(GatewayConfig {
        endpoint: endpoint.to_owned(),
        max_bytes: 1 << 20,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        retries: 2,
        backoff: Duration::from_millis(10),
        cache_dir: cache.map(Path::to_path_buf),
    })
    .expect("gateway store")
}

fn fib() -> (Vec<u8>, String) {
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/wasm/fib.wasm"))
            .expect("fib.wasm");
    let cid = file_cids(&bytes).v1.to_string();
    (bytes, cid)
}

#[tokio::test]
async fn plain_bytes_are_verified_by_recomputing_the_cid() {
    let (bytes, cid) = fib();
    let gw = stand_in(vec![Answer::Plain(bytes.clone())]).await;
    assert_eq!(*store(&gw.base, None).fetch(&cid).await.unwrap(), bytes);
    let v0 = file_cids(&bytes).v0.to_string();
    assert_eq!(*store(&gw.base, None).fetch(&v0).await.unwrap(), bytes);
}

#[tokio::test]
async fn tampered_bytes_are_an_integrity_error() {
    let (mut bytes, cid) = fib();
    bytes[10] ^= 1;
    let gw = stand_in(vec![Answer::Plain(bytes)]).await;
    let err = store(&gw.base, None).fetch(&cid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains(&cid), "{err}");
    assert_eq!(gw.hits.load(Ordering::SeqCst), 1, "a lie is not retried");
}

/// A real `jsipfs dag export` of a 12,345-byte file in 64-byte chunks, and its CID (see
/// testdata/ipfs/README.md).
fn car_fixture() -> (Vec<u8>, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ipfs");
    let cid = "bafybeigbz7g5prsjc2h77odar6gld3ugyisoawtqrs3rp3ziatpc4qt66u".to_owned();
    (
        std::fs::read(dir.join("xorshift-12345-chunk64-v1.car")).expect("CAR fixture"),
        cid,
    )
}

#[tokio::test]
async fn trustless_car_responses_are_verified_block_by_block() {
    let (car, cid) = car_fixture();
    // The fixture's file is random bytes, not Wasm: verified block by block (a mismatch would be
    // `integrity`), then refused as no module, naming the CID and not quoting the bytes.
    let gw = stand_in(vec![Answer::Car(car.clone())]).await;
    let err = store(&gw.base, None).fetch(&cid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadModule, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&cid) && message.contains("no \\0asm magic"),
        "{message}"
    );
    assert!(message.len() < 200, "{message}");
    let mut tampered = car;
    let last = tampered.len() - 3;
    tampered[last] ^= 0x40;
    let gw = stand_in(vec![Answer::Car(tampered)]).await;
    let err = store(&gw.base, None).fetch(&cid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn server_errors_are_retried_and_not_found_is_not() {
    let (bytes, cid) = fib();
    let gw = stand_in(vec![
        Answer::Status(503),
        Answer::Status(500),
        Answer::Plain(bytes.clone()),
    ])
    .await;
    assert_eq!(*store(&gw.base, None).fetch(&cid).await.unwrap(), bytes);
    assert_eq!(gw.hits.load(Ordering::SeqCst), 3);

    let gw = stand_in(vec![Answer::Status(404)]).await;
    let err = store(&gw.base, None).fetch(&cid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleUnavailable);
    assert_eq!(gw.hits.load(Ordering::SeqCst), 1, "4xx is not retried");

    let gw = stand_in(vec![Answer::Status(500)]).await;
    let err = store(&gw.base, None).fetch(&cid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleUnavailable);
    assert_eq!(gw.hits.load(Ordering::SeqCst), 3, "1 try + 2 retries");
    assert!(err.to_string().contains("3 attempts"), "{err}");
}

#[tokio::test]
async fn a_gateway_that_is_down_is_module_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, cid) = fib();
    let err = store(&format!("http://127.0.0.1:{port}/ipfs"), None)
        .fetch(&cid)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleUnavailable);
    assert!(
        err.to_string().contains("COORDINATOR_IPFS_ENDPOINT"),
        "{err}"
    );
}

#[tokio::test]
async fn oversize_modules_are_refused() {
    let big = vec![7u8; (1 << 20) + 10];
    let cid = file_cids(&big).v1.to_string();
    let gw = stand_in(vec![Answer::Plain(big)]).await;
    let err = store(&gw.base, None).fetch(&cid).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModuleTooLarge, "{err}");
}

#[tokio::test]
async fn verified_modules_are_cached_on_disk_and_rechecked() {
    let (bytes, cid) = fib();
    let cache = tempfile::tempdir().unwrap();
    let gw = stand_in(vec![Answer::Plain(bytes.clone())]).await;
    let s = store(&gw.base, Some(cache.path()));
    s.fetch(&cid).await.unwrap();
    s.fetch(&cid).await.unwrap();
    assert_eq!(
        gw.hits.load(Ordering::SeqCst),
        1,
        "second fetch from the disk cache"
    );
    std::fs::write(cache.path().join(&cid), b"corrupted").unwrap();
    assert_eq!(*s.fetch(&cid).await.unwrap(), bytes);
    assert_eq!(
        gw.hits.load(Ordering::SeqCst),
        2,
        "a corrupt cache entry is fetched again"
    );
}

#[tokio::test]
async fn names_are_not_cids_for_a_gateway() {
    let gw = stand_in(vec![Answer::Status(200)]).await;
    let err = store(&gw.base, None).fetch("fib.wasm").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
}

/// `coordinator --once` over one `fib(12)` task named `task` whose module `cid` comes from the
/// gateway at `endpoint` only (no retries), with `env` added to an empty environment.
async fn run_once(endpoint: &str, task: &str, cid: &str, env: &[(&str, &Path)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let tasks = serde_json::json!([{"task_id": task, "wasm_cid": cid, "input": {"entry": "fib", "args": [12]}}]);
    std::fs::write(dir.path().join("tasks.json"), tasks.to_string()).expect("tasks file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.env_clear()
        .arg("--once")
        .env("COORDINATOR_IPFS_ENDPOINT", endpoint)
        .env("COORDINATOR_IPFS_RETRIES", "0")
        .env("COORDINATOR_TASKS_FILE", dir.path().join("tasks.json"))
        .env("COORDINATOR_STATE_DIR", dir.path().join("state"))
        .env("COORDINATOR_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run coordinator"))
        .await
        .expect("the blocking task");
    drop(dir);
    out
}

/// The `--once` table's line for `task`, or the whole output if there is none.
fn row(out: &Output, task: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(task))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no row for {task}: {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_never_runs_a_module_a_tampered_gateway_sent() {
    let (mut bytes, cid) = fib();
    bytes[20] ^= 0x10;
    let gw = stand_in(vec![Answer::Plain(bytes)]).await;
    let out = run_once(&gw.base, "tampered", &cid, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        row(&out, "tampered").contains("failed (integrity)"),
        "{out:?}"
    );
    assert!(!stderr.contains("module ready"), "nothing ran: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gateway_behind_a_private_ca_is_trusted_only_through_ssl_cert_file() {
    let (bytes, cid) = fib();
    let gw = stand_in(vec![Answer::Plain(bytes)]).await;
    let ca = tokio::task::spawn_blocking(TestCa::new).await.unwrap();
    let proxy = ca.proxy(gw.base.trim_end_matches("/ipfs"));
    let endpoint = format!("https://127.0.0.1:{}/ipfs", proxy.port);

    let untrusted = run_once(&endpoint, "untrusted", &cid, &[]).await;
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");
    assert!(
        row(&untrusted, "untrusted").contains("failed (module_unavailable)"),
        "{untrusted:?}"
    );
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert_eq!(gw.hits.load(Ordering::SeqCst), 0, "no request got through");

    let ca_file = ca.ca_file();
    let trusted = run_once(&endpoint, "trusted", &cid, &[("SSL_CERT_FILE", &ca_file)]).await;
    assert_eq!(trusted.status.code(), Some(0), "{trusted:?}");
    let cols: Vec<String> = row(&trusted, "trusted")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // TASK ENTRY STATE RESULT TIME
    assert_eq!(cols[2..4], ["succeeded", "144"], "{cols:?}");
    assert_eq!(gw.hits.load(Ordering::SeqCst), 1);
}
