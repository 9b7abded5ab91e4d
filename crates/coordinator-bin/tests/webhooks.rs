//! Webhooks end to end, against the real binary and a real HTTP receiver on a local port: a
//! delivery is retried through failed answers and a receiver that is killed and started again,
//! arrives signed and once; a pending delivery survives a coordinator SIGKILL, and a delivered
//! one is not posted again after a restart.

mod support;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Service, command, get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-test-secret-0123456789abcdef";

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Hit {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A webhook receiver on `127.0.0.1:port`: answers each request with the next status of its
/// script (200 once the script is used up) and records it. Dropping it closes the port.
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, script: &[u16]) -> (Receiver, u16) {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (bound, port_rx) = std::sync::mpsc::channel();
        let recorded = hits.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4().expect("the receiver's socket");
                // The port is bound again after a stop, while its old connections linger.
                socket.set_reuseaddr(true).expect("the receiver's socket");
                socket
                    .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                    .expect("the receiver's socket");
                let listener = socket.listen(64).expect("the receiver's socket");
                bound
                    .send(listener.local_addr().expect("the receiver's socket").port())
                    .expect("the test waits for the port");
                let serving = async {
                    loop {
                        let (stream, _) = listener.accept().await.expect("the receiver's socket");
                        let (hits, script) = (recorded.clone(), script.clone());
                        tokio::spawn(answer(stream, hits, script));
                    }
                };
                tokio::select! {
                    () = serving => {}
                    _ = stopped => {}
                }
            });
        });
        let port = port_rx.recv().expect("the receiver's port");
        let receiver = Receiver {
            hits,
            stop: Some(stop),
            thread: Some(thread),
        };
        (receiver, port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("not poisoned").clone()
    }

    /// Waits until it took `n` requests (10 s at most).
    fn until_hits(&self, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(Instant::now() < deadline, "{} hits, want {n}", hits.len());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request (head, then `Content-Length` bytes), records it, answers the next status.
async fn answer(
    mut stream: tokio::net::TcpStream,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        bytes.extend_from_slice(&buf[..n]);
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let body = bytes[head_end..head_end + length].to_vec();
    let status = script
        .lock()
        .expect("not poisoned")
        .pop_front()
        .unwrap_or(200);
    hits.lock()
        .expect("not poisoned")
        .push(Hit { headers, body });
    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
    // The client closes first (Connection: close), so the port's lingering sockets are its.
    let _ = stream.read(&mut buf).await;
}

/// A port nothing listens on (bound once, then closed).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its port").port()
}

fn coordinator(dir: &std::path::Path) -> Service {
    let mut cmd = command(dir);
    cmd.env("COORDINATOR_WEBHOOK_SECRET", SECRET)
        .env("COORDINATOR_WEBHOOK_RETRY_FIRST_MS", "100")
        .env("COORDINATOR_WEBHOOK_RETRY_MAX_SEC", "1");
    Service::start(cmd)
}

fn submit_fib(base: &str, id: &str, port: u16) {
    let body = json!({
        "task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]},
        "callback_url": format!("http://127.0.0.1:{port}/hook"),
    });
    let r = post(base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["callback"]["state"], "pending", "{r:?}");
}

/// Polls the task until its callback satisfies `done` (10 s at most); returns the task.
fn until_callback(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(base, &format!("/v1/tasks/{id}"), None);
        if done(&r.body["callback"]) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "task {id}: {r:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks a hit's signature header against the body under [`SECRET`]; the body as JSON.
fn verified(hit: &Hit) -> Value {
    verified_with(hit, SECRET)
}

/// Checks a hit's signature header against the body under `key`; the body as JSON.
fn verified_with(hit: &Hit, key: &str) -> Value {
    let header = &hit.headers["x-wasm-exec-signature"];
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("signature header {header}"));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("an HMAC key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.body);
    mac.verify_slice(&hex::decode(v1).expect("hex"))
        .expect("the signature verifies with the secret");
    let sent: u64 = t.parse().expect("a signing time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(now.abs_diff(sent) < 60, "signed at {sent}, now {now}");
    serde_json::from_slice(&hit.body).expect("a JSON body")
}

#[test]
fn a_delivery_is_retried_through_failures_and_a_killed_receiver_then_arrives_signed_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = coordinator(dir.path());
    let (receiver, port) = Receiver::start(0, &[500, 503]);
    submit_fib(&svc.base, "hooked", port);
    let failed = receiver.until_hits(2);
    drop(receiver); // killed mid-way: the port is closed
    let task = until_callback(&svc.base, "hooked", |c| c["attempts"].as_u64() >= Some(4));
    let callback = &task["callback"];
    assert_eq!(callback["state"], "pending", "{task}");
    let error = callback["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("error sending request") || error.contains("onnect"),
        "a refused connection: {error}"
    );

    let (receiver, _) = Receiver::start(port, &[]);
    let task = until_callback(&svc.base, "hooked", |c| c["state"] == "delivered");
    let delivered = receiver.hits();
    assert_eq!(delivered.len(), 1, "delivered once: {delivered:?}");
    let attempts = task["callback"]["attempts"].as_u64().unwrap();
    assert!(attempts >= 5, "2 answered 5xx, 2+ refused, 1 taken: {task}");

    let keys: Vec<&String> = failed
        .iter()
        .chain(&delivered)
        .map(|h| &h.headers["idempotency-key"])
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "one key: {keys:?}");
    for hit in failed.iter().chain(&delivered) {
        let body = verified(hit);
        assert_eq!(body["task_id"], "hooked");
        assert_eq!(body["state"], "succeeded");
        assert_eq!(body["result"]["result"], 144, "{body}");
        assert!(body["result_hash"].is_string(), "{body}");
    }
}

