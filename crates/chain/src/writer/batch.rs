//! One batch as one transaction (`submitResults`, `commitResults` or `revealResults`): simulated
//! first (which answers the entries the contract refuses), priced with the node's EIP-1559 fees,
//! sent with the next local nonce, and each entry answered with how its write ended.

use super::confirm::Mined;
use super::{Commit, OnChainResult, Reveal, WriteError, WriteOptions, Written, rejection};
use crate::heads::Heads;
use crate::receipts::ReceiptTracker;
use crate::registry::{Registry, TaskRegistry, TaskRegistry::TaskRegistryErrors};
use alloy::eips::eip1559::Eip1559Estimation;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Log, TransactionRequest};
use alloy::sol_types::SolCall;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, oneshot};

/// An entry waiting to be written (a result, a commit or a reveal), and who waits for the
/// outcome.
pub(super) struct Queued<T> {
    /// The entry.
    pub(super) item: T,
    /// Answered once with how its write ended.
    pub(super) done: oneshot::Sender<Result<Written, WriteError>>,
}

/// A call of one batch, from the executor account.
type BatchCall<'a, C> = alloy::contract::SolCallBuilder<&'a DynProvider, C>;

/// What can be written in batches: one entry of one task, its call, and the log that says this
/// transaction wrote it.
pub(super) trait Entry: Clone + Send + Sync + 'static {
    /// The contract call of a batch of these.
    type Call: SolCall + Send + Sync;
    /// The task it belongs to.
    fn task_id(&self) -> U256;
    /// Bytes of result text it carries (storage gas grows with them).
    fn bytes(&self) -> usize;
    /// The call writing `batch`.
    fn call<'a>(registry: &'a Registry<DynProvider>, batch: &[&Self]) -> BatchCall<'a, Self::Call>;
    /// The task `log` (of a receipt of ours, sent by `from`) says was written.
    fn wrote(log: &Log, from: Address) -> Option<U256>;
    /// Blocks on top of its transaction's before a write counts as done: the confirmations,
    /// except where noted.
    fn depth(options: &WriteOptions) -> u64 {
        options.confirmations
    }
    /// Gas beyond the simulation's that this entry may need when the batch runs on a chain that
    /// moved since: none, except where noted.
    fn headroom(&self) -> u64 {
        0
    }
}

/// Gas a settling reveal may need beyond a non-settling one: a base, and per replica paying
/// and recording its executor (storage written for the first time costs the most). The
/// simulation of a reveal sent alongside other operators' sees none of theirs; once one of
/// theirs lands first, ours is the one that settles (2-of-3: 56,130 gas simulated, 180,163 to
/// 265,663 when settling, `tests/registry_v2_gas.rs`), and with only a fifth added it would run
/// out of gas and revert, costing a block.
const SETTLE_GAS: (u64, u64) = (60_000, 70_000);
/// Most gas one transaction is given (a block's limit on anvil and on the main networks).
const MAX_GAS: u64 = 30_000_000;

impl Entry for OnChainResult {
    type Call = TaskRegistry::submitResultsCall;
    fn task_id(&self) -> U256 {
        self.task_id
    }
    fn bytes(&self) -> usize {
        self.result.len()
    }
    fn call<'a>(registry: &'a Registry<DynProvider>, batch: &[&Self]) -> BatchCall<'a, Self::Call> {
        registry.submitResults(
            batch.iter().map(|r| r.task_id).collect(),
            batch.iter().map(|r| r.ok).collect(),
            batch.iter().map(|r| r.result.clone()).collect(),
            batch.iter().map(|r| r.result_hash).collect(),
        )
    }
    fn wrote(log: &Log, _from: Address) -> Option<U256> {
        let event = log.log_decode::<TaskRegistry::TaskCompleted>().ok()?;
        Some(event.inner.data.taskId)
    }
}

impl Entry for Commit {
    type Call = TaskRegistry::commitResultsCall;
    fn task_id(&self) -> U256 {
        self.task_id
    }
    fn bytes(&self) -> usize {
        32
    }
    fn call<'a>(registry: &'a Registry<DynProvider>, batch: &[&Self]) -> BatchCall<'a, Self::Call> {
        registry.commitResults(
            batch.iter().map(|c| c.task_id).collect(),
            batch.iter().map(|c| c.commitment).collect(),
        )
    }
    fn wrote(log: &Log, from: Address) -> Option<U256> {
        let event = log.log_decode::<TaskRegistry::ResultCommitted>().ok()?;
        (event.inner.data.executor == from).then_some(event.inner.data.taskId)
    }
    /// A commit counts once mined: the reveal that follows needs it on chain, not deep. A
    /// reorg that drops it makes the reveal revert (`NotCommitted`), and the caller, which
    /// reads what the registry holds before each step, commits again with the stored salt.
    fn depth(_options: &WriteOptions) -> u64 {
        0
    }
}

