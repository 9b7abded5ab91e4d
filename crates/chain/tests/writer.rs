//! The result writer on a real anvil: how the node's refusals reach the caller.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use std::time::Duration;
use wasm_exec_chain::heads::Heads;
use wasm_exec_chain::writer::{OnChainResult, ResultWriter, WriteError, WriteOptions, Written};
use wasm_exec_chain::{TaskRegistry, Transport, connect_http, deploy};
use wasm_exec_test_peers::{Anvil, KEYS};

fn provider(anvil: &Anvil, key: &str) -> (DynProvider, Address) {
    let signer: PrivateKeySigner = key.parse().expect("key");
    let address = signer.address();
    (connect_http(&anvil.url, signer).expect("provider"), address)
}

/// A registry with one pending task (id 1) and `KEYS[1]` authorised as its executor.
async fn registry_with_a_task(anvil: &Anvil) -> Address {
    let (owner, _) = provider(anvil, KEYS[0]);
    let (_, executor) = provider(anvil, KEYS[1]);
    let contract = deploy(&owner).await.expect("deploy");
    let registry = TaskRegistry::new(contract, owner);
    for call in [
        registry
            .setExecutor(executor, true)
            .into_transaction_request(),
        registry
            .submitTask_0("bafy".into(), "fib".into(), "[12]".into(), 0, 0)
            .into_transaction_request(),
    ] {
        let pending = registry.provider().send_transaction(call).await;
        pending.expect("send").get_receipt().await.expect("mined");
    }
    contract
}

#[tokio::test]
async fn an_executor_without_funds_is_told_to_fund_its_account() {
    let anvil = Anvil::start();
    let contract = registry_with_a_task(&anvil).await;
    let (executor, address) = provider(&anvil, KEYS[1]);
    let _: serde_json::Value = executor
        .raw_request("anvil_setBalance".into(), (address, "0x0"))
        .await
        .expect("empty the executor's account");
    let heads = Heads::follow(executor.clone(), Transport::Http, Duration::from_millis(50));
    let writer = ResultWriter::new(executor, contract, address, WriteOptions::default(), heads);
    let written = writer
        .write(&OnChainResult {
            task_id: U256::from(1),
            ok: true,
            result: "144".into(),
            result_hash: B256::repeat_byte(1),
        })
        .await;
    match written {
        Err(error @ WriteError::NoFunds { address: from, .. }) => {
            assert_eq!(from, address);
            assert!(error.to_string().contains("(fund it)"), "{error}");
        }
        other => panic!("expected NoFunds, got {other:?}"),
    }
}

/// anvil with mining switched off once the registry is set up: blocks come only from
/// [`mine_every`], and the test decides what the pool holds in between.
async fn registry_without_automine(anvil: &Anvil) -> (Address, DynProvider, Address) {
    let contract = registry_with_a_task(anvil).await;
    let (executor, address) = provider(anvil, KEYS[1]);
    let _: serde_json::Value = executor
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .expect("switch automine off");
    (contract, executor, address)
}

/// A writer of the executor's account on a registry without automine, following heads every
/// 50 ms, with [`patient`] options: the registry, the executor's provider and its address too.
async fn patient_writer_without_automine(
    anvil: &Anvil,
) -> (ResultWriter, Address, DynProvider, Address) {
    let (contract, executor, address) = registry_without_automine(anvil).await;
    let heads = Heads::follow(executor.clone(), Transport::Http, Duration::from_millis(50));
    let writer = ResultWriter::new(executor.clone(), contract, address, patient(), heads);
    (writer, contract, executor, address)
}

