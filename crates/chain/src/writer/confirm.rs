//! Following a sent result transaction to its confirmation depth, and replacing it (same nonce,
//! fees raised by a quarter, at most [`WriteOptions::max_replacements`] times) while it is not
//! mined within [`WriteOptions::receipt_timeout`].
//!
//! [`WriteOptions::max_replacements`]: super::WriteOptions::max_replacements
//! [`WriteOptions::receipt_timeout`]: super::WriteOptions::receipt_timeout

use super::WriteError;
use super::batch::BatchSender;
use crate::receipts::Followed;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Log, TransactionRequest};
use std::collections::HashSet;

impl BatchSender {
    /// Sends `request` and follows it to `depth` blocks on top, replacing it with higher fees
    /// while it is not mined.
    pub(super) async fn send_and_follow(
        &self,
        mut request: TransactionRequest,
        depth: u64,
        wrote: fn(&Log, Address) -> Option<U256>,
    ) -> Result<Mined, WriteError> {
        let mut tx = self.send_next(&mut request).await?;
        let mut replacements = 0;
        loop {
            let followed = self
                .tracker
                .follow(tx, depth, self.options.receipt_timeout)
                .await;
            match followed {
                // Checked once more against the node: a reorg may have dropped it since.
                Followed::Deep { .. } => match self.receipt(tx, depth, wrote).await? {
                    Receipt::Confirmed { block, wrote } => {
                        return Ok(Mined {
                            tx,
                            block,
                            wrote,
                            replacements,
                        });
                    }
                    Receipt::Reverted => return Err(reverted(tx)),
                    Receipt::Shallow => continue,
                    Receipt::Missing => {}
                },
                Followed::Reverted => return Err(reverted(tx)),
                // Included, not yet deep: the chain is slow, the fee is not the problem.
                Followed::TimedOut { included: Some(_) } => continue,
                Followed::TimedOut { included: None } => {}
            }
            if replacements >= self.options.max_replacements {
                return Err(WriteError::Node(format!(
                    "result transaction {tx} not mined after {replacements} replacements with higher fees"
                )));
            }
            replacements += 1;
            tx = self.replace(&mut request, tx, replacements).await?;
        }
    }

    /// Sends `request` again (same nonce) with fees raised by a quarter, in place of `tx`.
    async fn replace(
        &self,
        request: &mut TransactionRequest,
        tx: B256,
        replacements: u32,
    ) -> Result<B256, WriteError> {
        bump_fees(request);
        tracing::warn!(%tx, replacements, "result transaction not mined in time; replacing it with a higher fee");
        match self.provider.send_transaction(request.clone()).await {
            Ok(pending) => Ok(*pending.tx_hash()),
            // The original was mined meanwhile, or the replacement was refused: the results are
            // retried, and the state on chain decides what is left to write.
            Err(e) => Err(WriteError::Node(format!(
                "replacing result transaction {tx}: {e}"
            ))),
        }
    }

    /// Where transaction `tx` stands, read from its receipt and the head.
    async fn receipt(
        &self,
        tx: B256,
        depth: u64,
        wrote: fn(&Log, Address) -> Option<U256>,
    ) -> Result<Receipt, WriteError> {
        let node = |e: &dyn std::fmt::Display| {
            WriteError::Node(format!("reading the receipt of {tx}: {e}"))
        };
        let Some(receipt) = self
            .provider
            .get_transaction_receipt(tx)
            .await
            .map_err(|e| node(&e))?
        else {
            return Ok(Receipt::Missing);
        };
        if !receipt.status() {
            return Ok(Receipt::Reverted);
        }
        let block = receipt.block_number.unwrap_or_default();
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| node(&e))?;
        if head < block + depth {
            return Ok(Receipt::Shallow);
        }
        let tasks = receipt
            .inner
            .logs()
            .iter()
            .filter_map(|log| wrote(log, self.from))
            .collect();
        Ok(Receipt::Confirmed {
            block,
            wrote: tasks,
        })
    }
}

fn reverted(tx: B256) -> WriteError {
    WriteError::Node(format!(
        "result transaction {tx} reverted on chain; retrying what is left to write"
    ))
}

/// A confirmed batch transaction.
pub(super) struct Mined {
    /// Its hash.
    pub(super) tx: B256,
    /// Its block.
    pub(super) block: u64,
    /// The tasks it wrote (their `TaskCompleted`, or our `ResultCommitted` / `ResultRevealed`).
    pub(super) wrote: HashSet<U256>,
    /// How many times it was replaced with a higher fee first.
    pub(super) replacements: u32,
}

/// A result transaction's receipt, as far as it goes.
enum Receipt {
    /// Mined, succeeded, and deep enough; the tasks it wrote.
    Confirmed { block: u64, wrote: HashSet<U256> },
    /// Mined and succeeded, not yet deep enough (a reorg moved it).
    Shallow,
    /// Mined and reverted.
    Reverted,
    /// Not mined (yet, or dropped).
    Missing,
}

/// Raises both fee caps by a quarter (a replacement must pay at least a tenth more).
fn bump_fees(request: &mut TransactionRequest) {
    let bump = |fee: u128| fee.saturating_add(fee / 4).max(fee + 1);
    if let Some(fee) = request.max_fee_per_gas {
        request.set_max_fee_per_gas(bump(fee));
    }
    if let Some(fee) = request.max_priority_fee_per_gas {
        request.set_max_priority_fee_per_gas(bump(fee));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_pays_more_than_a_tenth_extra() {
        let mut request = TransactionRequest::default()
            .with_max_fee_per_gas(1_000)
            .with_max_priority_fee_per_gas(3);
        bump_fees(&mut request);
        assert_eq!(request.max_fee_per_gas, Some(1_250));
        assert_eq!(request.max_priority_fee_per_gas, Some(4));
    }
}
