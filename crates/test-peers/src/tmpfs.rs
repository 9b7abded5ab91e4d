//! A small filesystem of its own for disk-full tests: a tmpfs mounted on a fresh directory
//! (needs root, as the suite runs), resized in place, unmounted on drop.

use std::path::Path;
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
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}