#[test]
fn a_callback_url_is_refused_unless_http_or_https_and_unless_webhooks_are_on() {
    let dir = tempfile::tempdir().unwrap();
    let svc = coordinator(dir.path());
    let task = |url: &str| {
        json!({"wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [1]}, "callback_url": url})
            .to_string()
    };
    let r = post(&svc.base, "/v1/tasks", &task("file:///etc/passwd"), None);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["error"]["field"], "callback_url", "{r:?}");
    let long = format!("https://example.com/{}", "a".repeat(2048));
    let r = post(&svc.base, "/v1/tasks", &task(&long), None);
    assert_eq!(r.status, 400, "{r:?}");
    drop(svc);

    let off_dir = tempfile::tempdir().unwrap();
    let off = Service::start(command(off_dir.path()));
    let r = post(&off.base, "/v1/tasks", &task("http://127.0.0.1:9/x"), None);
    assert_eq!(r.status, 400, "{r:?}");
    let message = r.body.to_string();
    assert!(message.contains("COORDINATOR_WEBHOOK_SECRET"), "{message}");
}

#[test]
fn a_pending_delivery_survives_a_sigkill_and_a_delivered_one_is_not_posted_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = coordinator(dir.path());
    submit_fib(&first.base, "before-kill", port);
    until_callback(&first.base, "before-kill", |c| {
        c["attempts"].as_u64() >= Some(1)
    });
    first.kill_and_drain();

    let (receiver, _) = Receiver::start(port, &[]);
    let second = coordinator(dir.path());
    let task = until_callback(&second.base, "before-kill", |c| c["state"] == "delivered");
    assert!(
        task["callback"]["attempts"].as_u64() >= Some(2),
        "the attempts before the kill were kept: {task}"
    );
    assert_eq!(receiver.until_hits(1).len(), 1);
    second.kill_and_drain();

    let third = coordinator(dir.path());
    submit_fib(&third.base, "after-restart", port);
    until_callback(&third.base, "after-restart", |c| c["state"] == "delivered");
    let hits = receiver.hits();
    let ids: Vec<Value> = hits
        .iter()
        .map(|h| verified(h)["task_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [json!("before-kill"), json!("after-restart")],
        "the delivered one was not posted again"
    );
}

#[test]
fn a_tenants_webhook_is_signed_with_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["token", "new", "t-ci"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, entry) = text.split_once('\n').unwrap();
    let entry: Value = serde_json::from_str(entry.trim()).unwrap();
    let tenant_key = "the-tenants-own-webhook-key";
    let file = json!({"tenants": [{"tenant": "t", "concurrency": 1,
        "webhook_secret": tenant_key, "tokens": [entry]}]});
    let tokens = dir.path().join("tokens.json");
    std::fs::write(&tokens, file.to_string()).unwrap();
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_TOKENS_FILE", &tokens)
        .env("COORDINATOR_API_TOKEN", "default-caller");
    let svc = Service::start(cmd);
    let (receiver, port) = Receiver::start(0, &[]);
    let body = |id: &str| {
        json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [12]},
               "callback_url": format!("http://127.0.0.1:{port}/hook")})
        .to_string()
    };
    let r = post(&svc.base, "/v1/tasks", &body("t-1"), Some(token));
    assert_eq!(r.status, 201, "{r:?}");
    let r = post(&svc.base, "/v1/tasks", &body("d-1"), Some("default-caller"));
    assert_eq!(r.status, 400, "no key for the default caller: {r:?}");
    let hit = receiver.until_hits(1).remove(0);
    let sent = verified_with(&hit, tenant_key);
    assert_eq!(
        (sent["task_id"].as_str(), sent["tenant"].as_str()),
        (Some("t-1"), Some("t"))
    );
}
