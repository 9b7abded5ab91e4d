//! k-of-n tasks end to end on a real anvil: coordinators as independent operators (their own
//! keys and state directories) commit and reveal 2-of-3 tasks; the agreeing are paid, a lying
//! executor is outvoted and slashed, a coordinator killed between commit and reveal reveals
//! after its restart, and a task without quorum expires and refunds its requester.

#[path = "support/chain.rs"]
mod chain_peer;
mod support;

use alloy::providers::Provider as _;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use chain_peer::{Chain, signer};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::Service;
use wasm_exec_chain::TaskRegistry;
use wasm_exec_chain::registry::block_time;
use wasm_exec_chain::requester::{
    Completion, Replication, TaskRequest, TaskStatus, set_executor, submit_replicated, task_status,
};
use wasm_exec_chain::writer::{commitment, fresh_salt};
use wasm_exec_chain::{Address, B256, DynProvider, Registry, U256, connect_http};
use wasm_exec_test_peers::KEYS;

const FIB: &str = "bafkreiesibz2ybgnmbptk3uq4lwwd2yh7njf2oqidqoxczgs6fvdqlv4je";
const ADD: &str = "bafkreic4y3temla33obbacyznk4penucufbdtaq5mcfju3jljlgm2lvhbi";
/// The three operators' keys (KEYS[1] is authorised by [`Chain::start`]); KEYS[5] is the liar.
const OPERATORS: [usize; 3] = [1, 3, 4];
const LIAR: usize = 5;
/// Seconds from now to a task's deadline: its commit window closes halfway, at 500 s, so a
/// reveal waits for all three commits unless a test moves the chain's clock.
const DEADLINE_SEC: u64 = 1000;

/// The registry as the account of `key` sees it.
fn registry_as(chain: &Chain, key: &str) -> Registry<DynProvider> {
    Registry::new(
        chain.contract,
        connect_http(&chain.anvil.url, signer(key)).expect("provider"),
    )
}

fn address(key: usize) -> Address {
    signer(KEYS[key]).address()
}

/// anvil with the registry, the operators and the liar authorised, a block every 200 ms.
fn start() -> (Chain, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let chain = Chain::start();
    let owner = registry_as(&chain, KEYS[0]);
    for key in [OPERATORS[1], OPERATORS[2], LIAR] {
        chain
            .rt
            .block_on(set_executor(&owner, address(key), true))
            .expect("authorise");
    }
    let miner = chain.keep_mining(Duration::from_millis(200));
    (chain, miner)
}

/// The coordinator of operator `key`, one confirmation.
fn operator(chain: &Chain, state: &std::path::Path, key: usize) -> Service {
    Service::start(chain.coordinator(state, KEYS[key], 1))
}

/// Submits a 2-of-3 task with `fee` wei, its deadline [`DEADLINE_SEC`] from the chain's now.
fn submit(chain: &Chain, cid: &str, entry: &str, input: &str, fee: u64) -> U256 {
    let now = chain.rt.block_on(block_time(&chain.reader)).expect("time");
    let request = TaskRequest {
        wasm_cid: cid.into(),
        entry: entry.into(),
        input: input.into(),
        fuel: 0,
        timeout_sec: 0,
    };
    let replication = Replication {
        replicas: 3,
        quorum: 2,
        deadline: now + DEADLINE_SEC,
        fee: U256::from(fee),
    };
    chain
        .rt
        .block_on(submit_replicated(&chain.requester, &request, &replication))
        .expect("submit")
        .task_id
}

fn status(chain: &Chain, id: U256) -> TaskStatus {
    chain
        .rt
        .block_on(task_status(&chain.requester, id))
        .expect("status")
}

