//! Chain source figures on a real anvil, with the real `coordinator` binary (local backend, the
//! sample mirror, `COORDINATOR_CONCURRENCY=2`):
//! 1. latency: anvil `--block-time 1`, `COORDINATOR_CONFIRMATIONS=2`; `LATENCY_TASKS` (default
//!    100) `fib` tasks submitted a few per block; for each, the blocks and seconds (block
//!    timestamps) from its `TaskSubmitted` block to its `TaskCompleted` block. The goal: at most
//!    one block beyond the confirmations (3 blocks here).
//! 2. throughput: anvil mining each transaction at once, `COORDINATOR_CONFIRMATIONS=0`;
//!    `BURST_TASKS` (default 1000) tasks, signed ahead, submitted in a burst from 4 requesters;
//!    tasks/s from the first submission sent until every `TaskCompleted` is on chain. Then the
//!    same burst on a fresh anvil with no coordinator (the node's own intake), and the
//!    coordinator started once they are all mined (its drain rate, from its start).
//!
//! Both run with the coordinator reaching anvil over HTTP (new blocks polled every 100 ms for
//! the latency run, 50 ms for the burst) and over a WebSocket (new blocks pushed); `TRANSPORTS`
//! (default `http,ws`) picks.
//!
//! Run: `cargo bench -p coordinator --bench chain` (needs `scripts/install-test-peers`). Prints
//! a markdown table, a column per transport.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasm_exec_chain::requester::{TaskRequest, completions, set_executor, submit_task};
use wasm_exec_chain::{Address, DynProvider, PrivateKeySigner, Registry, connect_http, deploy};
use wasm_exec_test_peers::{Anvil, KEYS};

/// The anvil keys beyond the test trio: extra requesters for the burst.
const MORE_KEYS: [&str; 2] = [
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
];
const FIB: &str = "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je";

/// The `p`-quantile of sorted `values`.
fn quantile(values: &[f64], p: f64) -> f64 {
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index.min(values.len() - 1)]
}

fn signer(key: &str) -> PrivateKeySigner {
    key.parse().expect("key")
}

struct Setup {
    anvil: Anvil,
    contract: Address,
    reader: DynProvider,
    dir: tempfile::TempDir,
}

