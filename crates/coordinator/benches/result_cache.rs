//! The result cache's answer to a repeated task, inside the coordinator: `CachedBackend::run`
//! for a task identical to a finished one, next to the local backend's own warm run of the same
//! task in the same process. A module named by a mirror file name is hashed for the key (so its
//! size matters); one named by CID is keyed by the CID the store verified.
//!
//! Run: `cargo bench -p wasm-exec-coordinator --bench result_cache` (env `ROUNDS`, default
//! 20000 lookups per module). Prints a markdown table of p50 and p99 in microseconds.

use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasm_exec_coordinator::backend::Backend;
use wasm_exec_coordinator::backend::cached::CachedBackend;
use wasm_exec_coordinator::backend::local::LocalBackend;
use wasm_exec_coordinator::metrics::Metrics;
use wasm_exec_ipfs::cid::file_cids;
use wasm_exec_task::{IntakeRules, TaskSpec};

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    println!(
        "| module | bytes | named by | cache hit p50 µs | p99 µs | warm run p50 µs (local backend) |"
    );
    println!("|---|---:|---|---:|---:|---:|");
    for (file, by_cid) in [
        ("host/wasm/fib.wasm", false),
        ("testdata/wasm/go_fib.wasm", false),
        ("testdata/wasm/go_fib.wasm", true),
    ] {
        let module = Arc::new(std::fs::read(root.join(file)).expect("the module"));
        let name = if by_cid {
            file_cids(&module).v1.to_string()
        } else {
            "module.wasm".to_owned()
        };
        let spec = TaskSpec::new("bench", &name, json!({"entry": "fib", "args": [12]}));
        let task = spec.check(&IntakeRules::default()).expect("a valid task");
        let metrics = Arc::new(Metrics::default());
        let local: Arc<dyn Backend> = Arc::new(
            LocalBackend::new(None, metrics.clone(), 1, None)
                .unwrap_or_else(|e| panic!("a local backend: {e:#}")),
        );
        let cached = CachedBackend::new(local.clone(), 64 << 20, metrics);
        let (hits, runs) = runtime.block_on(async {
            let first = cached.run(&task, module.clone()).await;
            assert!(first.ok, "{file}: {first:?}");
            let mut hits = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let started = Instant::now();
                let again = cached.run(&task, module.clone()).await;
                hits.push(started.elapsed());
                assert_eq!(again.result, first.result);
            }
            let mut runs = Vec::new();
            for _ in 0..rounds.min(200) {
                let started = Instant::now();
                local.run(&task, module.clone()).await;
                runs.push(started.elapsed());
            }
            (hits, runs)
        });
        println!(
            "| {file} | {} | {} | {:.1} | {:.1} | {:.1} |",
            module.len(),
            if by_cid { "CID" } else { "file name" },
            micros(&hits, 0.5),
            micros(&hits, 0.99),
            micros(&runs, 0.5)
        );
    }
}

/// The `q` quantile of `samples`, in microseconds.
fn micros(samples: &[Duration], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[at].as_secs_f64() * 1e6
}
