//! Following result transactions to their confirmation depth with one poller for all of them.
//!
//! Polling each transaction's receipt costs a request per transaction per tick, and alloy's own
//! watcher fetches one block per tick, which falls behind when a burst of results fills a block
//! per transaction. Here one task wakes on each new head ([`Heads`]: pushed or polled) and, only
//! while transactions are being followed, reads each new block's receipts once
//! (`eth_getBlockReceipts`) and marks the ones followed; waiters wake on every new head.

use crate::heads::Heads;
use alloy::eips::BlockId;
use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Wait before reading a block's receipts again after the node could not give them.
const RETRY: Duration = Duration::from_millis(200);

/// Where a followed transaction was included: its block and whether it succeeded.
pub type Inclusion = (u64, bool);

/// How following a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Included in `block` and `depth` blocks deep; `ok` is its status.
    Deep {
        /// Its block.
        block: u64,
        /// Whether it succeeded.
        ok: bool,
    },
    /// Included and reverted (no need to wait for depth).
    Reverted,
    /// The time ran out: not included, or not yet deep enough.
    TimedOut {
        /// Its inclusion, if seen.
        included: Option<Inclusion>,
    },
}

struct Shared {
    head: watch::Sender<u64>,
    followed: Mutex<HashMap<B256, Option<Inclusion>>>,
}

impl Shared {
    fn followed(&self) -> std::sync::MutexGuard<'_, HashMap<B256, Option<Inclusion>>> {
        self.followed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The poller; stops when dropped.
pub struct ReceiptTracker {
    provider: DynProvider,
    shared: Arc<Shared>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for ReceiptTracker {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl ReceiptTracker {
    /// Starts reading the receipts of the blocks `heads` announces.
    pub fn start(provider: DynProvider, heads: Heads) -> Self {
        let shared = Arc::new(Shared {
            head: watch::Sender::new(0),
            followed: Mutex::default(),
        });
        let poller = tokio::spawn(track(provider.clone(), shared.clone(), heads));
        Self {
            provider,
            shared,
            poller,
        }
    }

    /// Waits until `tx` is included and `depth` blocks deep (or reverted), at most `timeout`;
    /// returns early, as timed out with nothing included, at the first new head that comes at
    /// least `unseen` after the start without `tx` in it (so that the caller can ask whether
    /// the node still has it).
    pub async fn follow(
        &self,
        tx: B256,
        depth: u64,
        timeout: Duration,
        unseen: Duration,
    ) -> Followed {
        self.shared.followed().entry(tx).or_insert(None);
        let mut heads = self.shared.head.subscribe();
        // A transaction included before it was followed (a node that mines at once): look once.
        if let Ok(Some(receipt)) = self.provider.get_transaction_receipt(tx).await
            && let Some(block) = receipt.block_number
        {
            self.shared
                .followed()
                .insert(tx, Some((block, receipt.status())));
        }
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut first = true;
        let outcome = loop {
            let included = self.shared.followed().get(&tx).copied().flatten();
            let head = *heads.borrow_and_update();
            match included {
                Some((_, false)) => break Followed::Reverted,
                Some((block, ok)) if head >= block + depth => break Followed::Deep { block, ok },
                None if !first && start.elapsed() >= unseen => {
                    break Followed::TimedOut { included };
                }
                _ => {}
            }
            first = false;
            tokio::select! {
                changed = heads.changed() => if changed.is_err() {
                    break Followed::TimedOut { included };
                },
                () = tokio::time::sleep_until(deadline) => break Followed::TimedOut { included },
            }
        };
        self.shared.followed().remove(&tx);
        outcome
    }
}

/// The poller: on each new head, the receipts of the new blocks while anything is followed (a
/// block whose receipts could not be read is tried again after [`RETRY`]).
async fn track(provider: DynProvider, shared: Arc<Shared>, heads: Heads) {
    let mut announced = heads.watch();
    let mut next: Option<u64> = None;
    loop {
        let head = announced.borrow_and_update().number;
        let mut behind = false;
        if head > 0 {
            let mut block = next.unwrap_or(head).min(head + 1);
            // After a reorg the head may go back: read from there again.
            if next.is_some_and(|n| n > head + 1) {
                block = head;
            }
            while block <= head && !shared.followed().is_empty() {
                match provider.get_block_receipts(BlockId::number(block)).await {
                    Ok(Some(receipts)) => {
                        let mut followed = shared.followed();
                        for receipt in receipts {
                            if let Some(entry) = followed.get_mut(&receipt.transaction_hash) {
                                *entry = Some((block, receipt.status()));
                            }
                        }
                        block += 1;
                    }
                    // Not there yet, or the node failed: try again shortly.
                    Ok(None) | Err(_) => {
                        behind = true;
                        break;
                    }
                }
            }
            if shared.followed().is_empty() {
                block = head + 1;
            }
            next = Some(block);
            shared.head.send_replace(head);
        }
        if behind {
            tokio::select! {
                _ = announced.changed() => {}
                () = tokio::time::sleep(RETRY) => {}
            }
        } else if announced.changed().await.is_err() {
            return;
        }
    }
}
