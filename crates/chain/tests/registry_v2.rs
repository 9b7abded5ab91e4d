//! TaskRegistry v2 on a real anvil: k-of-n commit-reveal, escrow and its split, stake slashing,
//! deadlines and expiry, the bounds, and the 1-of-1 default, with one key per executor.

#[macro_use]
mod support;

use alloy::primitives::aliases::U40;
use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use support::{Claim, commit, completions, fixture, reveal, reverted};
use wasm_exec_chain::ChainError;
use wasm_exec_chain::registry::TaskRegistry::{self, TaskRegistryErrors};

/// `Part` in the contract.
const COMMITTED: u8 = 1;
const AGREED: u8 = 3;
const DISAGREED: u8 = 4;
const MISSED: u8 = 5;

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn two_of_three_completes_once_with_the_agreed_result_and_pays_the_agreeing_two() {
    let f = fixture().await;
    let [a, b, c, d] = &f.executors[..] else {
        unreachable!()
    };
    let fee = 1_000_001_u128;
    let task = f.submit(3, 2, 600, fee).await;
    let r = &f.owner.registry;
    assert!(r.acceptsCommits(task).call().await.expect("view"));
    let honest = |salt| Claim::new("144", salt);
    commit(a, task, &honest(1)).await.expect("a commits");
    // Nobody reveals while commits are open and not all are in.
    assert!(matches!(
        reverted(reveal(a, task, &honest(1)).await),
        TaskRegistryErrors::RevealTooEarly(_)
    ));
    assert!(matches!(
        reverted(commit(a, task, &honest(9)).await),
        TaskRegistryErrors::AlreadyCommitted(_)
    ));
    commit(b, task, &honest(2)).await.expect("b commits");
    commit(c, task, &honest(3)).await.expect("c commits");
    assert!(!r.acceptsCommits(task).call().await.expect("view"));
    assert_eq!(
        reverted(commit(d, task, &honest(4)).await),
        TaskRegistryErrors::CommitsFull(TaskRegistry::CommitsFull {
            taskId: task,
            replicas: U256::from(3)
        })
    );
    let entry = r.entryOf(task, a.address).call().await.expect("entryOf");
    assert_eq!(
        (entry.part, entry.hash),
        (COMMITTED, honest(1).commitment(a.address))
    );

    let first = reveal(a, task, &honest(1)).await.expect("a reveals");
    assert!(first.decoded_log::<TaskRegistry::TaskCompleted>().is_none());
    let second = reveal(b, task, &honest(2)).await.expect("b reveals");
    let done = second
        .decoded_log::<TaskRegistry::TaskCompleted>()
        .expect("the second agreeing reveal completes the task");
    assert_eq!(
        (done.ok, done.result.as_str(), done.envelopeHash),
        (true, "144", honest(0).hash)
    );
    assert_eq!(done.agreeing, [a.address, b.address]);
    assert_eq!(done.executor, b.address);
    // The third reveal comes too late: the task is settled and c is recorded as missed.
    assert!(matches!(
        reverted(reveal(c, task, &honest(3)).await),
        TaskRegistryErrors::AlreadyCompleted(_)
    ));
    assert_eq!(completions(&f, task).await.len(), 1, "TaskCompleted once");

    let stored = r.getTask(task).call().await.expect("getTask");
    assert_eq!(
        (stored.status, stored.result.as_str(), stored.fee),
        (2, "144", fee)
    );
    for (who, part, record) in [
        (a, AGREED, (1, 0, 0)),
        (b, AGREED, (1, 0, 0)),
        (c, MISSED, (0, 0, 1)),
    ] {
        let entry = r.entryOf(task, who.address).call().await.expect("entryOf");
        assert_eq!(entry.part, part);
        let counts = r.records(who.address).call().await.expect("records");
        assert_eq!((counts.agreed, counts.disagreed, counts.missed), record);
    }
    // The fee split: 500,000 wei each, the odd wei back to the requester; c gets nothing.
    let share = U256::from(fee / 2);
    for (who, credit) in [
        (a.address, share),
        (b.address, share),
        (c.address, U256::ZERO),
        (f.requester.address, U256::from(1)),
    ] {
        assert_eq!(r.credits(who).call().await.expect("credits"), credit);
    }
    // Claiming pays the credit out (net of the claim's gas) and clears it.
    let before = f.provider.get_balance(a.address).await.expect("balance");
    let claim = send!(a.registry.claim()).await.expect("claim");
    let after = f.provider.get_balance(a.address).await.expect("balance");
    let gas = U256::from(claim.gas_used) * U256::from(claim.effective_gas_price);
    assert_eq!(after + gas - before, share);
    assert!(matches!(
        reverted(send!(a.registry.claim()).await),
        TaskRegistryErrors::NothingToClaim(_)
    ));
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn a_liar_is_recorded_and_its_stake_goes_to_the_requester() {
    let f = fixture().await;
    let [a, b, liar, _] = &f.executors[..] else {
        unreachable!()
    };
    let r = &f.owner.registry;
    let stake = 10_u128.pow(18);
    send!(r.setStakeRequired(alloy::primitives::aliases::U96::from(stake)))
        .await
        .expect("set stake");
    let task = f.submit(3, 2, 600, 0).await;
    assert!(matches!(
        reverted(commit(a, task, &Claim::new("144", 1)).await),
        TaskRegistryErrors::StakeTooLow(_)
    ));
    for who in [a, b, liar] {
        send!(who.registry.depositStake().value(U256::from(stake)))
            .await
            .expect("deposit");
    }
    commit(a, task, &Claim::new("144", 1))
        .await
        .expect("commit");
    commit(b, task, &Claim::new("144", 2))
        .await
        .expect("commit");
    commit(liar, task, &Claim::new("999", 3))
        .await
        .expect("commit");
    // Committed stake is locked.
    assert!(matches!(
        reverted(send!(a.registry.withdrawStake(U256::from(1))).await),
        TaskRegistryErrors::StakeLocked(_)
    ));
    reveal(liar, task, &Claim::new("999", 3))
        .await
        .expect("the liar reveals first");
    reveal(a, task, &Claim::new("144", 1))
        .await
        .expect("reveal");
    let receipt = reveal(b, task, &Claim::new("144", 2))
        .await
        .expect("reveal");
    let done = receipt
        .decoded_log::<TaskRegistry::TaskCompleted>()
        .expect("completed");
    assert_eq!(
        (done.result.as_str(), done.agreeing.clone()),
        ("144", vec![a.address, b.address])
    );
    let slashed = receipt
        .decoded_log::<TaskRegistry::StakeSlashed>()
        .expect("a StakeSlashed");
    assert_eq!(
        (slashed.executor, slashed.requester, slashed.amount),
        (liar.address, f.requester.address, U256::from(stake))
    );
    let entry = r.entryOf(task, liar.address).call().await.expect("entry");
    assert_eq!(entry.part, DISAGREED);
    let counts = r.records(liar.address).call().await.expect("records");
    assert_eq!((counts.agreed, counts.disagreed, counts.missed), (0, 1, 0));
    let liar_stake = r.stakes(liar.address).call().await.expect("stakes");
    assert_eq!((liar_stake.deposited, liar_stake.locked), (0, 0));
    assert_eq!(
        r.credits(f.requester.address)
            .call()
            .await
            .expect("credits"),
        U256::from(stake)
    );
    // The honest keep theirs and may withdraw it.
    send!(a.registry.withdrawStake(U256::from(stake)))
        .await
        .expect("withdraw");
    let a_stake = r.stakes(a.address).call().await.expect("stakes");
    assert_eq!((a_stake.deposited, a_stake.locked), (0, 0));
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn a_copier_that_did_not_commit_cannot_reveal_and_a_wrong_salt_or_hash_reverts() {
    let f = fixture().await;
    let [a, b, copier, _] = &f.executors[..] else {
        unreachable!()
    };
    let task = f.submit(2, 2, 600, 0).await;
    commit(a, task, &Claim::new("144", 1))
        .await
        .expect("commit");
    commit(b, task, &Claim::new("144", 2))
        .await
        .expect("commit");
    reveal(a, task, &Claim::new("144", 1))
        .await
        .expect("reveal");
    // The copier saw a's reveal and sends the same values.
    assert_eq!(
        reverted(reveal(copier, task, &Claim::new("144", 1)).await),
        TaskRegistryErrors::NotCommitted(TaskRegistry::NotCommitted {
            taskId: task,
            executor: copier.address
        })
    );
    // Nor may it replay a's commitment as its own: the commitment names the executor.
    send!(
        copier
            .registry
            .commitResult(task, Claim::new("144", 1).commitment(a.address))
    )
    .await
    .map(|_| ())
    .expect_err("commits are full");
    let mut wrong_salt = Claim::new("144", 2);
    wrong_salt.salt = B256::repeat_byte(7);
    let mut wrong_hash = Claim::new("144", 2);
    wrong_hash.hash = B256::repeat_byte(8);
    for bad in [wrong_salt, wrong_hash] {
        assert!(matches!(
            reverted(reveal(b, task, &bad).await),
            TaskRegistryErrors::CommitmentMismatch(_)
        ));
    }
    assert!(matches!(
        reverted(send!(f.requester.registry.commitResult(task, B256::ZERO)).await),
        TaskRegistryErrors::NotExecutor(_)
    ));
    reveal(b, task, &Claim::new("144", 2))
        .await
        .expect("reveal");
    assert_eq!(completions(&f, task).await.len(), 1);
}

#[tokio::test]
async fn with_one_silent_two_of_three_completes_once_the_commit_window_closes() {
    let f = fixture().await;
    let [a, b, late, _] = &f.executors[..] else {
        unreachable!()
    };
    let task = f.submit(3, 2, 600, 0).await;
    let r = &f.owner.registry;
    let terms = r.getTask(task).call().await.expect("getTask");
    // Half the deadline from the submission's block; `now` may be a block (a second) later.
    let left = terms.commitEnd.to::<u64>() - f.now().await;
    assert!(
        (298..=300).contains(&left),
        "half the deadline: {left} s left"
    );
    commit(a, task, &Claim::new("144", 1))
        .await
        .expect("commit");
    commit(b, task, &Claim::new("144", 2))
        .await
        .expect("commit");
    f.advance(300).await;
    assert!(!r.acceptsCommits(task).call().await.expect("view"));
    assert!(matches!(
        reverted(commit(late, task, &Claim::new("144", 3)).await),
        TaskRegistryErrors::CommitWindowClosed(_)
    ));
    reveal(a, task, &Claim::new("144", 1))
        .await
        .expect("reveal");
    let done = reveal(b, task, &Claim::new("144", 2))
        .await
        .expect("reveal")
        .decoded_log::<TaskRegistry::TaskCompleted>()
        .expect("completed");
    assert_eq!(done.agreeing, [a.address, b.address]);
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn with_two_silent_the_task_expires_and_the_requester_is_refunded() {
    let f = fixture().await;
    let [a, b, _, _] = &f.executors[..] else {
        unreachable!()
    };
    let fee = 5_000_u128;
    let task = f.submit(3, 2, 600, fee).await;
    let r = &f.owner.registry;
    commit(a, task, &Claim::new("144", 1))
        .await
        .expect("commit");
    commit(b, task, &Claim::new("144", 2))
        .await
        .expect("commit");
    f.advance(300).await;
    reveal(a, task, &Claim::new("144", 1))
        .await
        .expect("reveal");
    assert!(matches!(
        reverted(send!(r.expireTask(task)).await),
        TaskRegistryErrors::DeadlineNotReached(_)
    ));
    f.advance(300).await;
    assert!(matches!(
        reverted(reveal(b, task, &Claim::new("144", 2)).await),
        TaskRegistryErrors::DeadlinePassed(_)
    ));
    // Anyone may expire it.
    let expired = send!(f.executors[3].registry.expireTask(task))
        .await
        .expect("expire")
        .decoded_log::<TaskRegistry::TaskExpired>()
        .expect("TaskExpired");
    assert_eq!(
        (expired.requester, expired.refund),
        (f.requester.address, U256::from(fee))
    );
    assert_eq!(r.taskStatus(task).call().await.expect("status"), 3);
    assert_eq!(
        r.credits(f.requester.address)
            .call()
            .await
            .expect("credits"),
        U256::from(fee)
    );
    assert_eq!(
        r.records(b.address).call().await.expect("records").missed,
        1
    );
    assert!(completions(&f, task).await.is_empty());
    for late in [
        reveal(b, task, &Claim::new("144", 2)).await.map(|_| ()),
        commit(b, task, &Claim::new("144", 2)).await.map(|_| ()),
        send!(r.expireTask(task)).await.map(|_| ()),
    ] {
        assert!(matches!(
            reverted::<()>(late),
            TaskRegistryErrors::TaskExpiredAlready(_)
                | TaskRegistryErrors::AlreadyCommitted(_)
                | TaskRegistryErrors::NotExpirable(_)
        ));
    }
    send!(f.requester.registry.claim()).await.expect("claim");
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn replicas_and_quorum_are_bounded_and_the_deadline_is_in_the_future() {
    let f = fixture().await;
    let now = f.now().await;
    for (n, k) in [(0, 0), (1, 0), (2, 3), (17, 1), (17, 17)] {
        let call = f.requester.registry.submitTask_1(
            "c".into(),
            "e".into(),
            String::new(),
            0,
            0,
            n,
            k,
            U40::from(now + 100),
        );
        assert_eq!(
            reverted(send!(call).await),
            TaskRegistryErrors::BadReplication(TaskRegistry::BadReplication {
                replicas: U256::from(n),
                quorum: U256::from(k)
            })
        );
    }
    for (n, k) in [(1, 1), (16, 1), (16, 16)] {
        f.submit(n, k, 100, 0).await;
    }
    let past = f.requester.registry.submitTask_1(
        "c".into(),
        "e".into(),
        String::new(),
        0,
        0,
        3,
        2,
        U40::from(now),
    );
    assert!(matches!(
        reverted(send!(past).await),
        TaskRegistryErrors::BadDeadline(_)
    ));
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn the_five_argument_submit_is_one_of_one_written_directly() {
    let f = fixture().await;
    let e = &f.executors[0];
    let r = &f.owner.registry;
    send!(
        f.requester
            .registry
            .submitTask_0("c".into(), "e".into(), "[1]".into(), 0, 0)
    )
    .await
    .expect("submit");
    let task = U256::from(1);
    let stored = r.getTask(task).call().await.expect("getTask");
    assert_eq!(
        (
            stored.replicas,
            stored.quorum,
            stored.deadline.to::<u64>(),
            stored.fee
        ),
        (1, 1, 0, 0)
    );
    assert!(!r.acceptsCommits(task).call().await.expect("view"));
    assert!(matches!(
        reverted(commit(e, task, &Claim::new("1", 1)).await),
        TaskRegistryErrors::DirectOnly(_)
    ));
    let done = send!(e.registry.submitResult(task, true, "1".into(), B256::ZERO))
        .await
        .expect("result")
        .decoded_log::<TaskRegistry::TaskCompleted>()
        .expect("completed");
    assert_eq!(done.agreeing, [e.address]);

    // A paid 1-of-1 task may be written directly too; its fee goes to the executor.
    let paid = f.submit(1, 1, 100, 42).await;
    send!(e.registry.submitResult(paid, true, "1".into(), B256::ZERO))
        .await
        .expect("result");
    assert_eq!(
        r.credits(e.address).call().await.expect("credits"),
        U256::from(42)
    );
    // A replicated task may not.
    let replicated = f.submit(3, 2, 100, 0).await;
    assert!(matches!(
        reverted(
            send!(
                e.registry
                    .submitResult(replicated, true, "1".into(), B256::ZERO)
            )
            .await
        ),
        TaskRegistryErrors::NeedsCommitReveal(_)
    ));
}