impl Entry for Reveal {
    type Call = TaskRegistry::revealResultsCall;
    fn task_id(&self) -> U256 {
        self.task_id
    }
    fn bytes(&self) -> usize {
        self.result.len()
    }
    fn call<'a>(registry: &'a Registry<DynProvider>, batch: &[&Self]) -> BatchCall<'a, Self::Call> {
        registry.revealResults(
            batch
                .iter()
                .map(|r| TaskRegistry::Reveal {
                    taskId: r.task_id,
                    ok: r.ok,
                    result: r.result.clone(),
                    resultHash: r.result_hash,
                    salt: r.salt,
                })
                .collect(),
        )
    }
    fn wrote(log: &Log, from: Address) -> Option<U256> {
        let event = log.log_decode::<TaskRegistry::ResultRevealed>().ok()?;
        (event.inner.data.executor == from).then_some(event.inner.data.taskId)
    }
    /// Room to settle the task: another operator's reveal may land first and make ours the
    /// k-th agreeing one.
    fn headroom(&self) -> u64 {
        SETTLE_GAS.0 + SETTLE_GAS.1 * u64::from(self.replicas)
    }
}

/// What sends batches: the account, its nonces, fees, and the receipt poller.
pub(super) struct BatchSender {
    pub(super) provider: DynProvider,
    registry: Registry<DynProvider>,
    pub(super) from: Address,
    /// The next nonce to use, if known (unknown after a failed send).
    nonce: Mutex<Option<u64>>,
    /// Follows sent transactions to their depth.
    pub(super) tracker: ReceiptTracker,
    /// The last fee estimate and when it was made (reused for a second).
    fees: Mutex<Option<(Instant, Eip1559Estimation)>>,
    pub(super) options: WriteOptions,
}

impl BatchSender {
    /// A sender to the registry at `contract` from `from`, following receipts as `heads` moves.
    pub(super) fn new(
        provider: DynProvider,
        contract: Address,
        from: Address,
        options: WriteOptions,
        heads: Heads,
    ) -> Self {
        Self {
            registry: Registry::new(contract, provider.clone()),
            tracker: ReceiptTracker::start(provider.clone(), heads),
            provider,
            from,
            nonce: Mutex::new(None),
            fees: Mutex::new(None),
            options,
        }
    }

    /// Sends one batch and answers each of its entries.
    pub(super) async fn send<T: Entry>(self: Arc<Self>, mut batch: Vec<Queued<T>>) {
        while !batch.is_empty() {
            let items: Vec<&T> = batch.iter().map(|q| &q.item).collect();
            let call = T::call(&self.registry, &items).from(self.from);
            match call.estimate_gas().await {
                Ok(gas) => {
                    let headroom: u64 = items.iter().map(|i| i.headroom()).sum();
                    let gas = gas
                        .saturating_add(gas / 5)
                        .saturating_add(headroom)
                        .min(MAX_GAS.max(gas));
                    let depth = T::depth(&self.options);
                    let outcome = self.send_priced(call, gas, depth, T::wrote).await;
                    return answer_sent(batch, outcome);
                }
                Err(e) => match self.refused(batch, &e) {
                    Some(rest) => batch = rest,
                    None => return,
                },
            }
        }
    }

