//! The result writer on a real anvil: how the node's refusals reach the caller.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use std::time::Duration;
use wasm_exec_chain::heads::Heads;
use wasm_exec_chain::writer::{OnChainResult, ResultWriter, WriteError, WriteOptions};
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
