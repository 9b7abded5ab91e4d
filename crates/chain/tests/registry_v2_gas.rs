//! Gas per task of TaskRegistry v2 on a real anvil: 1-of-1 written directly and by
//! commit-reveal, 2-of-3 by commit-reveal, each one call per task and batched. Prints a table
//! (`cargo test -p wasm-exec-chain --test registry_v2_gas -- --nocapture`) and holds the batch
//! rules: a resent batch writes nothing, reveals of a settled task are skipped.

#[macro_use]
mod support;

use alloy::primitives::{B256, U256};
use support::{Claim, Fixture, commit, fixture, reveal};
use wasm_exec_chain::ChainError;
use wasm_exec_chain::registry::TaskRegistry;

/// Tasks per batch.
const BATCH: usize = 10;

/// Gas of each step, one task.
#[derive(Default, Debug)]
struct Steps {
    submit: u64,
    commits: Vec<u64>,
    reveals: Vec<u64>,
}

impl Steps {
    fn total(&self) -> u64 {
        self.submit + self.commits.iter().sum::<u64>() + self.reveals.iter().sum::<u64>()
    }
}

async fn submit_v1(f: &Fixture) -> (U256, u64) {
    let receipt = send!(f.requester.registry.submitTask_0(
        "bafkreiabc".into(),
        "fib".into(),
        "[12]".into(),
        1_000_000,
        5
    ))
    .await
    .expect("submit");
    let id = receipt
        .decoded_log::<TaskRegistry::TaskSubmitted>()
        .expect("event")
        .taskId;
    (id, receipt.gas_used)
}

/// One k-of-n task by single calls; `reveals` of the `replicas` executors reveal.
async fn one_by_one(f: &Fixture, replicas: u8, quorum: u8) -> Steps {
    let (task, submit) = f.submit_with_gas(replicas, quorum, 3_600, 3_000).await;
    let mut steps = Steps {
        submit,
        ..Steps::default()
    };
    let claim = Claim::new("144", 1);
    for who in &f.executors[..replicas as usize] {
        steps
            .commits
            .push(commit(who, task, &claim).await.expect("commit"));
    }
    for who in &f.executors[..quorum as usize] {
        steps
            .reveals
            .push(reveal(who, task, &claim).await.expect("reveal").gas_used);
    }
    assert_eq!(
        f.owner
            .registry
            .taskStatus(task)
            .call()
            .await
            .expect("status"),
        2
    );
    steps
}

/// `BATCH` k-of-n tasks by batches: one `commitResults` per executor, one `revealResults` per
/// revealing executor; gas per task.
async fn batched(f: &Fixture, replicas: u8, quorum: u8) -> Steps {
    let mut tasks = Vec::new();
    let mut submit = 0;
    for _ in 0..BATCH {
        let (task, gas) = f.submit_with_gas(replicas, quorum, 3_600, 3_000).await;
        tasks.push(task);
        submit += gas;
    }
    let claim = Claim::new("144", 1);
    let per_task = |gas: u64| gas / BATCH as u64;
    let mut steps = Steps {
        submit: per_task(submit),
        ..Steps::default()
    };
    for who in &f.executors[..replicas as usize] {
        let commitments = vec![claim.commitment(who.address); BATCH];
        let call = who
            .registry
            .commitResults(tasks.clone(), commitments.clone());
        let receipt = send!(call).await.expect("commit batch");
        steps.commits.push(per_task(receipt.gas_used));
        let again = who.registry.commitResults(tasks.clone(), commitments);
        assert_eq!(
            again.call().await.expect("resend"),
            U256::ZERO,
            "a resent batch writes nothing"
        );
    }
    let reveals = reveals_of(&tasks, &claim);
    for who in &f.executors[..quorum as usize] {
        let receipt = send!(who.registry.revealResults(reveals.clone()))
            .await
            .expect("reveal batch");
        steps.reveals.push(per_task(receipt.gas_used));
    }
    let completed = f.executors[..replicas as usize]
        .get(quorum as usize)
        .map(|late| late.registry.revealResults(reveals.clone()));
    if let Some(late) = completed {
        assert_eq!(
            late.call().await.expect("late batch"),
            U256::ZERO,
            "settled tasks are skipped"
        );
    }
    for task in tasks {
        assert_completed(f, task).await;
    }
    steps
}

