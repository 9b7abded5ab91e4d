//! The chain source end to end on a real anvil: tasks submitted to the TaskRegistry run on the
//! local backend and get exactly one `TaskCompleted` each, through confirmations, reorgs, a
//! SIGKILL, node restarts, an unauthorised key, over HTTP(S) and WebSocket.

#[path = "support/chain.rs"]
mod chain_peer;
mod support;

use alloy::providers::Provider as _;
use chain_peer::{Chain, signer};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{Service, get};
use wasm_exec_chain::requester::{TaskRequest, submit_task};
use wasm_exec_chain::{B256, U256, keccak256};
use wasm_exec_task::ResultEnvelope;
use wasm_exec_test_peers::{KEYS, TestCa, Tmpfs};

const ADD: &str = "bafkreic4y3temla33obbacyznk4penucufbdtaq5mcfju3jljlgm2lvhbi";
const FIB: &str = "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je";
const AFFINE: &str = "bafkreih3zqdpzwgscygcphpnxxmbabqpqncebxwbnzqwy2wplcbvwhj5ty";
/// `testdata/wasm/hostile.wasm` by CID (`ipfs add --cid-version 1`); its `spin` never returns.
const HOSTILE: &str = "bafkreiee7qpmxvbhget6dxy7vydbf4kpe6qqm7ixlt2f7tw7mcnmf2qe3m";

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn samples_submitted_on_chain_get_one_result_each_and_their_result_hash() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let miner = chain.keep_mining(Duration::from_millis(200));
    let svc = Service::start(chain.coordinator(state.path(), KEYS[1], 2));
    let tasks = [
        (chain.submit(FIB, "fib", "[12]"), "144"),
        (
            chain.submit(AFFINE, "affine", r#"{"args": [13, 9, 2]}"#),
            "35",
        ),
        (chain.submit(ADD, "add", "[5, 7]"), "12"),
    ];
    let malformed = [
        (chain.submit(FIB, "fib", "{oops"), "not JSON"),
        (chain.submit("not-a-cid!", "fib", "[1]"), "not a CID"),
    ];
    for ((id, _), expected) in tasks {
        let done = chain.wait_completed(id);
        assert_eq!(done.len(), 1, "one TaskCompleted for task {id}");
        assert!(done[0].ok, "{:?}", done[0]);
        assert_eq!(done[0].result, expected);
        assert_eq!(done[0].executor, signer(KEYS[1]).address());
        let document = support::get(
            &svc.base,
            &format!("/v1/tasks/{}/result", chain.task_id(id)),
            None,
        );
        assert_eq!(document.status, 200, "{document:?}");
        assert_eq!(document.body["result"], expected.parse::<Value>().unwrap());
        // The hash on chain is the result_hash of the API's document, not the hash of its bytes
        // (which hold the run's duration).
        let raw = raw_get(
            &svc.base,
            &format!("/v1/tasks/{}/result", chain.task_id(id)),
        );
        let envelope: ResultEnvelope = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            B256::from(envelope.result_hash().0),
            done[0].result_hash,
            "the hash on chain is the result_hash of the API's document {raw}"
        );
        assert_ne!(keccak256(raw.as_bytes()), done[0].result_hash);
    }
    for ((id, _), why) in malformed {
        let done = chain.wait_completed(id);
        assert_eq!(done.len(), 1);
        assert!(!done[0].ok, "{:?}", done[0]);
        assert!(
            done[0].result.starts_with("bad_input: "),
            "{}",
            done[0].result
        );
        assert!(done[0].result.contains(why), "{}", done[0].result);
    }
    let ready = get(&svc.base, "/readyz", None);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert!(
        heads_seen(&svc.base, "polled") > 0,
        "no head was polled over HTTP"
    );
    assert_eq!(
        heads_seen(&svc.base, "pushed"),
        0,
        "a head pushed over HTTP?"
    );
    miner.store(false, Ordering::Relaxed);
}