async fn setup(anvil_args: &[&str]) -> Setup {
    let anvil = Anvil::start_with(anvil_args);
    let owner = connect_http(&anvil.url, signer(KEYS[0])).expect("owner");
    let contract = deploy(&owner).await.expect("deploy");
    set_executor(
        &Registry::new(contract, owner.clone()),
        signer(KEYS[1]).address(),
        true,
    )
    .await
    .expect("authorise");
    Setup {
        anvil,
        contract,
        reader: owner,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// Starts the coordinator on the registry; killed on drop.
struct Coordinator(Child);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The coordinator on `setup`'s registry, reaching anvil over `transport` (`http` or `ws`).
fn coordinator(setup: &Setup, transport: &str, confirmations: u64, poll_ms: u64) -> Coordinator {
    use std::os::unix::fs::PermissionsExt;
    let key = setup.dir.path().join("executor.key");
    std::fs::write(&key, KEYS[1]).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .env_clear()
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("warn".into()),
        )
        .env("COORDINATOR_IPFS_MIRROR", repo.join("host/wasm"))
        .env("COORDINATOR_STATE_DIR", setup.dir.path().join("state"))
        .env("COORDINATOR_LISTEN", "127.0.0.1:0")
        .env("COORDINATOR_CONCURRENCY", "2")
        .env("COORDINATOR_TASK_SOURCE", "chain")
        .env(
            "COORDINATOR_CHAIN_RPC_URL",
            setup.anvil.url.replacen("http", transport, 1),
        )
        .env("COORDINATOR_CHAIN_ID", "31337")
        .env("COORDINATOR_CONTRACT_ADDRESS", setup.contract.to_string())
        .env("COORDINATOR_CHAIN_KEY_FILE", &key)
        .env("COORDINATOR_CONFIRMATIONS", confirmations.to_string())
        .env("COORDINATOR_CHAIN_POLL_MS", poll_ms.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start coordinator");
    Coordinator(child)
}

async fn block_time(provider: &DynProvider, number: u64) -> u64 {
    use alloy::providers::Provider;
    provider
        .get_block_by_number(number.into())
        .await
        .expect("block")
        .expect("block exists")
        .header
        .timestamp
}

async fn latency(transport: &str, tasks: usize) -> (Vec<f64>, Vec<f64>) {
    let setup = setup(&["--block-time", "1"]).await;
    let _coordinator = coordinator(&setup, transport, 2, 100);
    let requester = Registry::new(
        setup.contract,
        connect_http(&setup.anvil.url, signer(KEYS[2])).expect("requester"),
    );
    let mut submitted = Vec::new();
    for n in 0..tasks {
        let request = TaskRequest {
            wasm_cid: FIB.into(),
            entry: "fib".into(),
            input: format!("[{}]", 10 + n % 10),
            fuel: 0,
            timeout_sec: 0,
        };
        // One at a time (each waits for its block): a few tasks per block.
        submitted.push(submit_task(&requester, &request).await.expect("submit"));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let done = completions(&setup.reader, setup.contract, None, 0)
            .await
            .expect("completions");
        if done.len() >= tasks || Instant::now() > deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(done.len(), tasks, "every task completed");
    let (mut blocks, mut seconds) = (Vec::new(), Vec::new());
    for s in &submitted {
        let c = done
            .iter()
            .find(|c| c.task_id == s.task_id)
            .expect("completed");
        blocks.push((c.block - s.block) as f64);
        let (t0, t1) = (
            block_time(&setup.reader, s.block).await,
            block_time(&setup.reader, c.block).await,
        );
        seconds.push((t1 - t0) as f64);
    }
    blocks.sort_by(f64::total_cmp);
    seconds.sort_by(f64::total_cmp);
    (blocks, seconds)
}

/// `count` submissions from `key`, signed ahead (local nonces, fixed gas and fees), so that the
/// burst measures the node and the coordinator rather than the signing.
async fn presign(
    url: &str,
    contract: Address,
    key: &str,
    count: usize,
    offset: usize,
) -> (DynProvider, Vec<alloy::primitives::Bytes>) {
    use alloy::eips::eip2718::Encodable2718;
    use alloy::network::{Ethereum, EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
    use alloy::providers::Provider;
    let provider = connect_http(url, signer(key)).expect("requester");
    let from = signer(key).address();
    let wallet = EthereumWallet::from(signer(key));
    let registry = Registry::new(contract, provider.clone());
    let first = provider
        .get_transaction_count(from)
        .pending()
        .await
        .expect("nonce");
    let mut raw = Vec::with_capacity(count);
    for n in 0..count {
        let request = registry
            .submitTask_0(
                FIB.into(),
                "fib".into(),
                format!("[{}]", (offset + n) % 20),
                0,
                0,
            )
            .into_transaction_request()
            .with_from(from)
            .with_nonce(first + n as u64)
            .with_chain_id(31337)
            .with_gas_limit(300_000)
            .with_max_fee_per_gas(20_000_000_000)
            .with_max_priority_fee_per_gas(1_000_000_000);
        let envelope = <_ as NetworkTransactionBuilder<Ethereum>>::build(request, &wallet)
            .await
            .expect("sign");
        raw.push(envelope.encoded_2718().into());
    }
    (provider, raw)
}

/// Sends pre-signed submissions in order; returns once the last is mined.
async fn send_all(provider: DynProvider, raw: Vec<alloy::primitives::Bytes>, from: Address) {
    use alloy::providers::Provider;
    let last = provider
        .get_transaction_count(from)
        .pending()
        .await
        .expect("nonce")
        + raw.len() as u64;
    for tx in &raw {
        // Not awaited to inclusion: the burst is measured by the account's nonce below.
        let _pending = provider.send_raw_transaction(tx).await.expect("send");
    }
    // Mined once the account's mined nonce reaches the last one sent.
    while provider.get_transaction_count(from).await.expect("nonce") < last {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits `tasks` pre-signed submissions from 4 requesters at once; returns the time from the
/// first send until every one is mined.
async fn submit_burst(setup: &Setup, tasks: usize) -> Duration {
    let keys = [KEYS[0], KEYS[2], MORE_KEYS[0], MORE_KEYS[1]];
    let share = tasks / keys.len();
    let mut signed = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let count = if i == keys.len() - 1 {
            tasks - share * (keys.len() - 1)
        } else {
            share
        };
        let (provider, raw) =
            presign(&setup.anvil.url, setup.contract, key, count, i * share).await;
        signed.push((provider, raw, signer(key).address()));
    }
    let started = Instant::now();
    let sends = signed
        .into_iter()
        .map(|(provider, raw, from)| send_all(provider, raw, from));
    futures_util::future::join_all(sends).await;
    started.elapsed()
}

/// Waits until `tasks` results are on chain, all successful.
async fn wait_all(setup: &Setup, tasks: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = completions(&setup.reader, setup.contract, None, 0)
            .await
            .expect("completions");
        if done.len() >= tasks {
            assert!(done.iter().all(|c| c.ok), "every task succeeded");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {tasks} completed",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The burst with the coordinator running: (submissions mined, every result on chain), both
/// from the first submission.
async fn throughput(transport: &str, tasks: usize) -> (f64, f64) {
    let setup = setup(&[]).await;
    let _coordinator = coordinator(&setup, transport, 0, 50);
    // Let it start (its checks) before the burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let submitted = submit_burst(&setup, tasks).await;
    wait_all(&setup, tasks).await;
    (submitted.as_secs_f64(), started.elapsed().as_secs_f64())
}

/// The same burst on chain before the coordinator starts: (submissions mined with no
/// coordinator beside the node, coordinator start to every result on chain). The first is the
/// node's own intake; the second the coordinator's drain rate.
async fn drain(transport: &str, tasks: usize) -> (f64, f64) {
    let setup = setup(&[]).await;
    let submitted = submit_burst(&setup, tasks).await;
    let started = Instant::now();
    let _coordinator = coordinator(&setup, transport, 0, 50);
    wait_all(&setup, tasks).await;
    (submitted.as_secs_f64(), started.elapsed().as_secs_f64())
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One transport's figures.
struct Figures {
    blocks: Vec<f64>,
    seconds: Vec<f64>,
    submitted: f64,
    all: f64,
    intake: f64,
    drained: f64,
}

#[allow(
    clippy::too_many_lines,
    reason = "the benchmark's steps, read top to bottom as the table they print"
)]
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let latency_tasks = env_count("LATENCY_TASKS", 100);
    let burst_tasks = env_count("BURST_TASKS", 1000);
    let transports: Vec<String> = std::env::var("TRANSPORTS")
        .unwrap_or_else(|_| "http,ws".into())
        .split(',')
        .map(|t| t.trim().to_string())
        .collect();
    let figures: Vec<Figures> = transports
        .iter()
        .map(|transport| {
            let (submitted, all) = rt.block_on(throughput(transport, burst_tasks));
            let (intake, drained) = rt.block_on(drain(transport, burst_tasks));
            let (blocks, seconds) = rt.block_on(latency(transport, latency_tasks));
            Figures {
                blocks,
                seconds,
                submitted,
                all,
                intake,
                drained,
            }
        })
        .collect();
    let row = |figure: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = figures.iter().map(cell).collect();
        println!("| {figure} | {} |", cells.join(" | "));
    };
    println!("| figure | {} |", transports.join(" | "));
    println!("| --- |{}", " --- |".repeat(transports.len()));
    row(
        &format!(
            "latency, `TaskSubmitted` to `TaskCompleted`, blocks (block time 1 s, 2 confirmations; {latency_tasks} tasks)"
        ),
        &|f| {
            format!(
                "p50 {:.0}, p95 {:.0}, max {:.0}",
                quantile(&f.blocks, 0.5),
                quantile(&f.blocks, 0.95),
                quantile(&f.blocks, 1.0)
            )
        },
    );
    row("latency, seconds (block timestamps)", &|f| {
        format!(
            "p50 {:.0}, p95 {:.0}",
            quantile(&f.seconds, 0.5),
            quantile(&f.seconds, 0.95)
        )
    });
    row(
        &format!("burst of {burst_tasks} tasks (instant mining, 0 confirmations): all submitted"),
        &|f| format!("{:.2} s", f.submitted),
    );
    row(
        "burst: every `TaskCompleted` on chain, from the first submission",
        &|f| format!("{:.2} s", f.all),
    );
    row(
        "burst throughput (tasks / time from first submission to last result)",
        &|f| format!("{:.0} tasks/s", burst_tasks as f64 / f.all),
    );
    row(
        "the same burst with no coordinator running: all submitted (the node's intake)",
        &|f| {
            format!(
                "{:.2} s ({:.0} tx/s)",
                f.intake,
                burst_tasks as f64 / f.intake
            )
        },
    );
    row(
        "drain: those tasks already on chain, coordinator start to last result",
        &|f| {
            format!(
                "{:.2} s: {:.0} tasks/s",
                f.drained,
                burst_tasks as f64 / f.drained
            )
        },
    );
}
