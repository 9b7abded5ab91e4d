//! The chaos campaign: SIGKILLs at random moments through one run that mixes API submissions
//! (retried with the same id, as a careful client does) and chain tasks on anvil, with anvil
//! restarts, IPFS outages and a full state disk between kills. Every acknowledged task must end
//! with exactly one correct result, every chain task with one `TaskCompleted`, nothing stuck.
//!
//! Sized by `CHAOS_KILLS` (10), `CHAOS_TASKS` (500), `CHAOS_RATE` (API submissions per second,
//! 25) and `CHAOS_SEED` (printed, to replay the moments); `scripts/chaos` runs the long campaign
//! (100 kills over 5,000 tasks).

#[path = "support/chain.rs"]
mod chain_peer;
#[path = "support/chaos.rs"]
mod chaos_run;
mod support;

use chain_peer::{Chain, signer};
use chaos_run::{Coordinator, Episode, Event, Logged, StopOnDrop, Tally, Work, schedule};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::JsIpfs;
use wasm_exec_chain::requester::{TaskRequest, completions, submit_task};
use wasm_exec_chain::{Registry, U256, connect_http};
use wasm_exec_test_peers::http::try_get;
use wasm_exec_test_peers::{KEYS, Tmpfs};

/// One in this many tasks is submitted on chain; the others through the API.
const CHAIN_SHARE: usize = 10;
/// One in this many API tasks is submitted a second time after its 201, as a client that lost
/// the answer would; the second answer must be 200.
const RESUBMIT_SHARE: usize = 5;
/// Client threads submitting API tasks.
const CLIENTS: usize = 4;
/// Most acknowledged tasks not yet finished: the clients wait beyond it, so that the load lasts
/// as long as the run and every kill and fault meets submissions.
const WINDOW: usize = 40;
/// The longest wait for one kill's moment (then the campaign goes on, and the checks say what
/// is stuck).
const STALL: Duration = Duration::from_secs(120);
/// The watermark under which the coordinator refuses submissions (the disk-full episodes fill
/// the 64 MiB tmpfs to nothing, well under it).
const WATERMARK_MB: &str = "8";

/// Tasks run more than once, as the store counts them and as the logs show them.
#[derive(Default)]
struct Reruns {
    /// Tasks whose record says `attempts > 1`. A lower bound: a first run's start is recorded
    /// without waiting, so a SIGKILL can take it with it.
    by_store: usize,
    /// Tasks with more than one `module ready` line over every incarnation, with the counts
    /// (`id: begun/attempts`).
    by_logs: Vec<String>,
}

impl Reruns {
    fn add(&mut self, id: &str, task: &Value, begun: Option<usize>) {
        let attempts = task["attempts"].as_u64().unwrap_or(0);
        self.by_store += usize::from(attempts > 1);
        if let Some(begun) = begun.filter(|b| *b > 1) {
            self.by_logs.push(format!("{id}: {begun}/{attempts}"));
        }
    }
}

/// The campaign's size and seed, from the environment.
struct Settings {
    kills: usize,
    tasks: usize,
    seed: u64,
    /// API submissions per second (`CHAOS_RATE`, 25): the run lasts long enough for every kill
    /// and fault to meet load, instead of the load finishing during the first fault.
    rate: f64,
}