/// The body of `GET base+path`, as sent.
fn raw_get(base: &str, path: &str) -> String {
    let (status, text) = support::get_text(base, path);
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn a_task_is_taken_only_at_the_confirmation_depth() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let svc = Service::start(chain.coordinator(state.path(), KEYS[1], 3));
    let (id, _) = chain.submit(FIB, "fib", "[10]");
    let path = format!("/v1/tasks/{}", chain.task_id(id));
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(get(&svc.base, &path, None).status, 404, "taken too early");
        chain.mine(1);
    }
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        get(&svc.base, &path, None).status,
        404,
        "taken at 2 of 3 confirmations"
    );
    chain.mine(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&svc.base, &path, None).status == 404 {
        assert!(Instant::now() < deadline, "not taken at 3 confirmations");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its result is mined at once (anvil mines each transaction), then confirmed by 3 more.
    let miner = chain.keep_mining(Duration::from_millis(100));
    let done = chain.wait_completed(id);
    assert_eq!(done[0].result, "55");
    let task = support::wait_finished(&svc.base, &chain.task_id(id));
    assert_eq!(task["reported"], true);
    miner.store(false, Ordering::Relaxed);
}

#[test]
fn a_task_reorganised_away_before_its_confirmations_never_runs() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let svc = Service::start(chain.coordinator(state.path(), KEYS[1], 2));
    let snapshot = chain.rpc("evm_snapshot", json!([]));
    let (vanished, _) = chain.submit(FIB, "fib", "[20]");
    std::thread::sleep(Duration::from_millis(500));
    chain.rpc("evm_revert", json!([snapshot]));
    // The same id now names another request, on the chain that stays.
    let (id, _) = chain.submit(FIB, "fib", "[11]");
    assert_eq!(id, vanished, "the reverted id is given again");
    chain.mine(2);
    let miner = chain.keep_mining(Duration::from_millis(100));
    let done = chain.wait_completed(id);
    assert_eq!(done.len(), 1);
    assert_eq!(
        done[0].result, "89",
        "the request that stayed ran, not fib(20)"
    );
    let listed = get(&svc.base, "/v1/tasks", None);
    let tasks = listed.body["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{listed:?}");
    assert_eq!(tasks[0]["task"]["input"], json!([11]));
    assert!(
        !svc.log.lock().unwrap().contains("fib(20)")
            && !svc.log.lock().unwrap().contains("result=6765"),
        "the vanished task ran"
    );
    miner.store(false, Ordering::Relaxed);
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn a_task_reorganised_away_after_it_was_taken_is_not_written_back_and_the_api_says_why() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let mirror = tempfile::tempdir().unwrap();
    std::fs::copy(
        support::repo("testdata/wasm/hostile.wasm"),
        mirror.path().join("hostile.wasm"),
    )
    .expect("copy hostile.wasm");
    let mut cmd = chain.coordinator(state.path(), KEYS[1], 1);
    cmd.env("COORDINATOR_IPFS_MIRROR", mirror.path());
    let svc = Service::start(cmd);
    // `spin` loops until its 3 s timeout: time to reorganise its request away while it runs.
    let submitted = chain
        .rt
        .block_on(submit_task(
            &chain.requester,
            &TaskRequest {
                wasm_cid: HOSTILE.into(),
                entry: "spin".into(),
                input: "[]".into(),
                fuel: 0,
                timeout_sec: 3,
            },
        ))
        .expect("submit");
    let id = submitted.task_id;
    chain.mine(1);
    let path = format!("/v1/tasks/{}", chain.task_id(id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&svc.base, &path, None).body["state"] != "running" {
        assert!(Instant::now() < deadline, "the task was not taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Replace every block from the request's on with empty ones: deeper than the confirmations.
    let head = chain
        .rt
        .block_on(chain.reader.get_block_number())
        .expect("head");
    chain.rpc("anvil_reorg", json!([head - submitted.block + 1, []]));
    let record = chain
        .rt
        .block_on(async { chain.requester.getTask(id).call().await })
        .expect("getTask");
    assert_eq!(
        record.status, 0,
        "the request is still on chain after the reorg"
    );
    let miner = chain.keep_mining(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(15);
    let task = loop {
        let task = get(&svc.base, &path, None).body;
        if task["reported"] == true {
            break task;
        }
        assert!(
            Instant::now() < deadline,
            "the result was never settled: {task}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(task["result"]["error"]["kind"], "timeout", "{task}");
    let why = task["not_written_back"].as_str().unwrap_or_default();
    assert!(why.contains("reorganised off the chain"), "{task}");
    assert!(
        chain.completions(id).is_empty(),
        "a result was written for a vanished request"
    );
    let log = svc.log.lock().unwrap().clone();
    assert!(
        log.contains("the chain was reorganised under blocks already read"),
        "the reorg was not noticed: {log}"
    );
    miner.store(false, Ordering::Relaxed);
}

#[test]
fn an_unauthorised_key_refuses_to_start_and_says_how_to_authorise_it() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let out = chain
        .coordinator(state.path(), KEYS[2], 2)
        .output()
        .expect("run coordinator");
    assert_eq!(out.status.code(), Some(2), "refused to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let requester = signer(KEYS[2]).address().to_string();
    assert!(
        stderr.contains(&format!(
            "coordinator chain authorize --executor {requester}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(&KEYS[2][2..]), "the key leaked: {stderr}");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = chain.coordinator(state.path(), KEYS[1], 2);
    let key = chain.key_file(KEYS[1]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cmd.output().expect("run coordinator");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn sigkill_after_a_result_is_sent_and_before_it_is_confirmed_writes_it_once() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let svc = Service::start(chain.coordinator(state.path(), KEYS[1], 2));
    let ids: Vec<U256> = (0..4)
        .map(|n| chain.submit(FIB, "fib", &format!("[{}]", 10 + n)).0)
        .collect();
    // Confirm the requests; then no more blocks, so the results (mined at once by anvil) never
    // reach their confirmation depth in this run.
    chain.mine(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids.iter().any(|id| chain.completions(*id).is_empty()) {
        assert!(Instant::now() < deadline, "results not sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each result is mined in its own block, which confirms the earlier ones: the last two
    // stay short of their depth.
    let unconfirmed = ids
        .iter()
        .filter(|id| {
            let task = get(
                &svc.base,
                &format!("/v1/tasks/{}", chain.task_id(**id)),
                None,
            );
            task.body["reported"] == false
        })
        .count();
    assert!(unconfirmed >= 2, "results confirmed without their depth");
    assert_eq!(svc.signal_and_wait("KILL"), None);

    let miner = chain.keep_mining(Duration::from_millis(100));
    let svc = Service::start(chain.coordinator(state.path(), KEYS[1], 2));
    for (n, id) in ids.iter().enumerate() {
        let task = support::wait_finished(&svc.base, &chain.task_id(*id));
        assert_eq!(task["attempts"], 1, "not run again: {task}");
        let done = chain.completions(*id);
        assert_eq!(done.len(), 1, "one TaskCompleted for task {id}");
        let expected = [55, 89, 144, 233][n];
        assert_eq!(done[0].result, expected.to_string());
    }
    let log = svc.log.lock().unwrap().clone();
    assert!(
        log.contains("reporting a result persisted before a restart"),
        "{log}"
    );
    assert!(!log.contains("retrying"), "no retry loop: {log}");
    miner.store(false, Ordering::Relaxed);
}

#[test]
fn a_result_transaction_dropped_from_the_pool_is_replaced_with_a_higher_fee() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let (id, _) = chain.submit(FIB, "fib", "[12]");
    // From now on blocks come only from `evm_mine`: the result waits in the pool.
    chain.rpc("evm_setAutomine", json!([false]));
    let mut cmd = chain.coordinator(state.path(), KEYS[1], 0);
    cmd.env("COORDINATOR_CHAIN_RECEIPT_TIMEOUT_SEC", "2");
    let svc = Service::start(cmd);
    let pending = || {
        let status = chain.rpc("txpool_status", json!([]));
        u64::from_str_radix(
            status["pending"]
                .as_str()
                .unwrap_or("0x0")
                .trim_start_matches("0x"),
            16,
        )
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending() == 0 {
        assert!(Instant::now() < deadline, "the result was not sent");
        std::thread::sleep(Duration::from_millis(50));
    }
    chain.rpc("anvil_dropAllTransactions", json!([]));
    assert_eq!(pending(), 0);
    while !svc
        .log
        .lock()
        .unwrap()
        .contains("replacing it with a higher fee")
        || pending() == 0
    {
        assert!(
            Instant::now() < deadline,
            "the dropped result was not sent again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    chain.mine(1);
    let done = chain.wait_completed(id);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, "144");
    let task = support::wait_finished(&svc.base, &chain.task_id(id));
    assert_eq!(task["reported"], true);
    let metrics = support::get_text(&svc.base, "/metrics").1;
    assert!(
        metrics.contains("wasm_exec_chain_writeback_replacements_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_node_restarted_mid_batch_is_caught_up_with_and_no_task_is_lost_or_doubled() {
    restart_the_node_mid_batch(false);
}

#[test]
fn over_a_websocket_a_node_restarted_mid_batch_is_caught_up_with() {
    restart_the_node_mid_batch(true);
}

/// Six tasks, three submitted before anvil restarts (down 1.5 s) and three after: each gets one
/// `TaskCompleted`. Over HTTP `/readyz` shows the outage; over a WebSocket requests wait for the
/// socket to be reopened instead (an outage counts as one once a read takes 10 s).
fn restart_the_node_mid_batch(websocket: bool) {
    let state_file = tempfile::tempdir().expect("tempdir");
    let anvil_state = state_file.path().join("anvil.json");
    let anvil_state = anvil_state.to_str().expect("a UTF-8 path");
    let mut chain = Chain::start_with(&["--state", anvil_state, "--state-interval", "1"]);
    let state = tempfile::tempdir().expect("tempdir");
    let miner = chain.keep_mining(Duration::from_millis(150));
    let url = if websocket {
        chain.ws_url()
    } else {
        chain.anvil.url.clone()
    };
    let svc = Service::start(chain.coordinator_at(&url, state.path(), KEYS[1], 2));
    let mut ids: Vec<U256> = (0..3)
        .map(|n| chain.submit(FIB, "fib", &format!("[{}]", 10 + n)).0)
        .collect();
    // Down while those are being read, run and written back.
    let readiness = {
        let base = svc.base.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if get(&base, "/readyz", None).status == 503 {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    };
    chain.anvil.restart(Duration::from_millis(1500));
    let noticed = readiness.join().expect("the readiness watcher");
    if !websocket {
        assert!(noticed, "/readyz never said the node was down");
    }
    ids.extend((0..3).map(|n| chain.submit(FIB, "fib", &format!("[{}]", 13 + n)).0));
    for (n, id) in ids.iter().enumerate() {
        let done = chain.wait_completed(*id);
        assert_eq!(done.len(), 1, "one TaskCompleted for task {id}");
        let expected = [55, 89, 144, 233, 377, 610][n];
        assert_eq!(done[0].result, expected.to_string(), "task {id}");
    }
    for id in &ids {
        support::wait_finished(&svc.base, &chain.task_id(*id));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&svc.base, "/readyz", None).status != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the node came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if !websocket {
        let log = svc.log.lock().expect("the log").clone();
        assert!(
            log.contains("reading tasks from the chain"),
            "the outage was logged: {log}"
        );
    }
    miner.store(false, Ordering::Relaxed);
}

#[test]
fn over_a_websocket_tasks_are_read_on_pushed_heads() {
    let chain = Chain::start();
    let state = tempfile::tempdir().unwrap();
    let miner = chain.keep_mining(Duration::from_millis(200));
    let mut cmd = chain.coordinator_at(&chain.ws_url(), state.path(), KEYS[1], 2);
    // Over HTTP this would be a read a minute; over a WebSocket the node's pushes set the pace.
    cmd.env("COORDINATOR_CHAIN_POLL_MS", "60000");
    let svc = Service::start(cmd);
    let tasks = [
        (chain.submit(FIB, "fib", "[12]").0, "144"),
        (chain.submit(AFFINE, "affine", "[13, 9, 2]").0, "35"),
        (chain.submit(ADD, "add", "[5, 7]").0, "12"),
    ];
    for (id, expected) in tasks {
        let done = chain.wait_completed(id);
        assert_eq!(done.len(), 1, "one TaskCompleted for task {id}");
        assert_eq!(done[0].result, expected);
    }
    assert!(
        heads_seen(&svc.base, "pushed") > 0,
        "no head was pushed over the WebSocket"
    );
    miner.store(false, Ordering::Relaxed);
}

/// The count of `wasm_exec_chain_heads_total{via}` in the coordinator's metrics.
fn heads_seen(base: &str, via: &str) -> u64 {
    let (_, metrics) = support::get_text(base, "/metrics");
    let name = format!("wasm_exec_chain_heads_total{{via=\"{via}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&name))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[test]
fn https_and_wss_rpc_urls_work_and_their_certificates_are_verified() {
    let chain = Chain::start();
    // TLS in front of the real node (anvil speaks plain HTTP).
    let ca = TestCa::new();
    let proxy = ca.proxy(&chain.anvil.url);
    let port = proxy.port;
    let submit = |scheme: &str, trusted: bool| {
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coordinator"));
        cmd.env_clear()
            .env("COORDINATOR_CHAIN_RPC_URL", url)
            .env("COORDINATOR_CONTRACT_ADDRESS", chain.contract.to_string())
            .env("COORDINATOR_CHAIN_KEY_FILE", chain.key_file(KEYS[2]))
            .args([
                "chain", "submit", "--cid", FIB, "--entry", "fib", "--args", "[7]",
            ]);
        if trusted {
            cmd.env("SSL_CERT_FILE", ca.ca_file());
        }
        cmd.output().expect("run coordinator chain submit")
    };
    for (n, scheme) in ["https", "wss"].into_iter().enumerate() {
        let untrusted = submit(scheme, false);
        assert!(
            !untrusted.status.success(),
            "{scheme}: a certificate from an unknown CA was accepted"
        );
        let trusted = submit(scheme, true);
        assert!(
            trusted.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&trusted.stderr)
        );
        let printed: Value = serde_json::from_slice(&trusted.stdout).expect("one JSON line");
        assert_eq!(
            printed["task_id"],
            (n + 1).to_string(),
            "{scheme}: {printed}"
        );
    }
}

#[test]
fn a_chain_task_read_while_the_state_disk_is_full_waits_for_space_and_the_coordinator_keeps_running()
 {
    let Some(disk) = Tmpfs::mount("16m") else {
        return;
    };
    let chain = Chain::start();
    let miner = chain.keep_mining(Duration::from_millis(100));
    let mut cmd = chain.coordinator(&disk.path().join("state"), KEYS[1], 1);
    cmd.env("COORDINATOR_STATE_LOW_WATERMARK_MB", "1");
    let mut svc = Service::start(cmd);
    let (before, _) = chain.submit(FIB, "fib", "[10]");
    assert_eq!(chain.wait_completed(before)[0].result, "55");
    let ballast = disk.fill();
    // A write may still fit in a page the journal holds; the next checkpoint does not.
    let (first, _) = chain.submit(FIB, "fib", "[11]");
    assert!(
        svc.logged("a database write failed", Duration::from_secs(10)),
        "no write met the full disk: {}",
        svc.log.lock().unwrap()
    );
    let (id, _) = chain.submit(FIB, "fib", "[12]");
    assert!(
        svc.logged(
            "admitting the source's tasks failed",
            Duration::from_secs(10)
        ),
        "the admission did not meet the full disk: {}",
        svc.log.lock().unwrap()
    );
    assert_eq!(svc.exited(), None, "the coordinator ended on a full disk");
    std::fs::remove_file(ballast).unwrap();
    for (id, expected) in [(first, "89"), (id, "144")] {
        let done = chain.wait_completed(id);
        assert_eq!(done.len(), 1, "one TaskCompleted for task {id}");
        assert_eq!(done[0].result, expected);
    }
    support::wait_finished(&svc.base, &chain.task_id(id));
    assert_eq!(svc.exited(), None);
    miner.store(false, Ordering::Relaxed);
}
