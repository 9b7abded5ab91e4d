//! The limits of a replicated (k-of-n) task: every limit that decides a result comes from the
//! task, and where the task sets none, from a constant of the protocol here, never from one
//! operator's defaults. Otherwise two honest operators could disagree (one out of memory or fuel
//! under its defaults, the other not), and the honest would be recorded as disagreeing.

use crate::spec::TaskLimits;

/// Instruction budget of a replicated task that sets none (`fuel` 0 on chain): ten billion.
pub const REPLICATED_FUEL: u64 = 10_000_000_000;
/// Wall-clock limit of a replicated task that sets none (`timeoutSec` 0 on chain), in seconds.
pub const REPLICATED_TIMEOUT_SEC: u32 = 20;
/// Memory budget of every replicated task, in MiB (the contract carries none).
pub const REPLICATED_MEMORY_MB: u64 = 256;
/// Bytes of stdout, and of stderr, every replicated task keeps (the contract carries none); they
/// are part of the `result_hash`.
pub const REPLICATED_OUTPUT_BYTES: u64 = 1 << 20;

/// The limits of a replicated task with on-chain `fuel` and `timeout_sec` (0: unset): every field
/// set, so that [`TaskLimits::resolve`](crate::check) takes nothing from the operator's defaults.
/// An operator whose maxima are below them refuses the task (the chain source neither runs nor
/// commits it), since a `bad_input` of its own would disagree with the operators that run it.
pub fn replicated_limits(fuel: u64, timeout_sec: u32) -> TaskLimits {
    let timeout = if timeout_sec == 0 {
        REPLICATED_TIMEOUT_SEC
    } else {
        timeout_sec
    };
    TaskLimits {
        timeout_sec: Some(f64::from(timeout)),
        max_memory_mb: Some(REPLICATED_MEMORY_MB),
        fuel: Some(if fuel == 0 { REPLICATED_FUEL } else { fuel }),
        max_output_bytes: Some(REPLICATED_OUTPUT_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{IntakeRules, Limits};
    use std::time::Duration;

    /// Two operators: the seed's defaults, and one with small defaults and fuel metering on.
    fn operators() -> [IntakeRules; 2] {
        let frugal = IntakeRules {
            defaults: Limits {
                timeout: Duration::from_secs(1),
                max_memory_mb: 16,
                max_output_bytes: 64,
                fuel: Some(1_000),
            },
            ..IntakeRules::default()
        };
        [IntakeRules::default(), frugal]
    }

    #[test]
    fn a_replicated_task_resolves_to_the_same_limits_under_any_operators_defaults() {
        for (fuel, timeout) in [(0, 0), (5_000, 3)] {
            let limits = replicated_limits(fuel, timeout);
            let [a, b] = operators().map(|rules| limits.resolve(&rules).expect("within maxima"));
            assert_eq!(a, b, "fuel {fuel}, timeout {timeout}");
        }
        let unset = replicated_limits(0, 0)
            .resolve(&IntakeRules::default())
            .unwrap();
        assert_eq!(unset.fuel, Some(REPLICATED_FUEL));
        assert_eq!(unset.timeout, Duration::from_secs(20));
        assert_eq!(unset.max_memory_mb, REPLICATED_MEMORY_MB);
        let set = replicated_limits(5_000, 3)
            .resolve(&IntakeRules::default())
            .unwrap();
        assert_eq!(
            (set.fuel, set.timeout),
            (Some(5_000), Duration::from_secs(3))
        );
    }

    #[test]
    fn a_task_with_no_limits_would_take_each_operators_defaults() {
        // The failure the rule above prevents: unset limits differ between operators.
        let [a, b] = operators().map(|rules| TaskLimits::default().resolve(&rules).unwrap());
        assert_ne!(a, b);
    }
}