fn settings() -> Settings {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let seed = var("CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    Settings {
        kills: var("CHAOS_KILLS").map_or(10, |v| v as usize),
        tasks: var("CHAOS_TASKS").map_or(500, |v| v as usize),
        seed,
        rate: var("CHAOS_RATE").map_or(25.0, |v| v as f64),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one campaign, read top to bottom: peers, load, chaos, checks"
)]
#[test]
fn sigkills_node_restarts_ipfs_outages_and_a_full_disk_lose_or_double_no_task() {
    let Settings {
        kills,
        tasks,
        seed,
        rate,
    } = settings();
    eprintln!("chaos: CHAOS_SEED={seed} CHAOS_KILLS={kills} CHAOS_TASKS={tasks} CHAOS_RATE={rate}");
    let Some(disk) = Tmpfs::mount("64m") else {
        return;
    };
    let started = Instant::now();
    let anvil_dir = tempfile::tempdir().unwrap();
    let anvil_state = anvil_dir.path().join("anvil.json");
    let mut chain = Chain::start_with(&[
        "--state",
        anvil_state.to_str().unwrap(),
        "--state-interval",
        "1",
    ]);
    let mut ipfs = JsIpfs::start();
    for name in ["add", "fib", "affine"] {
        let bytes = std::fs::read(support::repo(&format!("host/wasm/{name}.wasm"))).unwrap();
        ipfs.add(&bytes, 1);
    }
    let miner = chain.keep_mining(Duration::from_millis(200));
    let state = disk.path().join("state");
    let port = wasm_exec_test_peers::free_port();
    let gateway = ipfs.gateway.clone();
    let command = |chain: &Chain| {
        let mut cmd = chain.coordinator(&state, KEYS[1], 1);
        cmd.env("COORDINATOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("COORDINATOR_IPFS_ENDPOINT", &gateway)
            // Backoff from 200 ms doubling: about 50 s of retries, longer than an outage.
            .env("COORDINATOR_IPFS_RETRIES", "8")
            .env("COORDINATOR_IPFS_TIMEOUT_SEC", "10")
            .env("COORDINATOR_STATE_LOW_WATERMARK_MB", WATERMARK_MB)
            .env("COORDINATOR_CONCURRENCY", "4")
            // A task running at three of our SIGKILLs is no poison task: never quarantine here.
            .env("COORDINATOR_QUARANTINE_AFTER", "0");
        cmd
    };
    let mut coordinator = Coordinator::start(command(&chain));
    let base = coordinator.base();

    let chain_total = tasks / CHAIN_SHARE;
    let api_total = tasks - chain_total;
    let tally = Tally::default();
    let next = AtomicUsize::new(0);
    let acked_api = Mutex::new(Vec::new());
    let chain_expected: Mutex<HashMap<U256, u64>> = Mutex::new(HashMap::new());
    let (url, contract) = (chain.anvil.url.clone(), chain.contract);
    let mut rng = fastrand::Rng::with_seed(seed);
    let plan = schedule(&mut rng, kills, tasks);
    let stop = AtomicBool::new(false);
    let load_start = Instant::now();
    let episodes = std::thread::scope(|scope| {
        scope.spawn(|| tally.watch(&base, &stop));
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        tally.wait_for_room(WINDOW, &stop);
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= api_total || stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let due = load_start + Duration::from_secs_f64(i as f64 / rate);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let id = format!("chaos-{i:05}");
                        let work = Work::of(seed, i);
                        let body = json!({"task_id": id, "wasm_cid": work.cid, "input": {"entry": work.entry, "args": work.args}}).to_string();
                        if tally.submit(&base, &body, false) {
                            acked_api.lock().unwrap().push(i);
                            tally.acked.fetch_add(1, Ordering::SeqCst);
                            if i.is_multiple_of(RESUBMIT_SHARE) {
                                tally.submit(&base, &body, true);
                            }
                        }
                    }
                })
            })
            .collect();
        let requester = scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let registry = Registry::new(
                contract,
                connect_http(&url, signer(KEYS[2])).expect("requester"),
            );
            for j in 0..chain_total {
                // Spread over the run: chain task j goes once the API has its share before it.
                while tally.acked_api() < j * api_total / chain_total.max(1)
                    && next.load(Ordering::SeqCst) < api_total
                    && !stop.load(Ordering::SeqCst)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let work = Work::of(seed, api_total + j);
                let request = TaskRequest {
                    wasm_cid: work.cid.into(),
                    entry: work.entry.into(),
                    input: Value::from(work.args.clone()).to_string(),
                    fuel: 0,
                    timeout_sec: 0,
                };
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match rt.block_on(submit_task(&registry, &request)) {
                        Ok(submitted) => {
                            chain_expected
                                .lock()
                                .unwrap()
                                .insert(submitted.task_id, work.expected);
                            tally.acked.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        // The node is down (a restart): submit again, as a requester would.
                        Err(e) => {
                            assert!(Instant::now() < deadline, "chain submission failed: {e}");
                            tally.chain_resent.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            }
        });
        let mut done = Vec::new();
        for (point, event) in &plan {
            let stall = Instant::now() + STALL;
            while !tally.wait_finished(*point, Duration::from_millis(100)) {
                coordinator.restart_if_exited(command(&chain));
                if Instant::now() > stall {
                    break;
                }
            }
            let episode = match event {
                Event::Kill => {
                    std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
                    let down = Duration::from_millis(rng.u64(0..200));
                    coordinator.kill_and_restart(command(&chain), down);
                    continue;
                }
                Event::Fault(episode) => *episode,
            };
            match episode {
                Episode::AnvilRestart => chain.anvil.restart(Duration::from_secs(2)),
                Episode::IpfsOutage => ipfs.restart(Duration::from_secs(3)),
                Episode::DiskFull => {
                    let ballast = disk.fill();
                    tally.pressing.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_secs(3));
                    std::fs::remove_file(ballast).unwrap();
                    tally.pressing.store(false, Ordering::SeqCst);
                }
            }
            coordinator.restart_if_exited(command(&chain));
            eprintln!(
                "chaos: {episode:?} after {} kills: {} acknowledged, {} finished, {} answers 503 so far",
                coordinator.kills,
                tally.acked.load(Ordering::SeqCst),
                tally.finished.load(Ordering::SeqCst),
                tally.refused()
            );
            done.push(episode);
        }
        while clients.iter().any(|c| !c.is_finished()) || !requester.is_finished() {
            coordinator.restart_if_exited(command(&chain));
            std::thread::sleep(Duration::from_millis(20));
        }
        for client in clients {
            client.join().unwrap();
        }
        requester.join().unwrap();
        done
    });

    // Settle: every acknowledged task finished and written back, within a bound.
    let api_ids: Vec<usize> = acked_api.into_inner().unwrap();
    let chain_ids: u64 = chain
        .rt
        .block_on(async { chain.requester.nextTaskId().call().await })
        .expect("nextTaskId")
        .to::<u64>()
        - 1;
    let mut waiting: Vec<String> = api_ids.iter().map(|i| format!("chaos-{i:05}")).collect();
    waiting.extend((1..=chain_ids).map(|n| chain.task_id(U256::from(n))));
    let deadline = Instant::now() + Duration::from_secs(60 + tasks as u64 / 20);
    while !waiting.is_empty() && Instant::now() < deadline {
        coordinator.restart_if_exited(command(&chain));
        waiting.retain(|id| {
            !try_get(&base, &format!("/v1/tasks/{id}"), Duration::from_secs(10)).is_ok_and(|r| {
                r.status == 200
                    && matches!(r.body["state"].as_str(), Some("succeeded" | "failed"))
                    && r.body["reported"] == true
            })
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    let stuck: Vec<String> = ["pending", "fetching", "running"]
        .iter()
        .flat_map(|s| chaos_run::listed(&base, s))
        .collect();

    // Check: one correct result per acknowledged API id.
    let logged = coordinator.logged();
    let times = |kind: Logged, id: &str| logged.get(&kind).and_then(|m| m.get(id)).copied();
    let (mut lost, mut wrong, mut reruns) = (Vec::new(), Vec::new(), Reruns::default());
    for i in &api_ids {
        let id = format!("chaos-{i:05}");
        let reply = try_get(&base, &format!("/v1/tasks/{id}"), Duration::from_secs(10)).unwrap();
        if reply.status == 404 {
            lost.push(id);
            continue;
        }
        let task = reply.body;
        if task["result"]["result"] != Work::of(seed, *i).expected || task["state"] != "succeeded" {
            wrong.push(format!("{id}: {task}"));
        }
        reruns.add(&id, &task, times(Logged::RunBegun, &id));
    }
    // Check: exactly one TaskCompleted per chain task, with the right value.
    let events = chain
        .rt
        .block_on(completions(&chain.reader, chain.contract, None, 0))
        .expect("TaskCompleted logs");
    let mut per_task: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for event in &events {
        per_task
            .entry(event.task_id.to::<u64>())
            .or_default()
            .push(event.result.clone());
    }
    let expected = chain_expected.into_inner().unwrap();
    let (mut duplicated, mut sent_again) = (0, 0);
    for n in 1..=chain_ids {
        let id = chain.task_id(U256::from(n));
        match per_task.get(&n).map(Vec::as_slice) {
            None | Some([]) => lost.push(id.clone()),
            Some([result]) => {
                if expected
                    .get(&U256::from(n))
                    .is_some_and(|e| *result != e.to_string())
                {
                    wrong.push(format!("{id}: {result}"));
                }
            }
            Some(many) => wrong.push(format!("{id}: {many:?}")),
        }
        // Doubled on chain (the contract refuses a second result, so this counts events) or
        // two write-back transactions of the coordinator that both landed.
        let events = per_task.get(&n).map_or(0, Vec::len);
        let landed = times(Logged::WrittenBack, &id).unwrap_or(0);
        duplicated += events.max(landed).saturating_sub(1);
        sent_again += times(Logged::AlreadyOnChain, &id).unwrap_or(0);
        if let Ok(r) = try_get(&base, &format!("/v1/tasks/{id}"), Duration::from_secs(10)) {
            reruns.add(&id, &r.body, times(Logged::RunBegun, &id));
        }
    }
    miner.store(false, Ordering::Relaxed);
    let count = |e: Episode| episodes.iter().filter(|d| **d == e).count();
    let rows = [
        ("tasks acknowledged, API", api_ids.len().to_string()),
        ("tasks acknowledged, chain", chain_ids.to_string()),
        (
            "API submissions sent again (same id)",
            tally.resent().to_string(),
        ),
        ("  of which answered 503", tally.refused().to_string()),
        (
            "chain submissions sent again after an error",
            tally.chain_resent.load(Ordering::SeqCst).to_string(),
        ),
        ("SIGKILLs", coordinator.kills.to_string()),
        (
            "coordinator exits on its own",
            coordinator.exits.len().to_string(),
        ),
        ("anvil restarts", count(Episode::AnvilRestart).to_string()),
        ("IPFS outages", count(Episode::IpfsOutage).to_string()),
        ("disk-full episodes", count(Episode::DiskFull).to_string()),
        (
            "tasks run more than once (store: attempts > 1)",
            reruns.by_store.to_string(),
        ),
        (
            "tasks run more than once (logs: runs begun)",
            reruns.by_logs.len().to_string(),
        ),
        (
            "write-backs sent again, found already on chain",
            sent_again.to_string(),
        ),
        ("results lost", lost.len().to_string()),
        ("wrong results", wrong.len().to_string()),
        ("write-backs duplicated", duplicated.to_string()),
        ("stuck", stuck.len().to_string()),
        (
            "wall time",
            format!("{:.0} s", started.elapsed().as_secs_f64()),
        ),
    ];
    eprintln!(
        "\nchaos campaign, CHAOS_SEED={seed} CHAOS_KILLS={kills} CHAOS_TASKS={tasks} CHAOS_RATE={rate}"
    );
    for (what, n) in rows {
        eprintln!("| {what:<48} | {n:>8} |");
    }
    let first: Vec<&String> = reruns.by_logs.iter().take(10).collect();
    eprintln!(
        "runs begun more than once (first 10 of {}): {first:?}",
        reruns.by_logs.len()
    );
    assert!(waiting.is_empty(), "not finished in time: {waiting:?}");
    assert!(stuck.is_empty(), "stuck: {stuck:?}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(wrong.is_empty(), "wrong or doubled: {wrong:?}");
    assert_eq!(duplicated, 0);
    assert_eq!(
        tally.fresh_again(),
        0,
        "a resubmission was answered 201: the first was lost"
    );
    assert!(
        coordinator.exits.is_empty(),
        "the coordinator exited by itself: {:?}",
        coordinator.exits
    );
}
