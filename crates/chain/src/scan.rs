//! Reading `TaskSubmitted` events safely: only at a confirmation depth, in bounded block ranges,
//! from a checkpoint the caller persists with the tasks it takes, and noticing reorgs.
//!
//! The scanner remembers the hashes of the last blocks it scanned (the end of each range and
//! every block that held an event). Before each step it checks the newest remembered hash against
//! the node; when the node has another block there, the chain was reorganised under what was
//! already taken (deeper than the confirmations asked for), and the scanner rewinds to the newest
//! block it remembers that is still on the chain, so the range after it is scanned again.

use crate::registry::TaskRegistry::{TaskSubmitted, TaskTerms};
use alloy::primitives::B256;
use serde::{Deserialize, Serialize};
use std::future::Future;

/// One `TaskSubmitted` event with where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The block's number.
    pub block_number: u64,
    /// The block's hash.
    pub block_hash: B256,
    /// The log's index in its block.
    pub log_index: u64,
    /// The event.
    pub event: TaskSubmitted,
    /// The task's `TaskTerms` (emitted in the same transaction) when it is a k-of-n task;
    /// `None` for a 1-of-1 task.
    pub terms: Option<TaskTerms>,
}

/// What the scanner needs from a node: an adapter over a provider, or a fake in tests.
pub trait ChainView {
    /// The error the node gives.
    type Error: std::fmt::Display;
    /// The newest block's number.
    fn head(&self) -> impl Future<Output = Result<u64, Self::Error>> + Send;
    /// The hash of block `number` on the node's chain now (`None` past its head).
    fn block_hash(
        &self,
        number: u64,
    ) -> impl Future<Output = Result<Option<B256>, Self::Error>> + Send;
    /// The `TaskSubmitted` events in blocks `from..=to`, in chain order, each with its
    /// `TaskTerms` if it has any.
    fn events(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<Found>, Self::Error>> + Send;
}

/// Where scanning stands; persist it in the same transaction as the tasks a step yields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The first block not scanned yet.
    pub next_block: u64,
    /// `(number, hash)` of recent scanned blocks, oldest first.
    pub recent: Vec<(u64, B256)>,
}

impl Checkpoint {
    /// A checkpoint that starts scanning at `block`.
    pub fn starting_at(block: u64) -> Self {
        Self {
            next_block: block,
            recent: Vec::new(),
        }
    }
}

/// How the scanner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Blocks that must follow a block before its events are taken (0: take the head's).
    pub confirmations: u64,
    /// Most blocks read in one `eth_getLogs` request.
    pub max_range: u64,
    /// Block hashes remembered to find where a reorg started.
    pub remember: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            confirmations: 2,
            max_range: 2_000,
            remember: 256,
        }
    }
}

/// What one step found.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Confirmed events, in chain order.
    pub found: Vec<Found>,
    /// The checkpoint to persist with them.
    pub checkpoint: Checkpoint,
    /// Set when a reorg reached blocks already scanned: the first block scanned again.
    pub rewound_to: Option<u64>,
    /// True when the scan reached the confirmed head (no need to step again at once).
    pub caught_up: bool,
    /// The node's newest block.
    pub head: u64,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The node failed or could not be reached.
    #[error("the node failed: {0}")]
    Node(String),
    /// Every remembered block was reorganised away.
    #[error(
        "a reorg replaced every block remembered (down to block {oldest}); raise \
         COORDINATOR_CONFIRMATIONS or rescan from COORDINATOR_CHAIN_START_BLOCK"
    )]
    TooDeep {
        /// The oldest block remembered.
        oldest: u64,
    },
}

/// Scans one bounded range after `checkpoint` and returns what it found with the next checkpoint.
pub async fn step<V: ChainView>(
    view: &V,
    checkpoint: &Checkpoint,
    options: ScanOptions,
) -> Result<Step, ScanError> {
    let node = |e: V::Error| ScanError::Node(e.to_string());
    let mut next = checkpoint.clone();
    let rewound_to = rewind_after_reorg(view, &mut next).await?;
    let head = view.head().await.map_err(node)?;
    let Some(confirmed) = head.checked_sub(options.confirmations) else {
        return Ok(Step {
            found: Vec::new(),
            checkpoint: next,
            rewound_to,
            caught_up: true,
            head,
        });
    };
    if confirmed < next.next_block {
        return Ok(Step {
            found: Vec::new(),
            checkpoint: next,
            rewound_to,
            caught_up: true,
            head,
        });
    }
    let to = confirmed.min(next.next_block.saturating_add(options.max_range.max(1) - 1));
    let found = view.events(next.next_block, to).await.map_err(node)?;
    let end = view
        .block_hash(to)
        .await
        .map_err(node)?
        .ok_or_else(|| ScanError::Node(format!("the node has no block {to} below its head")))?;
    for f in &found {
        remember(&mut next.recent, f.block_number, f.block_hash);
    }
    remember(&mut next.recent, to, end);
    let excess = next.recent.len().saturating_sub(options.remember.max(1));
    next.recent.drain(..excess);
    next.next_block = to + 1;
    Ok(Step {
        found,
        checkpoint: next,
        rewound_to,
        caught_up: to == confirmed,
        head,
    })
}

