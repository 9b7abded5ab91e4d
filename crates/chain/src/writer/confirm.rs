//! Following a sent result transaction to its confirmation depth: sent again unchanged when the
//! node has lost it (asked at the first block without it once [`WriteOptions::lost_after`] has
//! passed, and so on while it is not mined), replaced
//! (same nonce, fees raised by a quarter, at most [`WriteOptions::max_replacements`] times) while
//! the node has it but does not mine it within [`WriteOptions::receipt_timeout`]. A nonce the
//! node says is used ends the wait at once: on whichever hash sent at it was mined, or with an
//! error when none of them was.
//!
//! [`WriteOptions::lost_after`]: super::WriteOptions::lost_after
//! [`WriteOptions::max_replacements`]: super::WriteOptions::max_replacements
//! [`WriteOptions::receipt_timeout`]: super::WriteOptions::receipt_timeout

use super::WriteError;
use super::batch::BatchSender;
use super::rejection::{self, NonceRefusal};
use crate::receipts::Followed;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Log, TransactionRequest};
use std::collections::HashSet;
use std::time::Instant;

impl BatchSender {
    /// Sends `request` and follows it to `depth` blocks on top: sent again as it was when the
    /// node has lost it, replaced with higher fees while it is not mined in time, and ended at
    /// once when its nonce turns out used by none of its hashes.
    pub(super) async fn send_and_follow(
        &self,
        mut request: TransactionRequest,
        depth: u64,
        wrote: fn(&Log, Address) -> Option<U256>,
    ) -> Result<Mined, WriteError> {
        let first = self.send_next(&mut request).await?;
        // Every hash sent at this nonce (the first, then each replacement): any may be mined.
        let mut sent = vec![first];
        let mut tx = first;
        let mut replacements = 0;
        let mut since = Instant::now();
        loop {
            let left = self.options.receipt_timeout.saturating_sub(since.elapsed());
            let followed = (self.tracker)
                .follow(tx, depth, left, self.options.lost_after)
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
            // A block came without it (or the time is up): does the node still have it?
            if since.elapsed() < self.options.receipt_timeout {
                if let Some(mined) = self.resend_if_lost(&request, tx, &sent).await? {
                    tx = mined;
                }
                continue;
            }
            if replacements >= self.options.max_replacements {
                return Err(WriteError::Node(format!(
                    "result transaction {tx} not mined after {replacements} replacements with higher fees"
                )));
            }
            replacements += 1;
            match self.replace(&mut request, tx, replacements, &sent).await? {
                Resent::Sent(replacement) => {
                    sent.push(replacement);
                    tx = replacement;
                }
                Resent::Mined(mined) => tx = mined,
            }
            since = Instant::now();
        }
    }

    /// Sends `request` (the transaction `tx` last sent at its nonce) again, unchanged, if the
    /// node has lost it: neither mined nor in its pool. `Some(hash)` when the nonce turns out
    /// used by one of `sent`, mined meanwhile.
    async fn resend_if_lost(
        &self,
        request: &TransactionRequest,
        tx: B256,
        sent: &[B256],
    ) -> Result<Option<B256>, WriteError> {
        let known = self
            .provider
            .get_transaction_by_hash(tx)
            .await
            .map_err(|e| WriteError::Node(format!("looking up transaction {tx}: {e}")))?;
        if known.is_some() {
            return Ok(None);
        }
        tracing::warn!(%tx, nonce = ?request.nonce, "the node lost the result transaction (neither mined nor pending); sending it again");
        match self.provider.send_transaction(request.clone()).await {
            Ok(_) => Ok(None),
            Err(e) => match rejection::nonce_refusal(&e) {
                NonceRefusal::Known => Ok(None),
                NonceRefusal::Used => self.mined_one(sent, request.nonce).await.map(Some),
                NonceRefusal::Other => Err(WriteError::Node(format!(
                    "sending result transaction {tx} again: {e}"
                ))),
            },
        }
    }

    /// Sends `request` again (same nonce) with fees raised by a quarter, in place of `tx`.
    async fn replace(
        &self,
        request: &mut TransactionRequest,
        tx: B256,
        replacements: u32,
        sent: &[B256],
    ) -> Result<Resent, WriteError> {
        bump_fees(request);
        tracing::warn!(%tx, nonce = ?request.nonce, replacements, "result transaction not mined in time; replacing it with a higher fee");
        match self.provider.send_transaction(request.clone()).await {
            Ok(pending) => Ok(Resent::Sent(*pending.tx_hash())),
            Err(e) if rejection::nonce_refusal(&e) == NonceRefusal::Used => {
                self.mined_one(sent, request.nonce).await.map(Resent::Mined)
            }
            // The replacement was refused: the results are retried, and the state on chain
            // decides what is left to write.
            Err(e) => Err(WriteError::Node(format!(
                "replacing result transaction {tx}: {e}"
            ))),
        }
    }

    /// Which of `sent` (every hash sent at `nonce`) was mined, now that the node says the nonce
    /// is used; if none was, another transaction took the nonce and none of ours can be mined.
    async fn mined_one(&self, sent: &[B256], nonce: Option<u64>) -> Result<B256, WriteError> {
        for &tx in sent.iter().rev() {
            let receipt = self
                .provider
                .get_transaction_receipt(tx)
                .await
                .map_err(|e| WriteError::Node(format!("reading the receipt of {tx}: {e}")))?;
            if receipt.is_some() {
                return Ok(tx);
            }
        }
        // The local count may be what handed the nonce out twice: read it from the node again.
        self.forget_nonce().await;
        Err(WriteError::Node(format!(
            "nonce {} of the executor account was used by a transaction other than ours ({}); retrying what is left to write",
            nonce.map_or_else(|| "?".into(), |n| n.to_string()),
            sent.iter()
                .map(|tx| tx.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
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

/// How a transaction sent again at its nonce went.
enum Resent {
    /// The node took it: its hash.
    Sent(B256),
    /// The nonce was used by this earlier hash of ours, mined meanwhile.
    Mined(B256),
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
