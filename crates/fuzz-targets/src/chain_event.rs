//! A registry log to a task: `TaskSubmitted` decoding (`wasm_exec_chain::node::decode_submitted`),
//! the event to a task (`wasm_exec_coordinator::source::chain::to_task`), and the intake check
//! for strangers' tasks.

use alloy::primitives::{Address, B256, Bytes, Log, LogData};
use alloy::sol_types::SolEvent;
use wasm_exec_chain::TaskRegistry::TaskSubmitted;
use wasm_exec_chain::node::decode_submitted;
use wasm_exec_coordinator::source::chain::to_task;
use wasm_exec_task::{IntakeRules, ModuleRef};

/// The first byte sets the topics: how many (1-4), and whether the first is the event's
/// signature or taken from the input; 32 bytes per other topic follow, then the ABI data.
/// Checks: no panic; an event that decodes encodes to a log that decodes to it again; its task,
/// if it passes the check, names its module by CID (a chain's requesters cannot pick files).
pub fn chain_event(data: &[u8]) {
    let Some((&shape, mut rest)) = data.split_first() else {
        return;
    };
    let mut topics = Vec::new();
    for i in 0..=usize::from(shape >> 1) % 4 {
        if i == 0 && shape & 1 == 0 {
            topics.push(TaskSubmitted::SIGNATURE_HASH);
            continue;
        }
        let (word, tail) = rest.split_at(rest.len().min(32));
        let mut topic = [0u8; 32];
        topic[32 - word.len()..].copy_from_slice(word);
        topics.push(B256::from(topic));
        rest = tail;
    }
    let log = Log {
        address: Address::ZERO,
        data: LogData::new_unchecked(topics, Bytes::copy_from_slice(rest)),
    };
    let Ok(event) = decode_submitted(&log) else {
        return;
    };
    let encoded = Log {
        address: Address::ZERO,
        data: event.encode_log_data(),
    };
    let again = decode_submitted(&encoded).expect("an encoded event decodes");
    assert_eq!(again, event);
    let spec = to_task(format!("chain-1-{}", event.taskId), &event);
    if let Ok(checked) = spec.check(&IntakeRules::default().cids_only()) {
        assert!(matches!(checked.module, ModuleRef::Cid(_)), "{spec:?}");
    }
}
