//! Writing results back, exactly once per task, batched and pipelined: a 1-of-1 task's result
//! (`submitResults`), a k-of-n task's commit (`commitResults`) and reveal (`revealResults`), all
//! from one account with one nonce count.
//!
//! Results waiting to be written are gathered into batches (up to [`WriteOptions::max_batch`]
//! results and [`WriteOptions::max_batch_bytes`] of result text, gathered for at most
//! [`WriteOptions::linger`]) and each batch is one `submitResults` transaction; batches are sent
//! without waiting for the previous one to be mined. One transaction per result would bind the
//! throughput to how many transactions the node takes in a second.
//!
//! Exactly once: each batch is first simulated (`eth_estimateGas`), which reads the tasks' state
//! on chain. `submitResults` skips a task already completed (an earlier write of ours, before a
//! crash), and the receipt's `TaskCompleted` logs say which results this transaction wrote; the
//! others count as already written. The contract never records a second result for a task,
//! however a retry races.
//!
//! Nonces are kept here, not asked of the node per transaction: each batch takes the next nonce
//! under a short lock, and a failed send drops the local count so the next send reads it again
//! from the node. A transaction the node no longer has (neither mined nor in its pool: anvil
//! drops transactions when two blocks are mined at once) is sent again as it was, at once. One
//! that the node has but does not mine in time (priced under the market) is sent again with the
//! same nonce and fees raised by a quarter, which replaces it. Every hash sent at a nonce is
//! kept: when the node says the nonce is used, the receipt of whichever of them was mined is
//! taken, and if none was, the write fails at once (to be retried) instead of waiting on a
//! transaction that can never be mined.
//!
//! - [`batch`]: one batch as a transaction: simulated, priced, sent with the next local nonce;
//!   [`rejection`]: which of the node's refusals mean an account without funds.
//! - [`confirm`]: following a sent transaction to its depth, replacing it while it is not mined.

use crate::heads::Heads;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::DynProvider;
use batch::{BatchSender, Entry, Queued};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod batch;
mod confirm;
mod rejection;

/// How results are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Blocks that must follow a result's block before it counts as written.
    pub confirmations: u64,
    /// Time a transaction gets to be mined (and confirmed) before it is replaced.
    pub receipt_timeout: Duration,
    /// Time a sent transaction may go unmined before the node is asked, at the next block that
    /// comes without it (and then again at each such block after as long), whether it still
    /// has it; one it has lost (dropped from its pool) is sent again at once, not after the
    /// `receipt_timeout`.
    pub lost_after: Duration,
    /// Most replacements of one transaction before the write fails (and is retried later).
    pub max_replacements: u32,
    /// Most results in one transaction.
    pub max_batch: usize,
    /// Most bytes of result values in one transaction (storage gas grows with them).
    pub max_batch_bytes: usize,
    /// Longest wait for more results once one is waiting.
    pub linger: Duration,
    /// Most results waiting to be gathered into a batch (default 256, four full batches); a
    /// [`ResultWriter::write`] waits while the queue is full.
    pub queue: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            confirmations: 2,
            receipt_timeout: Duration::from_secs(60),
            lost_after: Duration::from_millis(250),
            max_replacements: 5,
            max_batch: 64,
            max_batch_bytes: 16 * 1024,
            linger: Duration::from_millis(10),
            queue: 256,
        }
    }
}

/// One task's result as it goes on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChainResult {
    /// The task's id in the registry.
    pub task_id: U256,
    /// Whether the task succeeded.
    pub ok: bool,
    /// The result value (at most the contract's `MAX_RESULT_BYTES`).
    pub result: String,
    /// The result's `result_hash` (docs/RESULT_HASH.md), the contract's `envelopeHash`.
    pub result_hash: B256,
}

/// One commitment to a k-of-n task's result as it goes on chain (`commitResults`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The task's id in the registry.
    pub task_id: U256,
    /// `keccak256(abi.encode(resultHash, executor, salt))` ([`commitment`]).
    pub commitment: B256,
}

