//! A small filesystem of its own for disk-full tests: a tmpfs mounted on a fresh directory
//! (needs root, as the suite runs), resized in place, unmounted on drop.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted when dropped.
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`3m`); `None`, with the reason printed, when this user cannot
    /// mount (not root), so the caller can skip.
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a directory to mount on");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match mounted {
            Ok(status) if status.success() => Some(Self(dir)),
            other => {
                eprintln!("skipped: mounting a tmpfs needs root ({other:?})");
                None
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Gives it a new size (`64m`): space comes back, or goes, without unmounting.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount to {size} failed");
    }

    /// Fills it to the last byte with one file (`ballast`), whose path is returned: removing it
    /// gives the space back.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("ballast");
        let mut file = std::fs::File::create(&path).expect("create the ballast");
        let chunk = vec![0u8; 1 << 16];
        while file.write_all(&chunk).is_ok() {}
        // The chunk that failed may have left a few bytes free: take them one by one.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}