/// Waits (30 s at most) until `done` holds for task `id`'s status; returns that status.
fn wait_status(
    chain: &Chain,
    id: U256,
    what: &str,
    done: impl Fn(&TaskStatus) -> bool,
) -> TaskStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(chain, id);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "task {id}: {what}: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn completed(chain: &Chain, id: U256) -> Completion {
    let status = wait_status(chain, id, "completed", |s| s.status == "completed");
    let all = chain.completions(id);
    assert_eq!(all.len(), 1, "one TaskCompleted for task {id}: {all:?}");
    assert_eq!(status.completion.as_ref(), Some(&all[0]));
    all[0].clone()
}

fn credits(chain: &Chain, account: Address) -> U256 {
    chain
        .rt
        .block_on(chain.requester.credits(account).call().into_future())
        .expect("credits")
}

/// Moves the chain's clock `secs` on and mines a block at the new time.
fn advance(chain: &Chain, secs: u64) {
    chain.rpc("evm_increaseTime", json!([secs]));
    chain.mine(1);
}

/// The `E` events of `executor` for task `id`.
fn events_of<E: SolEvent>(chain: &Chain, id: U256, executor: Address) -> usize {
    let filter = Filter::new()
        .address(chain.contract)
        .event_signature(E::SIGNATURE_HASH)
        .topic1(B256::from(id))
        .topic2(executor.into_word())
        .from_block(0);
    chain
        .rt
        .block_on(chain.reader.get_logs(&filter))
        .expect("logs")
        .len()
}

fn part_of(status: &TaskStatus, key: usize) -> Option<&'static str> {
    let executor = address(key);
    status
        .parts
        .iter()
        .find(|p| p.executor == executor)
        .map(|p| p.part)
}

