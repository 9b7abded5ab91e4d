//! What the API may see and signal of the tasks the scheduler holds in memory: why a queued
//! task waits (how many are ahead of it, or that it is next and waits for a running slot), and
//! the cancel of a queued or running task. Nothing here is persisted: the state store has the
//! durable record of a cancel; this only makes the scheduler act on it at once.

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The scheduler's queue and running tasks, as far as the API needs them.
#[derive(Debug, Default)]
pub struct Live {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// Queued task -> its ticket (tickets are issued and taken in queue order).
    queued: HashMap<String, u64>,
    /// Tickets issued so far.
    issued: u64,
    /// Tickets taken off the queue so far.
    taken: u64,
    /// Running task -> the token that stops it.
    running: HashMap<String, CancellationToken>,
    /// Tasks cancelled before they started (queued, or not yet queued).
    cancelled: HashSet<String>,
}

/// Why a queued task is not running yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Waiting {
    /// Behind `ahead` queued tasks.
    Queued {
        /// Tasks queued before it.
        ahead: u64,
    },
    /// First in the queue: every running slot is taken (`COORDINATOR_CONCURRENCY`).
    ForSlot,
}

impl Live {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // Nothing here can panic while the lock is held, but a poisoned book is still sound.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task joins the back of the queue.
    pub fn queued(&self, task_id: &str) {
        let mut book = self.book();
        let ticket = book.issued;
        book.issued += 1;
        book.queued.insert(task_id.to_owned(), ticket);
    }

    /// The task at the front of the queue leaves it (to run, or to be dropped).
    pub fn dequeued(&self, task_id: &str) {
        let mut book = self.book();
        if book.queued.remove(task_id).is_some() {
            book.taken += 1;
        }
    }

    /// Why `task_id` waits, if it is queued.
    pub fn waiting(&self, task_id: &str) -> Option<Waiting> {
        let book = self.book();
        let ahead = book.queued.get(task_id)?.saturating_sub(book.taken);
        Some(if ahead == 0 {
            Waiting::ForSlot
        } else {
            Waiting::Queued { ahead }
        })
    }

    /// How many tasks are queued.
    pub fn queue_len(&self) -> usize {
        self.book().queued.len()
    }

    /// The task starts: its stop token, already cancelled if it was cancelled before.
    pub fn start(&self, task_id: &str) -> CancellationToken {
        let mut book = self.book();
        let token = CancellationToken::new();
        if book.cancelled.remove(task_id) {
            token.cancel();
        }
        book.running.insert(task_id.to_owned(), token.clone());
        token
    }

    /// The task's run is over (finished, cancelled or stopped by a shutdown).
    pub fn end(&self, task_id: &str) {
        self.book().running.remove(task_id);
    }

    /// Stops `task_id` if it runs; otherwise marks it so that it never starts.
    pub fn cancel(&self, task_id: &str) {
        let mut book = self.book();
        match book.running.get(task_id) {
            Some(token) => token.cancel(),
            None => {
                book.cancelled.insert(task_id.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_task_knows_how_many_are_ahead_and_a_cancel_reaches_it_wherever_it_is() {
        let live = Live::default();
        for id in ["a", "b", "c"] {
            live.queued(id);
        }
        assert_eq!(live.waiting("a"), Some(Waiting::ForSlot));
        assert_eq!(live.waiting("c"), Some(Waiting::Queued { ahead: 2 }));
        live.dequeued("a");
        assert_eq!(live.waiting("c"), Some(Waiting::Queued { ahead: 1 }));
        assert_eq!(live.waiting("a"), None);
        let a = live.start("a");
        live.cancel("a");
        assert!(a.is_cancelled(), "a running task is stopped");
        live.cancel("b");
        live.dequeued("b");
        assert!(live.start("b").is_cancelled(), "a queued one never starts");
        assert!(!live.start("c").is_cancelled());
        assert_eq!(live.queue_len(), 1);
    }
}