    /// Answers the results a failed simulation refuses. When the refusal names one task of the
    /// batch (its request was reorganised away, or it does not take this entry yet or any
    /// more), that task is answered and the others are returned, to be simulated again: one
    /// task's refusal must not hold up the rest of its batch.
    fn refused<T: Entry>(
        &self,
        batch: Vec<Queued<T>>,
        error: &alloy::contract::Error,
    ) -> Option<Vec<Queued<T>>> {
        let decoded = error.as_decoded_interface_error::<TaskRegistryErrors>();
        if let Some(named) = decoded.as_ref().and_then(named_task) {
            let (refused, rest): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|q| q.item.task_id() == named);
            let why = match &decoded {
                Some(TaskRegistryErrors::UnknownTask(_)) => WriteError::UnknownTask(named),
                other => WriteError::Refused(format!("{other:?}")),
            };
            if refused.is_empty() {
                // Not one of ours: simulating the same batch again would loop.
                let why = WriteError::Refused(format!("{decoded:?}"));
                answer(rest, |_| Err(why.clone()));
                return None;
            }
            answer(refused, |_| Err(why.clone()));
            return (!rest.is_empty()).then_some(rest);
        }
        let why = match decoded {
            Some(TaskRegistryErrors::NotExecutor(_)) => WriteError::NotExecutor(self.from),
            Some(other) => WriteError::Refused(format!("{other:?}")),
            None => rejection::classify_call(error, self.from),
        };
        answer(batch, |_| Err(why.clone()));
        None
    }

    /// Sends `call` with `gas` (a fifth more than simulated, and the entries' headroom) and the
    /// node's fees, and follows it; `wrote` picks the tasks it wrote from the receipt's logs.
    async fn send_priced<C: SolCall>(
        &self,
        call: BatchCall<'_, C>,
        gas: u64,
        depth: u64,
        wrote: fn(&Log, Address) -> Option<U256>,
    ) -> Result<Mined, WriteError> {
        let fees = self.fees().await?;
        let request = call
            .into_transaction_request()
            .with_gas_limit(gas)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        self.send_and_follow(request, depth, wrote).await
    }

    /// EIP-1559 fees from the node, asked at most once a second.
    async fn fees(&self) -> Result<Eip1559Estimation, WriteError> {
        let mut cached = self.fees.lock().await;
        if let Some((at, fees)) = *cached
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(fees);
        }
        let fees = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| WriteError::Node(format!("estimating fees: {e}")))?;
        *cached = Some((Instant::now(), fees));
        Ok(fees)
    }

    /// Sends `request` with the next local nonce (recorded in it); a failed send forgets the
    /// local count so that the next one asks the node.
    pub(super) async fn send_next(
        &self,
        request: &mut TransactionRequest,
    ) -> Result<B256, WriteError> {
        let mut next = self.nonce.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self
                .provider
                .get_transaction_count(self.from)
                .pending()
                .await
                .map_err(|e| WriteError::Node(format!("reading the account's nonce: {e}")))?,
        };
        request.set_nonce(nonce);
        match self.provider.send_transaction(request.clone()).await {
            Ok(pending) => {
                *next = Some(nonce + 1);
                tracing::debug!(nonce, tx = %pending.tx_hash(), gas = ?request.gas, "sent a batch transaction");
                Ok(*pending.tx_hash())
            }
            Err(e) => {
                tracing::debug!(nonce, error = %e, "sending a batch transaction failed");
                *next = None;
                Err(rejection::classify(&e, self.from))
            }
        }
    }
}

impl BatchSender {
    /// Forgets the local nonce count, so that the next send reads it from the node.
    pub(super) async fn forget_nonce(&self) {
        *self.nonce.lock().await = None;
    }
}

/// The task a refusal names, for the refusals that are about one task.
fn named_task(error: &TaskRegistryErrors) -> Option<U256> {
    use TaskRegistryErrors as E;
    Some(match error {
        E::UnknownTask(e) => e.taskId,
        E::AlreadyCompleted(e) => e.taskId,
        E::NeedsCommitReveal(e) => e.taskId,
        E::CommitsStarted(e) => e.taskId,
        E::DirectOnly(e) => e.taskId,
        E::TaskExpiredAlready(e) => e.taskId,
        E::DeadlinePassed(e) => e.taskId,
        E::CommitWindowClosed(e) => e.taskId,
        E::CommitsFull(e) => e.taskId,
        E::AlreadyCommitted(e) => e.taskId,
        E::NotCommitted(e) => e.taskId,
        E::AlreadyRevealed(e) => e.taskId,
        E::RevealTooEarly(e) => e.taskId,
        E::CommitmentMismatch(e) => e.taskId,
        _ => return None,
    })
}

/// Answers each entry of a sent batch: written by it, already written before, or its error.
fn answer_sent<T: Entry>(batch: Vec<Queued<T>>, outcome: Result<Mined, WriteError>) {
    match outcome {
        Ok(mined) => answer(batch, |entry| {
            Ok(if mined.wrote.contains(&entry.task_id()) {
                Written::Mined {
                    tx: mined.tx,
                    block: mined.block,
                    replacements: mined.replacements,
                }
            } else {
                Written::AlreadyCompleted
            })
        }),
        Err(e) => answer(batch, |_| Err(e.clone())),
    }
}

/// Answers each queued entry with `outcome` of it.
fn answer<T>(batch: Vec<Queued<T>>, outcome: impl Fn(&T) -> Result<Written, WriteError>) {
    for queued in batch {
        let _ = queued.done.send(outcome(&queued.item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TaskRegistry as R;

    #[test]
    fn a_refusal_about_one_task_names_it_and_others_name_none() {
        let seven = U256::from(7);
        let early = TaskRegistryErrors::RevealTooEarly(R::RevealTooEarly {
            taskId: seven,
            commitEnd: U256::from(1),
        });
        let closed = TaskRegistryErrors::CommitWindowClosed(R::CommitWindowClosed {
            taskId: seven,
            commitEnd: U256::from(1),
        });
        let unknown = TaskRegistryErrors::UnknownTask(R::UnknownTask { taskId: seven });
        for error in [early, closed, unknown] {
            assert_eq!(named_task(&error), Some(seven), "{error:?}");
        }
        let not_executor = TaskRegistryErrors::NotExecutor(R::NotExecutor {
            caller: Address::repeat_byte(1),
        });
        assert_eq!(named_task(&not_executor), None);
        assert_eq!(
            named_task(&TaskRegistryErrors::LengthMismatch(R::LengthMismatch {})),
            None
        );
    }
}
