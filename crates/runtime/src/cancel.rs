//! Stopping a run from another thread: a [`CancelFlag`] in the run's request, read by the epoch
//! callback at every tick, so a cancelled guest stops within one [`TICK`](crate::ticker::TICK)
//! (10 ms), in a loop, a start function or a host call's return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set from any thread to stop the run that holds a clone of it (epoch interruption only).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Asks the run to stop; it ends with [`RuntimeError::Cancelled`](crate::RuntimeError).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The error the epoch callback stops a cancelled run with, found again by its type.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub(crate) struct Stopped;
