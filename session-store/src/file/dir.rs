//! Names and durability of the files in a store directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

/// The lock file every open store holds.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// A file a store owns, by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Entry {
    /// `log-N.<ext>`: frames appended after snapshot N.
    Log(u64),
    /// `snapshot-N.<ext>`: everything in logs before N.
    Snapshot(u64),
    /// `*.tmp`: an unfinished snapshot, to delete.
    Temp,
}

/// How a store names its logs and snapshots: by number, with its own
/// extension, so two kinds of store never read each other's files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names {
    ext: &'static str,
}

/// The session store's files (`.mcps`).
pub(crate) const SESSIONS: Names = Names { ext: "mcps" };

/// The event store's files (`.mcpe`).
pub(crate) const EVENTS: Names = Names { ext: "mcpe" };

impl Names {
    pub(crate) fn log_path(self, dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("log-{n:016x}.{}", self.ext))
    }

    pub(crate) fn snapshot_path(self, dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("snapshot-{n:016x}.{}", self.ext))
    }

    pub(crate) fn snapshot_temp_path(self, dir: &Path, n: u64) -> PathBuf {
        dir.join(format!("snapshot-{n:016x}.tmp"))
    }

    fn parse(self, name: &str) -> Option<Entry> {
        if name.ends_with(".tmp") {
            return Some(Entry::Temp);
        }
        let stem = name.strip_suffix(self.ext)?.strip_suffix('.')?;
        let (kind, number) = stem.split_once('-')?;
        let n = u64::from_str_radix(number, 16).ok()?;
        match kind {
            "log" => Some(Entry::Log(n)),
            "snapshot" => Some(Entry::Snapshot(n)),
            _ => None,
        }
    }

    /// The store's files in `dir`, sorted, with their paths.
    pub(crate) fn list(self, dir: &Path) -> Result<Vec<(Entry, PathBuf)>, Error> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            if let Some(parsed) = entry.file_name().to_str().and_then(|n| self.parse(n)) {
                entries.push((parsed, entry.path()));
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// The number after every log and snapshot in `dir` (1 if there are
    /// none): a file numbered so is newer than all of them.
    pub(crate) fn next_number(self, dir: &Path) -> Result<u64, Error> {
        let newest = self
            .list(dir)?
            .into_iter()
            .filter_map(|(entry, _)| match entry {
                Entry::Log(n) | Entry::Snapshot(n) => Some(n),
                Entry::Temp => None,
            })
            .max()
            .unwrap_or(0);
        Ok(newest + 1)
    }

    /// Removes logs and snapshots numbered below `n`, and leftover
    /// temporary files; syncs the directory if anything went.
    pub(crate) fn remove_before(self, dir: &Path, n: u64) -> io::Result<()> {
        let entries = self.list(dir).map_err(io::Error::other)?;
        let mut removed = false;
        for (entry, path) in entries {
            let old = match entry {
                Entry::Log(m) | Entry::Snapshot(m) => m < n,
                Entry::Temp => true,
            };
            if old {
                fs::remove_file(&path)?;
                removed = true;
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Makes the directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` with `contents`, fsyncs it, and fsyncs the directory. On
/// failure the file is removed again (best effort), so a full disk is not
/// left with a half-made file that takes space and the name.
pub(crate) fn create_synced(dir: &Path, path: &Path, contents: &[u8]) -> io::Result<File> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| sync_dir(dir));
    match written {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// The name of the file [`probe`] writes; `.tmp`, so it is removed with
/// leftover temporary files if a crash leaves it behind.
const PROBE_FILE: &str = "probe.tmp";

/// Whether the directory takes writes again: writes a block to a fresh
/// file, `fdatasync`s it and removes it. Cheap enough to run at every
/// attempt to recover from an I/O error, before the costly reopen.
pub(crate) fn probe(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE);
    let outcome = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(&[0u8; 4096])?;
            file.sync_data()
        });
    let removed = fs::remove_file(&path);
    outcome?;
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Takes the directory's lock (an advisory `flock` on `LOCK`, released when
/// the file closes, also when the process dies): a second store on the same
/// directory gets [`Error::Locked`].
pub(crate) fn lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_each_store_reads_only_its_own() {
        let dir = Path::new("/d");
        for names in [SESSIONS, EVENTS] {
            for (path, entry) in [
                (names.log_path(dir, 0x2a), Entry::Log(0x2a)),
                (names.snapshot_path(dir, 7), Entry::Snapshot(7)),
                (names.snapshot_temp_path(dir, 7), Entry::Temp),
            ] {
                let name = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(names.parse(name), Some(entry), "{name}");
            }
            assert_eq!(names.parse(LOCK_FILE), None);
            assert_eq!(names.parse("log-zz.mcps"), None);
            assert_eq!(names.parse("log-zz.mcpe"), None);
        }
        assert_eq!(SESSIONS.parse("log-1.mcpe"), None);
        assert_eq!(EVENTS.parse("log-1.mcps"), None);
        assert_eq!(SESSIONS.parse("log-1xmcps"), None);
    }
}
