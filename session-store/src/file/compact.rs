//! Snapshots: the whole durable state in one file, so old logs can go.
//!
//! A snapshot is written to a temporary file, synced, renamed into place and
//! the directory synced, and only then are the logs it replaces removed. A
//! crash at any point leaves either the old logs or the new snapshot (or both)
//! to recover from.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use session_core::SessionId;

use super::dir;
use super::frame::{self, FileKind, FrameKind};
use super::index::Durable;

/// Batch number of the single batch a snapshot holds.
pub(crate) const SNAPSHOT_BATCH: u64 = 0;

/// Writes `snapshot-<seq>` holding `entries`, then removes the logs and
/// snapshots numbered below `seq`. An unfinished snapshot is removed (best
/// effort) when writing it fails, so it does not hold on to disk space.
pub(crate) fn write_snapshot<'a>(
    dir: &Path,
    seq: u64,
    entries: impl ExactSizeIterator<Item = (&'a SessionId, &'a Durable)>,
) -> io::Result<()> {
    let temp = dir::SESSIONS.snapshot_temp_path(dir, seq);
    let written = write_temp(&temp, entries);
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    fs::rename(&temp, dir::SESSIONS.snapshot_path(dir, seq))?;
    dir::sync_dir(dir)?;
    dir::SESSIONS.remove_before(dir, seq)
}

/// Writes and syncs the snapshot's temporary file.
fn write_temp<'a>(
    temp: &Path,
    entries: impl ExactSizeIterator<Item = (&'a SessionId, &'a Durable)>,
) -> io::Result<()> {
    let count = entries.len();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(temp)?);
    out.write_all(&frame::file_header(FileKind::Snapshot))?;
    let mut buf = Vec::with_capacity(4096);
    for (id, durable) in entries {
        buf.clear();
        match durable {
            Durable::Record(record) => {
                let (payload, crc) = frame::record_payload(record)?;
                frame::encode_frame(
                    &mut buf,
                    FrameKind::Put,
                    id.as_str(),
                    SNAPSHOT_BATCH,
                    &payload,
                    crc,
                );
            }
            Durable::Corrupt(detail) => {
                let payload = detail.as_bytes();
                let crc = crc32fast::hash(payload);
                frame::encode_frame(
                    &mut buf,
                    FrameKind::Corrupt,
                    id.as_str(),
                    SNAPSHOT_BATCH,
                    payload,
                    crc,
                );
            }
        }
        out.write_all(&buf)?;
    }
    buf.clear();
    frame::encode_commit(&mut buf, SNAPSHOT_BATCH, count);
    out.write_all(&buf)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}