/// Mines a block every 100 ms until dropped.
fn mine_every(provider: DynProvider) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _: Result<serde_json::Value, _> = provider.raw_request("evm_mine".into(), ()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The hashes of `from`'s transactions in the node's pool (ready or waiting).
async fn pooled(provider: &DynProvider, from: Address) -> Vec<B256> {
    let content: serde_json::Value = provider
        .raw_request("txpool_content".into(), ())
        .await
        .expect("txpool_content");
    let mut hashes = Vec::new();
    for kind in ["pending", "queued"] {
        let Some(senders) = content[kind].as_object() else {
            continue;
        };
        for (sender, txs) in senders {
            if sender.eq_ignore_ascii_case(&from.to_string()) {
                for tx in txs.as_object().into_iter().flat_map(|t| t.values()) {
                    hashes.push(tx["hash"].as_str().expect("hash").parse().expect("a hash"));
                }
            }
        }
    }
    hashes
}

/// Waits until `from` has a transaction in the pool, then drops it from there
/// (`anvil_dropTransaction`): what anvil does by itself when two blocks are mined at once.
async fn drop_the_first_sent(provider: &DynProvider, from: Address) -> B256 {
    let tx = loop {
        if let Some(&tx) = pooled(provider, from).await.first() {
            break tx;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _: serde_json::Value = provider
        .raw_request("anvil_dropTransaction".into(), (tx,))
        .await
        .expect("drop the transaction");
    assert!(pooled(provider, from).await.is_empty(), "dropped");
    tx
}

/// Options with a two-minute receipt timeout: a writer that waited it out would fail these
/// tests, which allow 20 s.
fn patient() -> WriteOptions {
    WriteOptions {
        confirmations: 0,
        receipt_timeout: Duration::from_secs(120),
        ..WriteOptions::default()
    }
}

fn a_result() -> OnChainResult {
    OnChainResult {
        task_id: U256::from(1),
        ok: true,
        result: "144".into(),
        result_hash: B256::repeat_byte(1),
    }
}

#[tokio::test]
async fn a_transaction_the_node_lost_is_sent_again_at_once_not_after_the_receipt_timeout() {
    let anvil = Anvil::start();
    let (writer, contract, executor, address) = patient_writer_without_automine(&anvil).await;
    let result = a_result();
    let write = writer.write(&result);
    let dropped = async {
        let tx = drop_the_first_sent(&executor, address).await;
        (tx, mine_every(executor.clone()))
    };
    let (written, (lost, miner)) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(write, dropped)
    })
    .await
    .expect("written within 20 s, not after the 120 s receipt timeout");
    miner.abort();
    match written {
        Ok(Written::Mined {
            tx, replacements, ..
        }) => {
            assert_eq!(tx, lost, "the same transaction, sent again unchanged");
            assert_eq!(replacements, 0);
        }
        other => panic!("expected the result mined, got {other:?}"),
    }
    let registry = TaskRegistry::new(contract, executor);
    let task = registry
        .getTask(U256::from(1))
        .call()
        .await
        .expect("getTask");
    assert_eq!(task.result, "144", "the result is on chain");
}

#[tokio::test]
async fn a_nonce_another_transaction_took_ends_the_write_at_once_with_an_error() {
    let anvil = Anvil::start();
    let (writer, _, executor, address) = patient_writer_without_automine(&anvil).await;
    let result = a_result();
    let write = writer.write(&result);
    let taken = async {
        let lost = drop_the_first_sent(&executor, address).await;
        // Another transaction of the same account at that nonce (the same key used elsewhere).
        let nonce = executor
            .get_transaction_count(address)
            .await
            .expect("nonce");
        let transfer = alloy::rpc::types::TransactionRequest::default()
            .with_to(Address::repeat_byte(9))
            .with_value(U256::from(1))
            .with_nonce(nonce);
        let other = executor
            .send_transaction(transfer)
            .await
            .expect("send the other transaction");
        (lost, *other.tx_hash(), mine_every(executor.clone()))
    };
    let (written, (lost, other, miner)) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(write, taken)
    })
    .await
    .expect("ended within 20 s, not after the 120 s receipt timeout");
    miner.abort();
    assert_ne!(lost, other);
    match written {
        Err(WriteError::Node(message)) => {
            assert!(
                message.contains("used by a transaction other than ours"),
                "{message}"
            );
            assert!(message.contains(&lost.to_string()), "{message}");
        }
        other => panic!("expected the write to fail, got {other:?}"),
    }
    let receipt = executor
        .get_transaction_receipt(other)
        .await
        .expect("receipt");
    assert!(receipt.is_some(), "the other transaction was mined");
}

#[tokio::test]
async fn a_refusal_of_one_task_in_a_batch_does_not_hold_up_the_others() {
    let anvil = Anvil::start();
    let contract = registry_with_a_task(&anvil).await;
    let (owner, _) = provider(&anvil, KEYS[0]);
    let now = owner
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .expect("block")
        .expect("the latest block")
        .header
        .timestamp;
    // Task 2 is 2-of-3: `submitResults` refuses it (NeedsCommitReveal) and reverts the batch.
    let registry = TaskRegistry::new(contract, owner);
    let replicated = registry
        .submitTask_1(
            "bafy".into(),
            "fib".into(),
            "[12]".into(),
            0,
            0,
            3,
            2,
            alloy::primitives::aliases::U40::from(now + 1000),
        )
        .into_transaction_request();
    let pending = registry.provider().send_transaction(replicated).await;
    pending.expect("send").get_receipt().await.expect("mined");
    let (executor, address) = provider(&anvil, KEYS[1]);
    let heads = Heads::follow(executor.clone(), Transport::Http, Duration::from_millis(50));
    let options = WriteOptions {
        confirmations: 0,
        linger: Duration::from_millis(200),
        ..WriteOptions::default()
    };
    let writer = ResultWriter::new(executor, contract, address, options, heads);
    let wrong = OnChainResult {
        task_id: U256::from(2),
        ..a_result()
    };
    let right = a_result();
    let (refused, written) = tokio::join!(writer.write(&wrong), writer.write(&right));
    match refused {
        Err(WriteError::Refused(why)) => assert!(why.contains("NeedsCommitReveal"), "{why}"),
        other => panic!("expected task 2 refused, got {other:?}"),
    }
    assert!(
        matches!(written, Ok(Written::Mined { .. })),
        "task 1 written in spite of task 2 in its batch: {written:?}"
    );
}
