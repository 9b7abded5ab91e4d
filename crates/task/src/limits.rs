//! The allowed range of every limit and its conversion to a typed value, in one place, so the
//! executor (`TIMEOUT_SEC`, ...) and the coordinator (`limits.timeout_sec`, ...) refuse the same
//! values with the same words instead of panicking on them (`Duration::from_secs_f64(1e20)`).

use std::time::Duration;

/// The seed's default wall-clock limit of a task, in seconds (`TIMEOUT_SEC`).
pub const DEFAULT_TIMEOUT_SEC: f64 = 20.0;
/// The seed's default memory budget of a task, in MiB (`MAX_MEMORY_MB`).
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// The default bytes of stdout, and of stderr, a result keeps (`MAX_OUTPUT_BYTES`).
pub const DEFAULT_OUTPUT_BYTES: u64 = 1 << 20;

/// Longest wall-clock limit: 7 days, in seconds.
pub const MAX_TIMEOUT_SEC: f64 = 604_800.0;
/// Largest memory budget of a task: 64 GiB (16 memories of 4 GiB), in MiB.
pub const MAX_MEMORY_MB: u64 = 65_536;
/// Most bytes of stdout (and of stderr) a result may keep: 64 MiB.
pub const MAX_OUTPUT_BYTES: u64 = 64 << 20;
/// Largest Wasm stack: 64 MiB, in KiB.
pub const MAX_WASM_STACK_KB: u64 = 65_536;

/// A limit outside its allowed range: names the setting, the range and the value given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be {range}, got {value}")]
pub struct LimitError {
    /// The setting as the caller knows it (`TIMEOUT_SEC`, `limits.timeout_sec`).
    pub setting: String,
    /// The allowed range, in words.
    pub range: &'static str,
    /// The value given.
    pub value: String,
}

impl LimitError {
    fn new(setting: &str, range: &'static str, value: impl ToString) -> Self {
        Self {
            setting: setting.to_owned(),
            range,
            value: value.to_string(),
        }
    }
}

/// A wall-clock limit in seconds (fractions allowed): above 0, at most [`MAX_TIMEOUT_SEC`].
pub fn timeout(setting: &str, secs: f64) -> Result<Duration, LimitError> {
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SEC) {
        return Err(LimitError::new(
            setting,
            "a number of seconds above 0 and at most 604800 (7 days)",
            secs,
        ));
    }
    // In range, so the conversion cannot panic.
    Ok(Duration::from_secs_f64(secs))
}

/// A memory budget in MiB, 1 to [`MAX_MEMORY_MB`], as bytes.
pub fn memory_bytes(setting: &str, mb: u64) -> Result<usize, LimitError> {
    let range = "a number of MiB from 1 to 65536 (64 GiB)";
    if !(1..=MAX_MEMORY_MB).contains(&mb) {
        return Err(LimitError::new(setting, range, mb));
    }
    usize::try_from(mb << 20).map_err(|_| LimitError::new(setting, range, mb))
}

/// A byte count of kept output, 0 to [`MAX_OUTPUT_BYTES`].
pub fn output_bytes(setting: &str, bytes: u64) -> Result<usize, LimitError> {
    let range = "a number of bytes from 0 to 67108864 (64 MiB)";
    if bytes > MAX_OUTPUT_BYTES {
        return Err(LimitError::new(setting, range, bytes));
    }
    usize::try_from(bytes).map_err(|_| LimitError::new(setting, range, bytes))
}

/// A Wasm stack limit in KiB, 1 to [`MAX_WASM_STACK_KB`], as bytes.
pub fn wasm_stack_bytes(setting: &str, kb: u64) -> Result<usize, LimitError> {
    let range = "a number of KiB from 1 to 65536 (64 MiB)";
    if !(1..=MAX_WASM_STACK_KB).contains(&kb) {
        return Err(LimitError::new(setting, range, kb));
    }
    usize::try_from(kb << 10).map_err(|_| LimitError::new(setting, range, kb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_the_setting_and_the_range() {
        let err = timeout("TIMEOUT_SEC", 1e20).unwrap_err().to_string();
        assert_eq!(
            err,
            "TIMEOUT_SEC must be a number of seconds above 0 and at most 604800 (7 days), got 100000000000000000000"
        );
        for secs in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(timeout("TIMEOUT_SEC", secs).is_err(), "{secs}");
        }
        assert!(memory_bytes("MAX_MEMORY_MB", 0).is_err());
        assert!(memory_bytes("MAX_MEMORY_MB", u64::MAX).is_err());
        assert!(output_bytes("MAX_OUTPUT_BYTES", u64::MAX).is_err());
        assert!(wasm_stack_bytes("MAX_WASM_STACK_KB", 1 << 40).is_err());
    }

    #[test]
    fn values_in_range_convert_to_units() {
        assert_eq!(timeout("t", 0.5), Ok(Duration::from_millis(500)));
        assert_eq!(
            timeout("t", MAX_TIMEOUT_SEC),
            Ok(Duration::from_secs(604_800))
        );
        assert_eq!(memory_bytes("m", 256), Ok(256 << 20));
        assert_eq!(memory_bytes("m", MAX_MEMORY_MB), Ok(64 << 30));
        assert_eq!(output_bytes("o", 0), Ok(0));
        assert_eq!(wasm_stack_bytes("s", 1024), Ok(1 << 20));
    }
}
