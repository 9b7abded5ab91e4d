//! Following the chain's head: pushed by the node over a WebSocket (`eth_subscribe` to
//! `newHeads`), or asked for (`eth_blockNumber`) every poll interval over HTTP. The receipt
//! tracker and the chain source wake on it instead of each polling on its own.

use crate::connect::Transport;
use alloy::providers::{DynProvider, Provider};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// First and longest waits before subscribing again after the subscription failed.
const RESUBSCRIBE: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));

/// The waits between subscriptions: [`RESUBSCRIBE`]'s first doubling to its longest, each drawn
/// between half and all of that (jitter, so that coordinators that lost one node do not all
/// come back to it in the same instant). Never runs out.
fn resubscribe_waits() -> ExponentialBackoff {
    let (first, longest) = RESUBSCRIBE;
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(longest / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A new head: its number, and whether the node pushed it (else it was asked for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// The block number.
    pub number: u64,
    /// True when it came over the subscription.
    pub pushed: bool,
}

/// The latest head seen; clones share one follower, which stops with the last clone.
#[derive(Clone)]
pub struct Heads {
    latest: watch::Receiver<Head>,
    _follower: Arc<Follower>,
}

/// Aborts the following task when dropped.
struct Follower(tokio::task::JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Heads {
    /// Starts following `provider`'s head: by subscription over a WebSocket, else by polling
    /// every `every` (unused over a WebSocket). Must be called within a Tokio runtime.
    pub fn follow(provider: DynProvider, transport: Transport, every: Duration) -> Self {
        let (tx, latest) = watch::channel(Head::default());
        let task = match transport {
            Transport::Http => tokio::spawn(polled(provider, tx, every)),
            Transport::WebSocket => tokio::spawn(pushed(provider, tx)),
        };
        Self {
            latest,
            _follower: Arc::new(Follower(task)),
        }
    }

    /// A receiver of every new head (block 0 until the first is seen): `changed()` wakes on
    /// each.
    pub fn watch(&self) -> watch::Receiver<Head> {
        self.latest.clone()
    }
}

/// Publishes `head` if its number differs from the last one (it may go back after a reorg).
fn publish(tx: &watch::Sender<Head>, head: Head) {
    tx.send_if_modified(|latest| std::mem::replace(latest, head).number != head.number);
}

/// A head asked for.
fn asked(number: u64) -> Head {
    Head {
        number,
        pushed: false,
    }
}

/// Asks for the head every `every`; a failed request waits for the next tick.
async fn polled(provider: DynProvider, tx: watch::Sender<Head>, every: Duration) {
    loop {
        if let Ok(number) = provider.get_block_number().await {
            publish(&tx, asked(number));
        }
        tokio::time::sleep(every).await;
    }
}

/// Subscribes to new heads and publishes each; subscribes again, after [`resubscribe_waits`],
/// when the subscription cannot be made or ends (alloy renews it across reconnects by itself).
async fn pushed(provider: DynProvider, tx: watch::Sender<Head>) {
    let mut waits = resubscribe_waits();
    loop {
        let failed = match provider.subscribe_blocks().await {
            Ok(subscription) => {
                waits = resubscribe_waits();
                // A block mined before the subscription took effect is not pushed: ask once.
                if let Ok(number) = provider.get_block_number().await {
                    publish(&tx, asked(number));
                }
                forward(subscription, &tx).await;
                tracing::warn!("the node ended the new-heads subscription; subscribing again");
                None
            }
            Err(e) => Some(e),
        };
        let wait = waits.next().unwrap_or(RESUBSCRIBE.1);
        if let Some(e) = failed {
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "subscribing to the node's new heads");
        }
        tokio::time::sleep(wait).await;
    }
}

/// Publishes each head `subscription` pushes, until it ends.
async fn forward(
    mut subscription: alloy::pubsub::Subscription<alloy::rpc::types::Header>,
    tx: &watch::Sender<Head>,
) {
    loop {
        match subscription.recv().await {
            Ok(header) => publish(
                tx,
                Head {
                    number: header.number,
                    pushed: true,
                },
            ),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_head_is_published_and_going_back_counts() {
        let (tx, mut rx) = watch::channel(Head::default());
        publish(&tx, asked(5));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().number, 5);
        publish(
            &tx,
            Head {
                number: 5,
                pushed: true,
            },
        );
        assert!(!rx.has_changed().unwrap(), "the same block again");
        publish(&tx, asked(4));
        assert_eq!(rx.borrow_and_update().number, 4);
    }

    #[test]
    fn resubscribing_waits_double_with_jitter_under_todays_waits() {
        let (first, longest) = RESUBSCRIBE;
        let waits: Vec<Duration> = resubscribe_waits().take(12).collect();
        let mut ceiling = first;
        for wait in &waits {
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(longest);
        }
        assert!(
            waits[6..].windows(2).any(|w| w[0] != w[1]),
            "jitter makes the waits at the cap differ: {waits:?}"
        );
    }
}
