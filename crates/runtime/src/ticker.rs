//! The epoch ticker: one thread per engine that advances the epoch counter at a fixed period, so
//! guests compiled with epoch checks stop at their deadline (see [`Interruption::Epoch`]).
//!
//! [`Interruption::Epoch`]: crate::Interruption::Epoch

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::Engine;

/// Time between epoch ticks: a guest overruns its deadline by at most about this much.
pub const TICK: Duration = Duration::from_millis(10);

/// Advances an engine's epoch every [`TICK`] until dropped.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let (engine, stop) = (engine.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// The deadline, in ticks, for a wall-clock limit: rounded up, plus one for the partial tick
    /// already under way.
    pub fn ticks_for(limit: Duration) -> u64 {
        let ticks = limit.as_nanos().div_ceil(TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and ticks: it ends within one TICK.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(EpochTicker::ticks_for(Duration::from_millis(10)), 2);
        assert_eq!(EpochTicker::ticks_for(Duration::from_millis(11)), 3);
        assert_eq!(EpochTicker::ticks_for(Duration::from_secs(1)), 101);
    }
}