/// One reveal of a committed result as it goes on chain (`revealResults`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    /// The task's id in the registry.
    pub task_id: U256,
    /// Whether the task succeeded.
    pub ok: bool,
    /// The result value (at most the contract's `MAX_RESULT_BYTES`).
    pub result: String,
    /// The result's `result_hash`, as committed.
    pub result_hash: B256,
    /// The salt of the commitment.
    pub salt: B256,
    /// The task's replicas (n): the reveal that settles the task pays and records each of them,
    /// so its gas grows with n ([`batch`] leaves room for it).
    pub replicas: u8,
}

/// The contract's commitment: `keccak256(abi.encode(resultHash, executor, salt))`, three 32-byte
/// words (the address left-padded with zeros).
pub fn commitment(result_hash: B256, executor: Address, salt: B256) -> B256 {
    let mut words = [0u8; 96];
    words[..32].copy_from_slice(result_hash.as_slice());
    words[44..64].copy_from_slice(executor.as_slice());
    words[64..].copy_from_slice(salt.as_slice());
    alloy::primitives::keccak256(words)
}

/// A fresh random salt for a commitment (the operating system's generator), never reused: with
/// it no one can guess the committed result hash from the commitment.
pub fn fresh_salt() -> B256 {
    B256::random()
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Our transaction wrote it, and is confirmed.
    Mined {
        /// Its hash.
        tx: B256,
        /// Its block.
        block: u64,
        /// How many times it was replaced with a higher fee first.
        replacements: u32,
    },
    /// The contract skipped it: the task already had its result on chain (an earlier write of
    /// ours landed); for a commit or a reveal, also a task that no longer takes it (the caller
    /// reads what the registry holds for it).
    AlreadyCompleted,
}

/// Why a write failed; every one is worth retrying later except where noted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The account is not an authorised executor (the owner must call `setExecutor`).
    #[error(
        "the executor account {0} is not authorised on the TaskRegistry; its owner must authorise it (coordinator chain authorize --executor {0})"
    )]
    NotExecutor(Address),
    /// No such task in the registry (a wrong contract, or its request was reorganised away).
    #[error("the TaskRegistry has no task {0}")]
    UnknownTask(U256),
    /// The account cannot pay for gas.
    #[error("the executor account {address} cannot pay for the transaction (fund it): {detail}")]
    NoFunds {
        /// The account.
        address: Address,
        /// The node's words.
        detail: String,
    },
    /// The contract refused the result for another reason (not worth retrying as is).
    #[error("the TaskRegistry refused the result: {0}")]
    Refused(String),
    /// The node failed, could not be reached, or the transaction was not mined.
    #[error("{0}")]
    Node(String),
}

/// Sends results, commits and reveals from one executor account.
pub struct ResultWriter {
    /// Results waiting for [`gather`], at most [`WriteOptions::queue`]. A full queue cannot
    /// deadlock: `gather` awaits nothing but the queue and its linger timer (each batch is sent
    /// on a task of its own, so neither the node nor the receipt tracker holds it up), and the
    /// tracker never writes here. A caller of `write` waits only until `gather` takes one.
    queue: mpsc::Sender<Queued<OnChainResult>>,
    /// Commits waiting for their own [`gather`], by the same rules.
    commits: mpsc::Sender<Queued<Commit>>,
    /// Reveals waiting for their own [`gather`], by the same rules.
    reveals: mpsc::Sender<Queued<Reveal>>,
    from: Address,
    batchers: [tokio::task::JoinHandle<()>; 3],
}

impl Drop for ResultWriter {
    fn drop(&mut self) {
        for batcher in &self.batchers {
            batcher.abort();
        }
    }
}