/// The same reveal for each of `tasks`.
fn reveals_of(tasks: &[U256], claim: &Claim) -> Vec<TaskRegistry::Reveal> {
    tasks
        .iter()
        .map(|&task_id| TaskRegistry::Reveal {
            taskId: task_id,
            ok: claim.ok,
            result: claim.result.clone(),
            resultHash: claim.hash,
            salt: claim.salt,
        })
        .collect()
}

async fn assert_completed(f: &Fixture, task: U256) {
    let status = f.owner.registry.taskStatus(task).call().await;
    assert_eq!(status.expect("status"), 2, "task {task} completed");
}

/// A v1 task written directly: one task, then `BATCH` by `submitResults` (gas per task).
async fn direct(f: &Fixture) -> (Steps, Steps) {
    let e = &f.executors[0];
    let (task, submit) = submit_v1(f).await;
    let call = e
        .registry
        .submitResult(task, true, "144".into(), B256::ZERO);
    let write = send!(call).await.expect("result").gas_used;
    let mut ids = Vec::new();
    let mut submits = 0;
    for _ in 0..BATCH {
        let (id, gas) = submit_v1(f).await;
        ids.push(id);
        submits += gas;
    }
    let results = vec!["144".into(); BATCH];
    let call = e.registry.submitResults(
        ids.clone(),
        vec![true; BATCH],
        results,
        vec![B256::ZERO; BATCH],
    );
    let batch = send!(call).await.expect("batch").gas_used;
    for id in ids {
        assert_completed(f, id).await;
    }
    let one = Steps {
        submit,
        commits: vec![],
        reveals: vec![write],
    };
    let many = Steps {
        submit: submits / BATCH as u64,
        commits: vec![],
        reveals: vec![batch / BATCH as u64],
    };
    (one, many)
}

#[tokio::test]
async fn gas_per_task_for_one_of_one_and_two_of_three() {
    let f = fixture().await;
    let (one, many) = direct(&f).await;
    // Every step first on fresh accounts, then measured with the executors' records already
    // set (a zero slot costs 22,100 gas to set, a set one 5,000 to change).
    let first = one_by_one(&f, 3, 2).await;
    println!(
        "2-of-3 one call each, no record yet: {first:?}, total {}",
        first.total()
    );
    batched(&f, 1, 1).await;
    let rows = [
        ("1-of-1 direct `submitResult`", one),
        ("1-of-1 direct `submitResults`, batches of 10", many),
        (
            "1-of-1 commit-reveal, one call each",
            one_by_one(&f, 1, 1).await,
        ),
        (
            "1-of-1 commit-reveal, batches of 10",
            batched(&f, 1, 1).await,
        ),
        ("2-of-3, one call each", one_by_one(&f, 3, 2).await),
        ("2-of-3, batches of 10", batched(&f, 3, 2).await),
    ];
    println!(
        "| task | submit | commit, each executor | reveal or write, each (the last settles) | total |"
    );
    println!("| --- | ---: | --- | --- | ---: |");
    for (name, steps) in &rows {
        let (submit, commits, reveals) = (steps.submit, &steps.commits, &steps.reveals);
        println!(
            "| {name} | {submit} | {commits:?} | {reveals:?} | {} |",
            steps.total()
        );
    }
    // Loose ceilings, so that a change that makes commit or reveal much dearer is noticed.
    for (name, steps) in &rows {
        let within = |gas: &[u64], max| gas.iter().all(|&g| g < max);
        assert!(within(&steps.commits, 120_000), "{name}: {steps:?}");
        assert!(within(&steps.reveals, 250_000), "{name}: {steps:?}");
    }
}