fn remember(recent: &mut Vec<(u64, B256)>, number: u64, hash: B256) {
    if recent.last().is_none_or(|(n, _)| *n < number) {
        recent.push((number, hash));
    }
}

/// Checks the remembered blocks against the node, newest first; on a mismatch rewinds the
/// checkpoint to just after the newest block still on the chain and returns that block.
async fn rewind_after_reorg<V: ChainView>(
    view: &V,
    checkpoint: &mut Checkpoint,
) -> Result<Option<u64>, ScanError> {
    let node = |e: V::Error| ScanError::Node(e.to_string());
    let Some(&(newest, hash)) = checkpoint.recent.last() else {
        return Ok(None);
    };
    if view.block_hash(newest).await.map_err(node)? == Some(hash) {
        return Ok(None);
    }
    let oldest = checkpoint.recent.first().map_or(newest, |(n, _)| *n);
    while let Some((number, hash)) = checkpoint.recent.pop() {
        if view.block_hash(number).await.map_err(node)? == Some(hash) {
            checkpoint.recent.push((number, hash));
            checkpoint.next_block = number + 1;
            return Ok(Some(number + 1));
        }
    }
    Err(ScanError::TooDeep { oldest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256};
    use std::sync::Mutex;

    /// The head, the fork count, and the events as (block, on-chain id).
    type FakeState = (u64, u64, Vec<(u64, u64)>);

    /// A chain in memory: block n has hash `fork * 1000 + n`, and events listed by block.
    #[derive(Default)]
    struct FakeChain {
        state: Mutex<FakeState>,
        requests: Mutex<Vec<(u64, u64)>>,
    }

    impl FakeChain {
        fn new(head: u64) -> Self {
            let chain = Self::default();
            chain.state.lock().unwrap().0 = head;
            chain
        }
        fn mine(&self, blocks: u64) {
            self.state.lock().unwrap().0 += blocks;
        }
        /// A task submitted in the next block.
        fn submit(&self, id: u64) {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            let block = s.0;
            s.2.push((block, id));
        }
        /// Replaces every block from `from` on (and drops their events).
        fn reorg(&self, from: u64) {
            let mut s = self.state.lock().unwrap();
            s.1 += 1;
            s.2.retain(|(b, _)| *b < from);
        }
        fn hash(fork: u64, from_fork: u64, n: u64) -> B256 {
            let f = if n >= from_fork { fork } else { 0 };
            B256::from(U256::from(f * 1000 + n))
        }
    }

    /// The fake keeps one fork point: every reorg in these tests starts at the same height.
    const FORK_AT: u64 = 10;

    impl ChainView for FakeChain {
        type Error = String;
        async fn head(&self) -> Result<u64, String> {
            Ok(self.state.lock().unwrap().0)
        }
        async fn block_hash(&self, n: u64) -> Result<Option<B256>, String> {
            let s = self.state.lock().unwrap();
            Ok((n <= s.0).then(|| Self::hash(s.1, FORK_AT, n)))
        }
        async fn events(&self, from: u64, to: u64) -> Result<Vec<Found>, String> {
            self.requests.lock().unwrap().push((from, to));
            let s = self.state.lock().unwrap();
            Ok(s.2
                .iter()
                .filter(|(b, _)| (from..=to).contains(b))
                .map(|(b, id)| Found {
                    block_number: *b,
                    block_hash: Self::hash(s.1, FORK_AT, *b),
                    log_index: 0,
                    event: TaskSubmitted {
                        taskId: U256::from(*id),
                        requester: Address::ZERO,
                        wasmCid: "c".into(),
                        entry: "e".into(),
                        input: "{}".into(),
                        fuel: 0,
                        timeoutSec: 0,
                    },
                    terms: None,
                })
                .collect())
        }
    }

    fn ids(step: &Step) -> Vec<u64> {
        step.found
            .iter()
            .map(|f| f.event.taskId.to::<u64>())
            .collect()
    }

    fn options(confirmations: u64) -> ScanOptions {
        ScanOptions {
            confirmations,
            max_range: 100,
            remember: 16,
        }
    }

    #[tokio::test]
    async fn events_are_taken_only_at_the_confirmation_depth_and_once() {
        let chain = FakeChain::new(5);
        chain.submit(1); // block 6
        let mut checkpoint = Checkpoint::starting_at(0);
        for mined_after in 0..3 {
            let step = step(&chain, &checkpoint, options(3)).await.unwrap();
            assert!(
                step.found.is_empty(),
                "{mined_after} blocks on top is not enough"
            );
            checkpoint = step.checkpoint;
            chain.mine(1);
        }
        let step = step(&chain, &checkpoint, options(3)).await.unwrap();
        assert_eq!(ids(&step), [1], "taken with three blocks on top");
        let again = super::step(&chain, &step.checkpoint, options(3))
            .await
            .unwrap();
        assert!(again.found.is_empty(), "never taken twice");
    }

    #[tokio::test]
    async fn ranges_are_bounded_and_resume_from_the_checkpoint() {
        let chain = FakeChain::new(0);
        for id in 1..=5 {
            chain.submit(id);
            chain.mine(99);
        }
        let mut checkpoint = Checkpoint::starting_at(0);
        let mut taken = Vec::new();
        loop {
            let step = step(&chain, &checkpoint, options(0)).await.unwrap();
            taken.extend(ids(&step));
            checkpoint = step.checkpoint;
            if step.caught_up {
                break;
            }
        }
        assert_eq!(taken, [1, 2, 3, 4, 5]);
        let requests = chain.requests.lock().unwrap().clone();
        assert!(
            requests.iter().all(|(from, to)| to - from < 100),
            "{requests:?}"
        );
        assert_eq!(requests.first().unwrap().0, 0);
        assert_eq!(requests.last().unwrap().1, 500);
    }

    #[tokio::test]
    async fn a_reorg_before_confirmation_means_the_vanished_task_is_never_taken() {
        let chain = FakeChain::new(9);
        chain.submit(1); // block 10, the fork point
        let step1 = step(&chain, &Checkpoint::starting_at(0), options(2))
            .await
            .unwrap();
        assert!(step1.found.is_empty());
        chain.reorg(FORK_AT);
        chain.mine(5);
        let step2 = step(&chain, &step1.checkpoint, options(2)).await.unwrap();
        assert!(step2.found.is_empty() && step2.rewound_to.is_none());
    }

    #[tokio::test]
    async fn a_reorg_deeper_than_the_confirmations_rewinds_and_rescans() {
        let chain = FakeChain::new(9);
        let start = step(&chain, &Checkpoint::starting_at(0), options(1))
            .await
            .unwrap();
        chain.submit(1); // block 10
        chain.mine(1);
        chain.submit(2); // block 12
        chain.mine(3);
        let first = step(&chain, &start.checkpoint, options(1)).await.unwrap();
        assert_eq!(ids(&first), [1, 2]);
        // Blocks 10 on are replaced: task 2's block is gone, task 1 comes back in block 11.
        chain.reorg(FORK_AT);
        chain.state.lock().unwrap().2.push((11, 1));
        chain.mine(2);
        let second = step(&chain, &first.checkpoint, options(1)).await.unwrap();
        assert_eq!(
            second.rewound_to,
            Some(9),
            "rescanned from just after the newest block still on the chain (8)"
        );
        assert_eq!(
            ids(&second),
            [1],
            "task 1 found again in its new block; task 2 vanished"
        );
        assert_eq!(second.found[0].block_number, 11);
    }

    #[tokio::test]
    async fn a_reorg_past_everything_remembered_is_an_error_that_says_what_to_do() {
        let chain = FakeChain::new(20);
        let mut checkpoint = step(&chain, &Checkpoint::starting_at(FORK_AT), options(0))
            .await
            .unwrap()
            .checkpoint;
        checkpoint.recent.retain(|(n, _)| *n >= 15);
        chain.reorg(FORK_AT);
        let e = step(&chain, &checkpoint, options(0)).await.unwrap_err();
        assert!(e.to_string().contains("COORDINATOR_CONFIRMATIONS"), "{e}");
    }
}
