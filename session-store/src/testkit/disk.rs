//! A small, real file system a test can fill up: a tmpfs of a few MiB,
//! mounted for the test (which needs the right to mount, as root in a
//! container has) and unmounted when dropped, also when the test fails.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    /// The mount point; removed after the unmount.
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `2m`), or says why
    /// it cannot.
    ///
    /// # Errors
    ///
    /// Why the file system could not be mounted (no right to mount, no
    /// `mount` command).
    pub fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        Ok(SmallDisk { dir })
    }

    /// [`mount`](Self::mount), or `None` after printing why the test is
    /// skipped (where mounting is not allowed).
    pub fn or_skip(size: &str) -> Option<Self> {
        match Self::mount(size) {
            Ok(disk) => Some(disk),
            Err(reason) => {
                println!("skipped: cannot mount a small filesystem here ({reason})");
                None
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a file still open after a failed assertion): detach it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the file system of `dir` with a file (`ballast`) until a write
/// fails for lack of space; removing that file frees the space again.
///
/// # Panics
///
/// If the file cannot be created, or a write fails for another reason.
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = File::create(&path).expect("the ballast file");
    let chunk = vec![0xa5u8; 4096];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk failed otherwise: {e}"),
        }
    }
    // What a partial write may have left of the last chunk is kept: the
    // disk stays full.
    path
}
