//! The TaskRegistry contract on a real anvil: deployment, tasks, results, and every revert.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use wasm_exec_chain::registry::TaskRegistry::{self, TaskRegistryErrors};
use wasm_exec_chain::{ChainError, Registry, connect_http, deploy};
use wasm_exec_test_peers::{Anvil, KEYS};

fn provider(anvil: &Anvil, key: &str) -> (DynProvider, Address) {
    let signer: PrivateKeySigner = key.parse().expect("key");
    let address = signer.address();
    (connect_http(&anvil.url, signer).expect("provider"), address)
}

/// Sends a call and waits for it to be mined, or returns the contract's revert.
macro_rules! send {
    ($call:expr) => {
        async {
            let receipt = $call
                .send()
                .await?
                .get_receipt()
                .await
                .map_err(|e| ChainError::Other(format!("waiting for the receipt: {e}")))?;
            Ok::<_, ChainError>(receipt)
        }
    };
}

struct Fixture {
    _anvil: Anvil,
    owner: Registry<DynProvider>,
    executor: Registry<DynProvider>,
    executor_address: Address,
    requester: Registry<DynProvider>,
    requester_address: Address,
}

async fn fixture() -> Fixture {
    let anvil = Anvil::start();
    let (owner, _) = provider(&anvil, KEYS[0]);
    let address = deploy(&owner).await.expect("deploy");
    let (executor, executor_address) = provider(&anvil, KEYS[1]);
    let (requester, requester_address) = provider(&anvil, KEYS[2]);
    let owner = TaskRegistry::new(address, owner);
    send!(owner.setExecutor(executor_address, true))
        .await
        .expect("authorise the executor");
    Fixture {
        _anvil: anvil,
        owner,
        executor: TaskRegistry::new(address, executor),
        executor_address,
        requester: TaskRegistry::new(address, requester),
        requester_address,
    }
}

