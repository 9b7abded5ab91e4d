//! The scanner on a real anvil: confirmations counted in mined blocks, and a reorg (snapshot,
//! revert, new blocks) that removes a task before it was confirmed.

use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use wasm_exec_chain::node::NodeView;
use wasm_exec_chain::scan::{Checkpoint, ScanOptions, step};
use wasm_exec_chain::{TaskRegistry, connect_http, deploy};
use wasm_exec_test_peers::{Anvil, KEYS};

fn provider(anvil: &Anvil) -> DynProvider {
    let signer: PrivateKeySigner = KEYS[0].parse().expect("key");
    connect_http(&anvil.url, signer).expect("provider")
}

async fn rpc(provider: &DynProvider, method: &'static str, params: Vec<String>) -> String {
    let answer: serde_json::Value = provider
        .raw_request(method.into(), params)
        .await
        .expect("rpc");
    answer.to_string()
}

async fn submit(registry: &TaskRegistry::TaskRegistryInstance<DynProvider>, cid: &str) {
    registry
        .submitTask_0(cid.into(), "fib".into(), "[12]".into(), 0, 0)
        .send()
        .await
        .expect("send")
        .get_receipt()
        .await
        .expect("receipt");
}

#[tokio::test]
async fn a_task_is_taken_after_three_more_blocks_and_a_reorged_one_never() {
    let anvil = Anvil::start();
    let provider = provider(&anvil);
    let address = deploy(&provider).await.expect("deploy");
    let registry = TaskRegistry::new(address, provider.clone());
    let view = NodeView::new(provider.clone(), address);
    let options = ScanOptions {
        confirmations: 3,
        ..ScanOptions::default()
    };

    submit(&registry, "kept").await;
    let mut checkpoint = Checkpoint::starting_at(0);
    for _ in 0..3 {
        let s = step(&view, &checkpoint, options).await.expect("step");
        assert!(
            s.found.is_empty(),
            "taken before three blocks were mined on it"
        );
        checkpoint = s.checkpoint;
        rpc(&provider, "evm_mine", Vec::new()).await;
    }
    let s = step(&view, &checkpoint, options).await.expect("step");
    assert_eq!(s.found.len(), 1);
    assert_eq!(s.found[0].event.wasmCid, "kept");
    assert_eq!(s.found[0].event.taskId, U256::from(1));
    checkpoint = s.checkpoint;

    // A task in a block that is reorganised away before its confirmations.
    let snapshot = rpc(&provider, "evm_snapshot", Vec::new()).await;
    submit(&registry, "vanishes").await;
    let s = step(&view, &checkpoint, options).await.expect("step");
    assert!(s.found.is_empty());
    checkpoint = s.checkpoint;
    let id: String = serde_json::from_str(&snapshot).expect("snapshot id");
    rpc(&provider, "evm_revert", vec![id]).await;
    for _ in 0..6 {
        rpc(&provider, "evm_mine", Vec::new()).await;
    }
    let s = step(&view, &checkpoint, options).await.expect("step");
    assert!(
        s.found.is_empty(),
        "the reorganised task was taken: {:?}",
        s.found
    );
    assert_eq!(s.rewound_to, None, "nothing taken was replaced");
}
