//! Coordinator throughput and overhead, end to end over the HTTP API with the local backend.
//!
//! Starts the real `coordinator` binary (`COORDINATOR_CONCURRENCY=2`, a fresh state directory,
//! the sample mirror), then:
//! 1. overhead: tasks submitted one at a time; for each, the time from POST to its result being
//!    readable, minus the Wasm call's own `duration_ms` (so HTTP round trips are counted as
//!    overhead: an upper bound);
//! 2. throughput: `TASKS` tiny `add` tasks submitted by 64 concurrent clients; tasks/s from the
//!    first submission until the state store counts them all finished;
//! 3. resident memory of the coordinator after that run.
//!
//! Run: `cargo bench -p coordinator --bench throughput` (env `TASKS`, default 100000;
//! `RUST_LOG` for the coordinator, default `info`). Prints a markdown table.

use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const OVERHEAD_SAMPLES: usize = 300;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The median of `wasm_exec_task_overhead_seconds` from `/metrics`, in ms, interpolated within
/// its histogram bucket.
async fn overhead_p50_ms(client: &reqwest::Client, base: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("wasm_exec_task_overhead_seconds_bucket{le=\""))
        .filter_map(|l| {
            let le = l.split('"').nth(1)?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.split_whitespace().last()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let (mut low, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= total / 2.0 {
            let share = if count > below {
                (total / 2.0 - below) / (count - below)
            } else {
                0.0
            };
            let high = if le.is_finite() { le } else { low * 2.0 };
            return (low + share * (high - low)) * 1e3;
        }
        (low, below) = (le, count);
    }
    f64::NAN
}

async fn finished(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(resp) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("wasm_exec_tasks{state=\"succeeded\"}")
                || l.starts_with("wasm_exec_tasks{state=\"failed\"}")
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[allow(
    clippy::too_many_lines,
    reason = "the benchmark's steps, read top to bottom as the table they print"
)]
fn main() {
    let tasks: usize = std::env::var("TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let state = tempfile::tempdir().expect("state dir");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .env_clear()
        .env("COORDINATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("COORDINATOR_STATE_DIR", state.path())
        .env("COORDINATOR_IPFS_MIRROR", root.join("host/wasm"))
        .env(
            "COORDINATOR_TASKS_FILE",
            root.join("testdata/input/no-tasks.json"),
        )
        .env("COORDINATOR_CONCURRENCY", "2")
        .env("RUST_LOG", &log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coordinator");
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = wasm_exec_tls::http_client().expect("TLS").pool_max_idle_per_host(CLIENTS).build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "coordinator did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // 1. Overhead, one task at a time.
        let mut overheads = Vec::with_capacity(OVERHEAD_SAMPLES);
        let mut submits = Vec::with_capacity(OVERHEAD_SAMPLES);
        for i in 0..OVERHEAD_SAMPLES {
            let id = format!("seq-{i}");
            let body = json!({"task_id": id, "wasm_cid": "add.wasm", "input": [i, 1]});
            let started = Instant::now();
            client.post(format!("{base}/v1/tasks")).header("Content-Type", "application/json").body(body.to_string()).send().await.expect("submit");
            submits.push(started.elapsed().as_secs_f64() * 1e3);
            loop {
                let text = client.get(format!("{base}/v1/tasks/{id}")).send().await.expect("get").text().await.expect("body");
                let task: Value = serde_json::from_str(&text).expect("json");
                if task["reported"] == json!(true) {
                    let total = started.elapsed().as_secs_f64() * 1e3;
                    let wasm = task["result"]["duration_ms"].as_f64().unwrap_or(0.0);
                    overheads.push(total - wasm);
                    break;
                }
            }
        }
        let inside_p50 = overhead_p50_ms(&client, &base).await;
        overheads.sort_by(f64::total_cmp);
        submits.sort_by(f64::total_cmp);
        let submit_p50 = submits[submits.len() / 2];
        let pct = |p: f64| overheads[((overheads.len() as f64 - 1.0) * p) as usize];

        // 2. Throughput.
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (client, base, next) = (client.clone(), base.clone(), next.clone());
            clients.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= tasks {
                        break;
                    }
                    let body = json!({"task_id": format!("t{i:07}"), "wasm_cid": "add.wasm", "input": [i, 1]});
                    let resp = client.post(format!("{base}/v1/tasks")).header("Content-Type", "application/json").body(body.to_string()).send().await.expect("submit");
                    assert_eq!(resp.status().as_u16(), 201);
                }
            }));
        }
        for c in clients {
            c.await.expect("client");
        }
        let submitted = started.elapsed();
        let total = (tasks + OVERHEAD_SAMPLES) as u64;
        while finished(&client, &base).await < total {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed();
        let rss = rss_mib(pid);

        println!("| measure | value |");
        println!("|:---|---:|");
        println!("| coordinator log level | {log} |");
        println!("| overhead per task, p50 (POST to result readable, minus the Wasm call; {OVERHEAD_SAMPLES} sequential tasks) | {:.3} ms |", pct(0.5));
        println!("| overhead per task, p90 | {:.3} ms |", pct(0.9));
        println!("| of which the submission (POST until 201: the task is on disk), p50 | {submit_p50:.3} ms |");
        println!("| overhead measured inside the coordinator (taken to result on disk, minus the Wasm call), p50 | {inside_p50:.3} ms |");
        println!("| tasks submitted by {CLIENTS} clients | {tasks} in {:.2} s |", submitted.as_secs_f64());
        println!("| throughput, submission to all finished (COORDINATOR_CONCURRENCY=2) | {:.0} tasks/s |", tasks as f64 / elapsed.as_secs_f64());
        println!("| coordinator resident memory after {} tasks | {rss:.1} MiB |", total);
    });
    let _ = child.kill();
    let _ = child.wait();
}
