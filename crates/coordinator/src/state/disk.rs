//! Free space on the state directory's filesystem against a low watermark, so that the API can
//! refuse new work (503 with Retry-After) before a write meets ENOSPC.

use std::path::Path;

/// The default low watermark: 128 MiB, twice the journal's largest size before a checkpoint
/// (64 MiB), so a full journal and the checkpoint after it still fit.
pub const DEFAULT_LOW_WATERMARK_BYTES: u64 = 128 << 20;

/// Space on the state directory's filesystem, as measured once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail` x `f_frsize`).
    pub free_bytes: u64,
    /// Size of the filesystem, in bytes.
    pub total_bytes: u64,
    /// Below this many free bytes, space is low ([`is_low`](Self::is_low)).
    pub low_watermark_bytes: u64,
}

impl DiskSpace {
    /// Measures the filesystem holding `dir` (`statvfs`).
    pub fn measure(dir: &Path, low_watermark_bytes: u64) -> std::io::Result<Self> {
        let stat = rustix::fs::statvfs(dir)?;
        Ok(Self {
            free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
            total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
            low_watermark_bytes,
        })
    }

    /// Whether free space is under the low watermark: new work should wait (503 + Retry-After).
    pub fn is_low(&self) -> bool {
        self.free_bytes < self.low_watermark_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_is_low_only_under_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::measure(dir.path(), 0).unwrap();
        assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes);
        assert!(!space.is_low(), "nothing is under a zero watermark");
        let high = DiskSpace::measure(dir.path(), space.total_bytes + 1).unwrap();
        assert!(high.is_low(), "free space never exceeds the filesystem");
    }

    #[test]
    fn measuring_a_missing_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let err = DiskSpace::measure(&dir.path().join("nope"), 0).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