impl ResultWriter {
    /// A writer to the registry at `contract`, signing as `from` (the provider's signer),
    /// following confirmations as `heads` announces new blocks. Must be called within a Tokio
    /// runtime.
    pub fn new(
        provider: DynProvider,
        contract: Address,
        from: Address,
        options: WriteOptions,
        heads: Heads,
    ) -> Self {
        let sender = Arc::new(BatchSender::new(provider, contract, from, options, heads));
        let (queue, results) = mpsc::channel(options.queue.max(1));
        let (commits, committing) = mpsc::channel(options.queue.max(1));
        let (reveals, revealing) = mpsc::channel(options.queue.max(1));
        Self {
            queue,
            commits,
            reveals,
            from,
            batchers: [
                tokio::spawn(gather(sender.clone(), results)),
                tokio::spawn(gather(sender.clone(), committing)),
                tokio::spawn(gather(sender, revealing)),
            ],
        }
    }

    /// The account results are sent from.
    pub fn address(&self) -> Address {
        self.from
    }

    /// Writes one result (in a batch with others waiting) and waits until it is confirmed, or
    /// finds it already written; first waits for room in the queue when it is full.
    pub async fn write(&self, result: &OnChainResult) -> Result<Written, WriteError> {
        enqueue(&self.queue, result).await
    }

    /// Commits to one k-of-n result (in a batch with other commits waiting) and waits until it
    /// is mined (not deep: the reveal after it only needs it on chain). [`Written::AlreadyCompleted`] when the contract skipped it: this account had
    /// committed already, or the task no longer takes commits.
    pub async fn commit(&self, commit: &Commit) -> Result<Written, WriteError> {
        enqueue(&self.commits, commit).await
    }

    /// Reveals one committed result (in a batch with other reveals waiting) and waits until it
    /// is confirmed. [`Written::AlreadyCompleted`] when the contract skipped it: revealed
    /// already, or the task is settled or past its deadline.
    pub async fn reveal(&self, reveal: &Reveal) -> Result<Written, WriteError> {
        enqueue(&self.reveals, reveal).await
    }
}

/// Puts `item` on `queue` and waits for how its write ended.
async fn enqueue<T: Clone>(
    queue: &mpsc::Sender<Queued<T>>,
    item: &T,
) -> Result<Written, WriteError> {
    let stopped = || WriteError::Node("the result writer has stopped".into());
    let (done, outcome) = oneshot::channel();
    queue
        .send(Queued {
            item: item.clone(),
            done,
        })
        .await
        .map_err(|_| stopped())?;
    outcome.await.map_err(|_| stopped())?
}

/// Gathers waiting entries into batches and sends each batch on its own task.
async fn gather<T: Entry>(sender: Arc<BatchSender>, mut waiting: mpsc::Receiver<Queued<T>>) {
    let options = sender.options;
    while let Some(first) = waiting.recv().await {
        let mut bytes = first.item.bytes();
        let mut batch = vec![first];
        let linger = tokio::time::sleep(options.linger);
        tokio::pin!(linger);
        while batch.len() < options.max_batch.max(1) && bytes < options.max_batch_bytes {
            tokio::select! {
                next = waiting.recv() => match next {
                    Some(next) => {
                        bytes += next.item.bytes();
                        batch.push(next);
                    }
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        tokio::spawn(sender.clone().send(batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commitment_hashes_three_words_as_abi_encode_does() {
        let (hash, salt) = (B256::repeat_byte(0x11), B256::repeat_byte(0x22));
        let executor = Address::repeat_byte(0x33);
        let encoded = alloy::sol_types::SolValue::abi_encode(&(hash, executor, salt));
        assert_eq!(encoded.len(), 96);
        assert_eq!(
            commitment(hash, executor, salt),
            alloy::primitives::keccak256(encoded)
        );
        assert_ne!(
            commitment(hash, Address::repeat_byte(0x34), salt),
            commitment(hash, executor, salt),
            "the executor is bound: a copier's commitment differs"
        );
    }
}