fn reverted(result: Result<impl std::fmt::Debug, ChainError>) -> TaskRegistryErrors {
    match result {
        Err(ChainError::Reverted(e)) => e,
        other => panic!("expected a revert, got {other:?}"),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn a_task_is_submitted_then_completed_once_by_an_authorised_executor() {
    let f = fixture().await;
    let input = r#"{"entry":"fib","args":[12]}"#;
    let receipt = send!(f.requester.submitTask_0(
        "bafkreiabc".into(),
        "fib".into(),
        input.into(),
        1_000_000,
        5
    ))
    .await
    .expect("submit");
    let submitted = receipt
        .decoded_log::<TaskRegistry::TaskSubmitted>()
        .expect("a TaskSubmitted event");
    assert_eq!(submitted.taskId, U256::from(1));
    assert_eq!(submitted.requester, f.requester_address);
    assert_eq!(
        (
            submitted.wasmCid.as_str(),
            submitted.entry.as_str(),
            submitted.input.as_str()
        ),
        ("bafkreiabc", "fib", input)
    );
    assert_eq!((submitted.fuel, submitted.timeoutSec), (1_000_000, 5));
    assert_eq!(
        f.owner
            .taskStatus(U256::from(1))
            .call()
            .await
            .expect("status"),
        1
    );

    // Ids go up by one.
    let second = send!(
        f.requester
            .submitTask_0("c".into(), "e".into(), String::new(), 0, 0)
    )
    .await
    .expect("second task");
    let second = second
        .decoded_log::<TaskRegistry::TaskSubmitted>()
        .expect("event");
    assert_eq!(second.taskId, U256::from(2));

    let hash = keccak256(br#"{"ok":true,"result":144}"#);
    let receipt = send!(
        f.executor
            .submitResult(U256::from(1), true, "144".into(), hash)
    )
    .await
    .expect("result");
    let completed = receipt
        .decoded_log::<TaskRegistry::TaskCompleted>()
        .expect("a TaskCompleted event");
    assert_eq!(
        (completed.taskId, completed.executor, completed.ok),
        (U256::from(1), f.executor_address, true)
    );
    assert_eq!(
        (completed.result.as_str(), completed.envelopeHash),
        ("144", hash)
    );
    let task = f.owner.getTask(U256::from(1)).call().await.expect("task");
    assert_eq!(
        (task.status, task.ok, task.result.as_str()),
        (2, true, "144")
    );
    assert_eq!(task.inputHash, keccak256(input.as_bytes()));
    assert_eq!(task.requester, f.requester_address);

    // A second result for the same task is refused.
    let again = send!(
        f.executor
            .submitResult(U256::from(1), false, "0".into(), B256::ZERO)
    )
    .await;
    assert_eq!(
        reverted(again),
        TaskRegistryErrors::AlreadyCompleted(TaskRegistry::AlreadyCompleted {
            taskId: U256::from(1)
        })
    );
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn every_rule_reverts_with_its_own_error() {
    let f = fixture().await;
    let empty_cid = send!(
        f.requester
            .submitTask_0(String::new(), "fib".into(), "{}".into(), 0, 0)
    )
    .await;
    assert!(matches!(
        reverted(empty_cid),
        TaskRegistryErrors::EmptyCid(_)
    ));
    let empty_entry = send!(
        f.requester
            .submitTask_0("c".into(), String::new(), "{}".into(), 0, 0)
    )
    .await;
    assert!(matches!(
        reverted(empty_entry),
        TaskRegistryErrors::EmptyEntry(_)
    ));
    let big = "x".repeat(16 * 1024 + 1);
    let too_big = send!(f.requester.submitTask_0("c".into(), "e".into(), big, 0, 0)).await;
    match reverted(too_big) {
        TaskRegistryErrors::InputTooLarge(e) => {
            assert_eq!(
                (e.size, e.max),
                (U256::from(16 * 1024 + 1), U256::from(16 * 1024))
            )
        }
        other => panic!("expected InputTooLarge, got {other:?}"),
    }
    // Exactly 16 KiB is allowed.
    send!(
        f.requester
            .submitTask_0("c".into(), "e".into(), "y".repeat(16 * 1024), 0, 0)
    )
    .await
    .expect("16 KiB input");

    // Results: only authorised executors, only known tasks, capped values.
    let unauthorised = send!(
        f.requester
            .submitResult(U256::from(1), true, "1".into(), B256::ZERO)
    )
    .await;
    assert_eq!(
        reverted(unauthorised),
        TaskRegistryErrors::NotExecutor(TaskRegistry::NotExecutor {
            caller: f.requester_address
        })
    );
    let unknown = send!(
        f.executor
            .submitResult(U256::from(99), true, "1".into(), B256::ZERO)
    )
    .await;
    assert!(matches!(
        reverted(unknown),
        TaskRegistryErrors::UnknownTask(_)
    ));
    let long = send!(
        f.executor
            .submitResult(U256::from(1), true, "9".repeat(1025), B256::ZERO)
    )
    .await;
    assert!(matches!(
        reverted(long),
        TaskRegistryErrors::ResultTooLarge(_)
    ));

    // Only the owner authorises, and a withdrawn executor is refused.
    let not_owner = send!(f.requester.setExecutor(f.requester_address, true)).await;
    assert!(matches!(
        reverted(not_owner),
        TaskRegistryErrors::NotOwner(_)
    ));
    send!(f.owner.setExecutor(f.executor_address, false))
        .await
        .expect("withdraw");
    let withdrawn = send!(
        f.executor
            .submitResult(U256::from(1), true, "1".into(), B256::ZERO)
    )
    .await;
    assert!(matches!(
        reverted(withdrawn),
        TaskRegistryErrors::NotExecutor(_)
    ));
    assert!(
        !f.owner
            .executors(f.executor_address)
            .call()
            .await
            .expect("executors")
    );
}

#[allow(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
#[tokio::test]
async fn a_batch_writes_what_is_missing_and_skips_what_is_completed() {
    let f = fixture().await;
    for cid in ["a", "b", "c"] {
        send!(
            f.requester
                .submitTask_0(cid.into(), "e".into(), String::new(), 0, 0)
        )
        .await
        .expect("submit");
    }
    send!(
        f.executor
            .submitResult(U256::from(2), true, "first".into(), B256::ZERO)
    )
    .await
    .expect("one result alone");
    let ids = vec![U256::from(1), U256::from(2), U256::from(3)];
    let receipt = send!(f.executor.submitResults(
        ids.clone(),
        vec![true, true, false],
        vec!["1".into(), "again".into(), "trap: x".into()],
        vec![
            B256::repeat_byte(1),
            B256::repeat_byte(2),
            B256::repeat_byte(3)
        ]
    ))
    .await
    .expect("batch");
    let completed: Vec<U256> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|log| log.log_decode::<TaskRegistry::TaskCompleted>().ok())
        .map(|log| log.inner.data.taskId)
        .collect();
    assert_eq!(completed, [U256::from(1), U256::from(3)], "task 2 skipped");
    let two = f.owner.getTask(U256::from(2)).call().await.expect("task");
    assert_eq!(
        two.result, "first",
        "a completed task keeps its first result"
    );
    let three = f.owner.getTask(U256::from(3)).call().await.expect("task");
    assert_eq!((three.status, three.ok), (2, false));

    // The other rules hold for the whole batch.
    let unknown = send!(f.executor.submitResults(
        vec![U256::from(3), U256::from(9)],
        vec![true, true],
        vec!["x".into(), "y".into()],
        vec![B256::ZERO, B256::ZERO]
    ))
    .await;
    assert_eq!(
        reverted(unknown),
        TaskRegistryErrors::UnknownTask(TaskRegistry::UnknownTask {
            taskId: U256::from(9)
        })
    );
    let mismatch = send!(f.executor.submitResults(
        vec![U256::from(1)],
        vec![],
        vec!["x".into()],
        vec![B256::ZERO]
    ))
    .await;
    assert!(matches!(
        reverted(mismatch),
        TaskRegistryErrors::LengthMismatch(_)
    ));
    let unauthorised = send!(f.requester.submitResults(
        ids,
        vec![true; 3],
        vec![String::new(); 3],
        vec![B256::ZERO; 3]
    ))
    .await;
    assert!(matches!(
        reverted(unauthorised),
        TaskRegistryErrors::NotExecutor(_)
    ));
}
