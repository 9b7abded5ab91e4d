//! The HTTP edge and the log under hostile clients, through the real binary: idle half-sent
//! requests against a 1,024-descriptor limit, descriptors exhausted while tasks wait, a logged
//! value that carries a forged log line. Each test also checks the peak RSS, the health
//! endpoints and a normal task afterwards.

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{PRLIMIT, Service, command, command_with_nofile, get, post, wait_finished};

/// The request head a slowloris client starts and never finishes.
const HALF_SENT: &[u8] = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\n";

/// Peak RSS allowed to the coordinator in these tests, in KiB: far above its ~60 MiB at rest,
/// far below what a descriptor or buffer per connection left unbounded would take.
const PEAK_RSS_KIB: u64 = 256 << 10;

/// Opens `n` connections to `base` and sends each [`HALF_SENT`]; each with the time it was sent.
fn half_sent(base: &str, n: usize) -> Vec<(TcpStream, Instant)> {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .expect("the API address");
    (0..n)
        .map(|i| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            stream.write_all(HALF_SENT).expect("sending half a request");
            (stream, Instant::now())
        })
        .collect()
}

/// Waits up to `within` for the server to close every stream (end of file or reset, after any
/// response it sends); for each, the time from its send to its close, if it closed.
fn closed_after(streams: &[(TcpStream, Instant)], within: Duration) -> Vec<Option<Duration>> {
    let mut closed = vec![None; streams.len()];
    for (stream, _) in streams {
        stream.set_nonblocking(true).expect("a non-blocking stream");
    }
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while closed.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, (stream, sent)) in streams.iter().enumerate() {
            if closed[i].is_some() {
                continue;
            }
            match (&*stream).read(&mut buf) {
                Ok(0) => closed[i] = Some(sent.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed[i] = Some(sent.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    closed
}

/// Submits `fib(n)` as task `id`.
fn submit_fib(base: &str, id: &str, n: u64) {
    let body =
        json!({"task_id": id, "wasm_cid": "fib.wasm", "input": {"entry": "fib", "args": [n]}});
    let reply = post(base, "/v1/tasks", &body.to_string(), None);
    assert_eq!(reply.status, 201, "{id}: {reply:?}");
}

/// Polls task `id` until it is finished, for up to `within`.
fn finished_within(base: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let reply = get(base, &format!("/v1/tasks/{id}"), None);
        if matches!(reply.body["state"].as_str(), Some("succeeded" | "failed")) {
            return reply.body;
        }
        assert!(Instant::now() < deadline, "{id} not finished: {reply:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Healthy, ready, within the RSS budget, and still running a normal task.
fn assert_sound(svc: &Service, what: &str) {
    assert_eq!(get(&svc.base, "/healthz", None).status, 200, "{what}");
    assert_eq!(get(&svc.base, "/readyz", None).status, 200, "{what}");
    let peak = svc.peak_rss_kib();
    eprintln!("{what}: peak RSS {} MiB", peak >> 10);
    assert!(peak < PEAK_RSS_KIB, "{what}: peak RSS {peak} KiB");
    let reply = post(&svc.base, "/v1/tasks", r#"{"wasm_cid": "add.wasm"}"#, None);
    assert_eq!(reply.status, 201, "{what}: {reply:?}");
    let id = reply.body["task_id"].as_str().expect("an id").to_owned();
    assert_eq!(
        wait_finished(&svc.base, &id)["result"]["result"],
        12,
        "{what}"
    );
}

/// Every stream was closed by the server no sooner than `timeout` after its send, and no later
/// than `rounds` times the timeout plus a margin of 1 s.
fn assert_cut_by_timeout(streams: &[(TcpStream, Instant)], timeout: Duration, rounds: u32) {
    let margin = Duration::from_secs(1);
    let closed = closed_after(streams, Duration::from_secs(30));
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} half-sent connections still open");
    let times: Vec<Duration> = closed.into_iter().flatten().collect();
    let first = times.iter().min().copied().unwrap_or_default();
    let last = times.iter().max().copied().unwrap_or_default();
    eprintln!("half-sent connections closed from {first:?} to {last:?} after their send");
    assert!(
        first >= timeout - Duration::from_millis(100),
        "closed before the timeout: {first:?}"
    );
    assert!(
        last <= rounds * (timeout + margin),
        "closed only after {last:?}"
    );
}

/// A mirror of the samples and the hostile guests under `dir`.
fn mirror_with_hostile(dir: &std::path::Path) -> std::path::PathBuf {
    let mirror = dir.join("mirror");
    std::fs::create_dir(&mirror).expect("the mirror");
    for name in [
        "host/wasm/add.wasm",
        "host/wasm/fib.wasm",
        "testdata/wasm/hostile.wasm",
    ] {
        let from = support::repo(name);
        let to = mirror.join(from.file_name().expect("a file name"));
        std::fs::copy(&from, to).expect("copying a module");
    }
    mirror
}

/// Sets the running `svc`'s descriptor limit, soft and hard, to `limit`.
fn set_nofile(svc: &Service, limit: usize) {
    let set = std::process::Command::new(PRLIMIT)
        .arg(format!("--pid={}", svc.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("running prlimit");
    assert!(set.success(), "prlimit: {set}");
}

#[test]
fn half_sent_requests_are_cut_by_the_header_timeout_and_queued_tasks_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command_with_nofile(dir.path(), 1024);
    cmd.env("COORDINATOR_HTTP_HEADER_TIMEOUT_SEC", "1")
        .env("COORDINATOR_CONCURRENCY", "2");
    let svc = Service::start(cmd);
    assert!(
        svc.logged("soft=Some(1024)", Duration::from_secs(5)),
        "{}",
        svc.log.lock().unwrap()
    );
    assert!(svc.logged("max_connections=512", Duration::from_secs(1)));
    for n in 0..20 {
        submit_fib(&svc.base, &format!("queued-{n}"), 20);
    }

    let started = Instant::now();
    let streams = half_sent(&svc.base, 1100);
    eprintln!(
        "1,100 half-sent connections open in {:?}",
        started.elapsed()
    );
    // Served while the attack holds the cap: in turn, once the header timeout frees slots.
    let healthz = Instant::now();
    assert_eq!(get(&svc.base, "/healthz", None).status, 200);
    eprintln!("/healthz under attack answered in {:?}", healthz.elapsed());
    for n in 0..10 {
        submit_fib(&svc.base, &format!("during-{n}"), 20);
    }

    // 1 s header timeout; 1,100 connections under a cap of 512 are accepted in three rounds.
    assert_cut_by_timeout(&streams, Duration::from_secs(1), 3);

    for id in (0..20)
        .map(|n| format!("queued-{n}"))
        .chain((0..10).map(|n| format!("during-{n}")))
    {
        let done = finished_within(&svc.base, &id, Duration::from_secs(30));
        assert_eq!(done["state"], "succeeded", "{id}: {done}");
        assert_eq!(done["result"]["result"], 6765, "{id}");
    }
    assert!(!svc.log.lock().unwrap().contains("Too many open files"));
    assert!(
        svc.open_fds() < 128,
        "{} descriptors still open",
        svc.open_fds()
    );
    assert_sound(&svc, "after 1,100 half-sent requests");
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: exhaust, hold through retries, release, check every task"
)]
fn tasks_wait_while_descriptors_run_out_and_run_once_they_are_back() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_with_hostile(dir.path());
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror)
        .env("COORDINATOR_HTTP_HEADER_TIMEOUT_SEC", "60");
    let svc = Service::start(cmd);
    // One slot, held by a guest that spins for 3 s: the others wait in the queue behind it.
    let slow = json!({"task_id": "slow", "wasm_cid": "hostile.wasm", "input": {"entry": "spin"}, "limits": {"timeout_sec": 3}});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &slow.to_string(), None).status,
        201
    );
    for n in 0..5 {
        submit_fib(&svc.base, &format!("waiting-{n}"), 20);
    }

    // No descriptor to spare: a limit just above those open, filled by half-sent requests.
    set_nofile(&svc, svc.open_fds() + 16);
    let exhausted = Instant::now();
    let streams = half_sent(&svc.base, 64);
    assert!(
        svc.logged(
            "accepting a connection failed; retrying",
            Duration::from_secs(10)
        ),
        "descriptors never ran out: {}",
        svc.log.lock().unwrap()
    );
    // The slow task cannot map its memory image (or the next one open its module file): both
    // are the host's shortage, retried, never a result.
    assert!(
        svc.logged(
            "the host is short of file descriptors or memory for now",
            Duration::from_secs(10)
        ),
        "{}",
        svc.log.lock().unwrap()
    );
    // Held through several retries (100 ms doubling): each a wait, none a result.
    let shortage = "the host is short of file descriptors or memory for now";
    let deadline = Instant::now() + Duration::from_secs(20);
    while svc.log.lock().unwrap().matches(shortage).count() < 5 {
        assert!(Instant::now() < deadline, "{}", svc.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = svc.log.lock().unwrap().clone();
    assert!(log.contains("(os error 24)"), "EMFILE: {log}");
    // The slow guest may reach its own time limit meanwhile (if it was running before the
    // shortage); no other task may end while descriptors are short.
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("task finished state=\"failed\"") && !l.contains("task_id=slow "))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    drop(streams);
    let released = Instant::now();
    eprintln!("descriptors exhausted for {:?}", exhausted.elapsed());

    // The retry's wait doubles from 100 ms, so after the release a task waits at most about as
    // long as descriptors were short, plus the run itself.
    let within = released.duration_since(exhausted) * 2 + Duration::from_secs(10);
    for n in 0..5 {
        let id = format!("waiting-{n}");
        let done = finished_within(&svc.base, &id, within);
        assert_eq!(done["state"], "succeeded", "{id}: {done}");
        assert_eq!(done["result"]["result"], 6765, "{id}");
    }
    eprintln!(
        "every waiting task done {:?} after the release",
        released.elapsed()
    );
    let slow = finished_within(&svc.base, "slow", within);
    assert_eq!(slow["result"]["error"]["kind"], "timeout", "{slow}");
    assert_sound(&svc, "after descriptors ran out");
}

#[test]
fn a_forged_log_line_in_a_logged_value_is_escaped() {
    // The API and the intake check refuse control characters in ids and CIDs; a value logged
    // from elsewhere (here the mirror's path, quoted in a task's error too) must not forge lines.
    let dir = tempfile::tempdir().unwrap();
    let forged = "2026-01-01T00:00:00.000000Z  INFO forged: task finished state=\"succeeded\"";
    let parent = dir.path().join(format!("m\n{forged}"));
    std::fs::create_dir(&parent).unwrap();
    let mirror = mirror_with_hostile(&parent);
    let mut cmd = command(&dir.path().join("state"));
    cmd.env("COORDINATOR_IPFS_MIRROR", &mirror);
    let svc = Service::start(cmd);
    let started = Instant::now();
    let missing = json!({"task_id": "missing", "wasm_cid": "nope.wasm"});
    assert_eq!(
        post(&svc.base, "/v1/tasks", &missing.to_string(), None).status,
        201
    );
    submit_fib(&svc.base, "plain", 12);
    let missing = finished_within(&svc.base, "missing", Duration::from_secs(10));
    assert_eq!(
        missing["result"]["error"]["kind"], "module_unavailable",
        "{missing}"
    );
    let plain = finished_within(&svc.base, "plain", Duration::from_secs(10));
    assert_eq!(plain["result"]["result"], 144);
    eprintln!("both tasks finished in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(svc.logged("m\\n2026-01-01T00:00:00", Duration::from_secs(5)));
    let log = svc.log.lock().unwrap().clone();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a forged line in the log:\n{log}"
    );
    assert_sound(&svc, "after a forged value in the log");
}

/// Sends a request head announcing a 100-byte JSON body, then `sent` bytes of it.
fn partial_body(base: &str, sent: usize) -> TcpStream {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .expect("the API address");
    let mut stream = TcpStream::connect(addr).expect("connecting");
    let head = "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).expect("sending the head");
    stream
        .write_all(&vec![b' '; sent])
        .expect("sending part of the body");
    stream
}

/// Reads `stream` to its end (at most `within`): what the server sent, and when it closed.
fn read_to_close(mut stream: TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(within))
        .expect("a read timeout");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    (
        String::from_utf8_lossy(&reply).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_trickled_body_is_refused_at_the_body_timeout_and_a_stalled_one_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("COORDINATOR_HTTP_BODY_TIMEOUT_SEC", "2")
        .env("COORDINATOR_HTTP_IDLE_TIMEOUT_SEC", "1");
    let svc = Service::start(cmd);
    let margin = Duration::from_secs(1);

    // One byte every 300 ms keeps the connection busy but the body late.
    let mut trickle = partial_body(&svc.base, 0);
    let started = Instant::now();
    let mut writer = trickle.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    trickle
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = vec![0u8; 4096];
    let n = trickle.read(&mut reply).unwrap_or(0);
    let answered = started.elapsed();
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    eprintln!("trickled body answered after {answered:?}: {reply}");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("COORDINATOR_HTTP_BODY_TIMEOUT_SEC"),
        "{reply}"
    );
    assert!(answered >= Duration::from_secs(2) && answered <= Duration::from_secs(2) + margin);
    drop(trickle);
    dripper.join().unwrap();

    // Ten bytes of the body, then silence: closed at the idle timeout, before the body's.
    let (reply, closed) = read_to_close(partial_body(&svc.base, 10), Duration::from_secs(10));
    eprintln!("stalled body closed after {closed:?}: {reply:?}");
    assert!(closed >= Duration::from_secs(1) && closed <= Duration::from_secs(1) + margin);
    assert_sound(&svc, "after slow bodies");
}
