//! The guest's clocks: virtual, so they read the same on every machine and a guest never waits on
//! the host's time.
//!
//! The wall clock reads 2000-01-01T00:00:00Z. The monotonic clock is a counter that advances one
//! microsecond per reading and jumps forward when the guest sleeps (`poll_oneoff`, see
//! [`poll`](crate::poll)): a sleep of any length returns at once, and the time the guest then reads
//! says it slept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the time every guest sees.
pub const FIXED_WALL_CLOCK_SECS: u64 = 946_684_800;

/// Nanoseconds one reading of the monotonic clock advances it.
const STEP_NANOS: u64 = 1_000;

/// A wall clock stopped at [`FIXED_WALL_CLOCK_SECS`].
pub struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_WALL_CLOCK_SECS)
    }
}

/// The guest's monotonic time in nanoseconds, shared by its WASI clock and its `poll_oneoff`.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    nanos: Arc<AtomicU64>,
}

impl VirtualClock {
    /// The current time, without advancing it.
    pub fn peek(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }

    /// Moves the clock forward to `nanos` (never back): what a sleep until `nanos` does.
    pub fn advance_to(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        STEP_NANOS
    }

    fn now(&self) -> u64 {
        let step = |n: u64| Some(n.saturating_add(STEP_NANOS));
        // The closure never returns `None`, so the update always succeeds.
        let before = match self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
        {
            Ok(n) | Err(n) => n,
        };
        before.saturating_add(STEP_NANOS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_step_and_sleeps_jump_forward_never_back() {
        let clock = VirtualClock::default();
        assert_eq!(clock.now(), 1_000);
        assert_eq!(clock.now(), 2_000);
        clock.advance_to(1_000_000);
        assert_eq!(clock.now(), 1_001_000);
        clock.advance_to(5);
        assert_eq!(clock.peek(), 1_001_000);
        clock.advance_to(u64::MAX);
        assert_eq!(clock.now(), u64::MAX, "saturates instead of wrapping");
    }
}
