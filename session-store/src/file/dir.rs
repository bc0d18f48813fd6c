//! Names and durability of the files in a store directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

/// The lock file every open store holds.
pub(crate) const LOCK_FILE: &str = "LOCK";
const EXT: &str = "mcps";

/// A file the store owns, by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Entry {
    /// `log-N.mcps`: batches appended after snapshot N.
    Log(u64),
    /// `snapshot-N.mcps`: everything in logs before N.
    Snapshot(u64),
    /// `*.tmp`: an unfinished snapshot, to delete.
    Temp,
}

pub(crate) fn log_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:016x}.{EXT}"))
}

pub(crate) fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:016x}.{EXT}"))
}

pub(crate) fn snapshot_temp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:016x}.tmp"))
}

fn parse(name: &str) -> Option<Entry> {
    if name.ends_with(".tmp") {
        return Some(Entry::Temp);
    }
    let stem = name.strip_suffix(&format!(".{EXT}"))?;
    let (kind, number) = stem.split_once('-')?;
    let seq = u64::from_str_radix(number, 16).ok()?;
    match kind {
        "log" => Some(Entry::Log(seq)),
        "snapshot" => Some(Entry::Snapshot(seq)),
        _ => None,
    }
}

/// The store's files in `dir`, with their paths.
pub(crate) fn list(dir: &Path) -> Result<Vec<(Entry, PathBuf)>, Error> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Some(parsed) = entry.file_name().to_str().and_then(parse) {
            entries.push((parsed, entry.path()));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Makes the directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` with `contents`, fsyncs it, and fsyncs the directory.
pub(crate) fn create_synced(dir: &Path, path: &Path, contents: &[u8]) -> io::Result<File> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
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
    fn names_round_trip() {
        let dir = Path::new("/d");
        for (path, entry) in [
            (log_path(dir, 0x2a), Entry::Log(0x2a)),
            (snapshot_path(dir, 7), Entry::Snapshot(7)),
            (snapshot_temp_path(dir, 7), Entry::Temp),
        ] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse(name), Some(entry), "{name}");
        }
        assert_eq!(parse("LOCK"), None);
        assert_eq!(parse("log-zz.mcps"), None);
    }
}
