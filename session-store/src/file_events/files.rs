//! Names and durability of the files in an event store directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;
// The same directory discipline as the session store's files.
pub(super) use crate::file::dir::{create_synced, lock, sync_dir};

const EXT: &str = "mcpe";

/// A file the store owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Entry {
    /// `log-N.mcpe`: frames appended after snapshot N.
    Log(u64),
    /// `snapshot-N.mcpe`: the retained state as of the start of log N.
    Snapshot(u64),
    /// `*.tmp`: an unfinished snapshot, to delete.
    Temp,
}

pub(super) fn log_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("log-{n:016x}.{EXT}"))
}

pub(super) fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:016x}.{EXT}"))
}

pub(super) fn snapshot_temp_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:016x}.tmp"))
}

fn parse(name: &str) -> Option<Entry> {
    if name.ends_with(".tmp") {
        return Some(Entry::Temp);
    }
    let stem = name.strip_suffix(EXT)?.strip_suffix('.')?;
    let (kind, number) = stem.split_once('-')?;
    let n = u64::from_str_radix(number, 16).ok()?;
    match kind {
        "log" => Some(Entry::Log(n)),
        "snapshot" => Some(Entry::Snapshot(n)),
        _ => None,
    }
}

/// The store's files in `dir`, sorted.
pub(super) fn list(dir: &Path) -> Result<Vec<(Entry, PathBuf)>, Error> {
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

/// Removes logs and snapshots numbered below `n`, and temporary files.
pub(super) fn remove_before(dir: &Path, n: u64) -> io::Result<()> {
    let entries = list(dir).map_err(io::Error::other)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::dir::LOCK_FILE;

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
        assert_eq!(parse(LOCK_FILE), None);
        assert_eq!(parse("log-zz.mcpe"), None);
        assert_eq!(parse("log-1.mcps"), None);
    }
}
