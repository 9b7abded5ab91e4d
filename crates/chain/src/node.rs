//! The scanner's view of a real node, through an alloy provider: the head, block hashes, and the
//! registry's `TaskSubmitted` logs decoded, with the `TaskTerms` of k-of-n tasks.

use crate::registry::TaskRegistry::{TaskSubmitted, TaskTerms};
use crate::scan::{ChainView, Found};
use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;

/// A registry at `contract` seen through `provider`.
pub struct NodeView<P> {
    provider: P,
    contract: Address,
}

impl<P> NodeView<P> {
    /// Reads the registry at `contract` through `provider`.
    pub fn new(provider: P, contract: Address) -> Self {
        Self { provider, contract }
    }
}

impl<P: Provider + Send + Sync> ChainView for NodeView<P> {
    type Error = String;

    async fn head(&self) -> Result<u64, String> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| format!("eth_blockNumber: {e}"))
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, String> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(|e| format!("eth_getBlockByNumber({number}): {e}"))?;
        Ok(block.map(|b| b.header.hash))
    }

    async fn events(&self, from: u64, to: u64) -> Result<Vec<Found>, String> {
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(vec![
                TaskSubmitted::SIGNATURE_HASH,
                TaskTerms::SIGNATURE_HASH,
            ])
            .from_block(from)
            .to_block(to);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(|e| format!("eth_getLogs({from}..={to}): {e}"))?;
        let mut found: Vec<Found> = Vec::new();
        for log in logs {
            let (Some(block_number), Some(block_hash)) = (log.block_number, log.block_hash) else {
                return Err("the node gave a log of a pending block".to_string());
            };
            if log.topic0() == Some(&TaskTerms::SIGNATURE_HASH) {
                let terms = TaskTerms::decode_log(&log.inner)
                    .map_err(|e| format!("a TaskTerms log that does not decode: {e}"))?
                    .data;
                // The contract emits a task's terms right after its `TaskSubmitted`.
                if let Some(submitted) = found
                    .iter_mut()
                    .rev()
                    .find(|f| f.event.taskId == terms.taskId)
                {
                    submitted.terms = Some(terms);
                }
                continue;
            }
            found.push(Found {
                block_number,
                block_hash,
                log_index: log.log_index.unwrap_or_default(),
                event: decode_submitted(&log.inner)?,
                terms: None,
            });
        }
        Ok(found)
    }
}

/// Decodes one log of the registry as a `TaskSubmitted` event (its topics, then its ABI data),
/// or says why it is not one. Public so the fuzz targets drive the decoding the scanner does.
pub fn decode_submitted(log: &alloy::primitives::Log) -> Result<TaskSubmitted, String> {
    TaskSubmitted::decode_log(log)
        .map(|decoded| decoded.data)
        .map_err(|e| format!("a TaskSubmitted log that does not decode: {e}"))
}