/// `coordinator chain ...` as the requester (KEYS[2]); its stdout as JSON.
fn chain_command(chain: &Chain, args: &[&str]) -> Value {
    let state = tempfile::tempdir().expect("tempdir");
    let out = support::command(state.path())
        .env("COORDINATOR_CHAIN_RPC_URL", &chain.anvil.url)
        .env("COORDINATOR_CONTRACT_ADDRESS", chain.contract.to_string())
        .env("COORDINATOR_CHAIN_KEY_FILE", chain.key_file(KEYS[2]))
        .env("COORDINATOR_CHAIN_POLL_MS", "100")
        .arg("chain")
        .args(args)
        .output()
        .expect("run coordinator chain");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn three_operators_complete_each_2_of_3_task_once_and_the_agreeing_are_paid() {
    let (chain, miner) = start();
    let states: Vec<_> = OPERATORS
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let running: Vec<Service> = OPERATORS
        .iter()
        .zip(&states)
        .map(|(key, state)| operator(&chain, state.path(), *key))
        .collect();
    let tasks = [
        (submit(&chain, FIB, "fib", "[12]", 3000), "144"),
        (submit(&chain, ADD, "add", "[5, 7]", 3000), "12"),
        (submit(&chain, FIB, "fib", "[20]", 3000), "6765"),
    ];
    let operators: BTreeSet<Address> = OPERATORS.iter().map(|k| address(*k)).collect();
    let mut earned = std::collections::BTreeMap::<Address, u64>::new();
    for (id, expected) in tasks {
        let done = completed(&chain, id);
        assert!(done.ok, "{done:?}");
        assert_eq!(done.result, expected);
        assert_eq!(done.agreeing.len(), 2, "a quorum of two: {done:?}");
        for executor in &done.agreeing {
            assert!(
                operators.contains(executor),
                "{executor} is not an operator"
            );
            *earned.entry(*executor).or_default() += 1500;
        }
        let status = status(&chain, id);
        assert_eq!(status.commits, 3, "all three committed: {status:?}");
    }
    for executor in &operators {
        let owed = earned.get(executor).copied().unwrap_or(0);
        assert_eq!(credits(&chain, *executor), U256::from(owed), "{executor}");
    }
    assert_a_repeat_is_committed_from_the_result_cache(&chain, &running);

    let printed = chain_command(
        &chain,
        &[
            "submit",
            "--cid",
            FIB,
            "--entry",
            "fib",
            "--args",
            "[10]",
            "--replicas",
            "3",
            "--quorum",
            "2",
            "--fee",
            "3000",
            "--deadline",
            "600",
            "--wait",
        ],
    );
    assert_eq!(printed["result"], "55", "{printed}");
    let agreeing = printed["agreeing"].as_array().expect("agreeing");
    assert_eq!(agreeing.len(), 2, "{printed}");
    let id = printed["task_id"].as_str().expect("task_id");
    let shown = chain_command(&chain, &["status", id]);
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(
        (shown["replicas"].as_u64(), shown["quorum"].as_u64()),
        (Some(3), Some(2))
    );
    let parts: Vec<&str> = shown["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter_map(|p| p["part"].as_str())
        .collect();
    assert_eq!(
        parts.iter().filter(|p| **p == "agreed").count(),
        2,
        "{shown}"
    );
    assert_eq!(shown["outcome"]["agreeing"], printed["agreeing"], "{shown}");
    miner.store(false, Ordering::Relaxed);
}

/// fib(12) again, as the first task: every operator that takes it answers it from its result
/// cache (a cached result is the same bits a run gives, so it may be committed), and it
/// completes with the same result and a quorum.
fn assert_a_repeat_is_committed_from_the_result_cache(chain: &Chain, running: &[Service]) {
    let again = submit(chain, FIB, "fib", "[12]", 3000);
    let done = completed(chain, again);
    assert!(done.ok && done.result == "144", "{done:?}");
    assert_eq!(done.agreeing.len(), 2, "{done:?}");
    let hits = running
        .iter()
        .filter(|service| {
            let metrics = support::get(&service.base, "/metrics", None).body;
            let text = metrics.as_str().unwrap_or_default().to_owned();
            text.contains("wasm_exec_result_cache_total{outcome=\"hit\"} 1")
        })
        .count();
    assert!(
        hits >= 2,
        "{hits} operators answered the repeat from their cache"
    );
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn a_lying_executor_is_outvoted_recorded_and_its_stake_goes_to_the_requester() {
    let (chain, miner) = start();
    let owner = registry_as(&chain, KEYS[0]);
    let stake = U256::from(1000);
    chain
        .rt
        .block_on(async {
            owner
                .setStakeRequired(alloy::primitives::Uint::from(1000u64))
                .send()
                .await?
                .get_receipt()
                .await?;
            for key in [OPERATORS[0], OPERATORS[1], LIAR] {
                registry_as(&chain, KEYS[key])
                    .depositStake()
                    .value(U256::from(5000))
                    .send()
                    .await?
                    .get_receipt()
                    .await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .expect("stake");
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let _honest = [
        operator(&chain, states[0].path(), OPERATORS[0]),
        operator(&chain, states[1].path(), OPERATORS[1]),
    ];
    let id = submit(&chain, FIB, "fib", "[12]", 2000);
    wait_status(&chain, id, "both honest committed", |s| s.commits == 2);

    // The liar's commit and reveal go into one block: the reveal is valid right after the
    // third commit, before the honest two can see it, so the liar reveals first.
    chain.rpc("evm_setAutomine", json!([false]));
    let liar = registry_as(&chain, KEYS[LIAR]);
    let (wrong, salt) = (B256::repeat_byte(0x66), fresh_salt());
    chain
        .rt
        .block_on(async {
            let nonce = liar.provider().get_transaction_count(address(LIAR)).await?;
            let commit = liar
                .commitResult(id, commitment(wrong, address(LIAR), salt))
                .nonce(nonce)
                .gas(300_000)
                .send()
                .await?;
            let reveal = liar
                .revealResult(id, true, "145".into(), wrong, salt)
                .nonce(nonce + 1)
                .gas(500_000)
                .send()
                .await?;
            chain.mine(1);
            commit.get_receipt().await?;
            reveal.get_receipt().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .expect("the liar's commit and reveal");
    chain.rpc("evm_setAutomine", json!([true]));

    let done = completed(&chain, id);
    assert_eq!(done.result, "144", "the honest result won: {done:?}");
    let agreeing: BTreeSet<_> = done.agreeing.iter().copied().collect();
    assert_eq!(
        agreeing,
        BTreeSet::from([address(OPERATORS[0]), address(OPERATORS[1])])
    );
    let status = status(&chain, id);
    assert_eq!(part_of(&status, LIAR), Some("disagreed"), "{status:?}");
    let record = chain
        .rt
        .block_on(chain.requester.records(address(LIAR)).call().into_future())
        .expect("record");
    assert_eq!((record.agreed, record.disagreed), (0, 1));
    assert_eq!(
        credits(&chain, address(2)),
        stake,
        "the liar's stake went to the requester"
    );
    let left = chain
        .rt
        .block_on(chain.requester.stakes(address(LIAR)).call().into_future())
        .expect("stake");
    assert_eq!(left.deposited, 4000);
    assert_eq!(credits(&chain, address(LIAR)), U256::ZERO);
    for key in [OPERATORS[0], OPERATORS[1]] {
        assert_eq!(
            credits(&chain, address(key)),
            U256::from(1000),
            "{key}'s half of the fee"
        );
    }
    miner.store(false, Ordering::Relaxed);
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[test]
fn killed_between_commit_and_reveal_an_operator_reveals_once_and_without_quorum_a_task_expires() {
    let (chain, miner) = start();
    let (a_state, b_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = operator(&chain, a_state.path(), OPERATORS[0]);
    let b = operator(&chain, b_state.path(), OPERATORS[1]);

    // One of three down: the two commit, then wait for the commit window to close.
    let id = submit(&chain, FIB, "fib", "[11]", 3000);
    let both = wait_status(&chain, id, "two committed", |s| s.commits == 2);
    assert_eq!(part_of(&both, OPERATORS[0]), Some("committed"));
    assert_eq!(a.signal_and_wait("KILL"), None);
    let a = operator(&chain, a_state.path(), OPERATORS[0]);
    advance(&chain, DEADLINE_SEC / 2 + 10);
    let done = completed(&chain, id);
    assert_eq!(done.result, "89");
    let agreeing: BTreeSet<_> = done.agreeing.iter().copied().collect();
    assert_eq!(
        agreeing,
        BTreeSet::from([address(OPERATORS[0]), address(OPERATORS[1])])
    );
    for key in [OPERATORS[0], OPERATORS[1]] {
        let executor = address(key);
        assert_eq!(
            events_of::<TaskRegistry::ResultCommitted>(&chain, id, executor),
            1
        );
        assert_eq!(
            events_of::<TaskRegistry::ResultRevealed>(&chain, id, executor),
            1
        );
    }
    assert!(
        a.logged("revealed the result on chain", Duration::from_secs(10)),
        "the restarted operator did not reveal"
    );
    let log = a.log.lock().unwrap().clone();
    assert!(
        !log.contains("committed to the result on chain"),
        "committed again after the restart: {log}"
    );

    // Two of three down: one commit and one reveal are no quorum; after the deadline anyone
    // may expire the task, and the requester gets the fee back.
    drop(b);
    let id = submit(&chain, FIB, "fib", "[13]", 3000);
    wait_status(&chain, id, "one committed", |s| s.commits == 1);
    advance(&chain, DEADLINE_SEC / 2 + 10);
    wait_status(&chain, id, "revealed", |s| {
        part_of(s, OPERATORS[0]) == Some("revealed")
    });
    let before = credits(&chain, address(2));
    advance(&chain, DEADLINE_SEC / 2 + 10);
    chain
        .rt
        .block_on(async {
            let pending = chain.requester.expireTask(id).send().await?;
            pending.get_receipt().await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })
        .expect("expire");
    let expired = status(&chain, id);
    assert_eq!(expired.status, "expired", "{expired:?}");
    assert!(chain.completions(id).is_empty(), "no TaskCompleted");
    assert_eq!(
        credits(&chain, address(2)),
        before + U256::from(3000),
        "refunded"
    );
    miner.store(false, Ordering::Relaxed);
}

#[test]
fn an_operators_default_limits_do_not_decide_a_replicated_result() {
    let (chain, miner) = start();
    let (a_state, b_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Under its own default of 1 ms (compilation included) operator A would time out every
    // task that sets no limit; a replicated task's limit is the task's or the protocol's.
    let mut frugal = chain.coordinator(a_state.path(), KEYS[OPERATORS[0]], 1);
    frugal.env("TIMEOUT_SEC", "0.001").env("MAX_MEMORY_MB", "1");
    let _a = Service::start(frugal);
    let _b = operator(&chain, b_state.path(), OPERATORS[1]);
    let id = submit(&chain, FIB, "fib", "[15]", 0);
    wait_status(&chain, id, "two committed", |s| s.commits == 2);
    advance(&chain, DEADLINE_SEC / 2 + 10);
    // With the third replica absent, the quorum of two needs A's result to agree with B's.
    let done = completed(&chain, id);
    assert_eq!(done.result, "610");
    let agreeing: BTreeSet<_> = done.agreeing.iter().copied().collect();
    assert_eq!(
        agreeing,
        BTreeSet::from([address(OPERATORS[0]), address(OPERATORS[1])])
    );
    miner.store(false, Ordering::Relaxed);
}

#[test]
fn an_operator_whose_maxima_are_below_a_tasks_limits_refuses_it_and_the_others_decide() {
    let (chain, miner) = start();
    let states: Vec<_> = OPERATORS
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let (low, state) = (OPERATORS[2], &states[2]);
    // Every replicated task runs with the protocol's 256 MiB; this operator allows 128.
    let mut capped = chain.coordinator(state.path(), KEYS[low], 1);
    capped
        .env("COORDINATOR_MAX_TASK_MEMORY_MB", "128")
        .env("MAX_MEMORY_MB", "64");
    let capped = Service::start(capped);
    let _able: Vec<Service> = [OPERATORS[0], OPERATORS[1]]
        .iter()
        .zip(&states)
        .map(|(key, state)| operator(&chain, state.path(), *key))
        .collect();
    let id = submit(&chain, FIB, "fib", "[14]", 3000);
    assert!(
        capped.logged("refused, left to others", Duration::from_secs(30)),
        "the capped operator did not refuse the task"
    );
    wait_status(&chain, id, "two committed", |s| s.commits == 2);
    // The third replica never commits: the reveals wait for the commit window to close.
    advance(&chain, DEADLINE_SEC / 2 + 10);
    let done = completed(&chain, id);
    assert_eq!(done.result, "377");
    let agreeing: BTreeSet<_> = done.agreeing.iter().copied().collect();
    assert_eq!(
        agreeing,
        BTreeSet::from([address(OPERATORS[0]), address(OPERATORS[1])])
    );
    let status = status(&chain, id);
    assert_eq!(status.commits, 2, "{status:?}");
    assert_eq!(
        part_of(&status, low),
        None,
        "the capped operator took no part, so it is recorded neither as disagreeing nor as missed: {status:?}"
    );
    assert_eq!(
        events_of::<TaskRegistry::ResultCommitted>(&chain, id, address(low)),
        0
    );
    let metrics = support::get_text(&capped.base, "/metrics").1;
    assert!(
        metrics.contains("wasm_exec_chain_refused_total 1"),
        "{metrics}"
    );
    let log = capped.log.lock().unwrap().clone();
    assert!(
        log.contains("COORDINATOR_MAX_TASK_MEMORY_MB"),
        "the refusal names the setting: {log}"
    );
    miner.store(false, Ordering::Relaxed);
}
