//! The log a commit thread appends to, and the compaction it may have
//! started: shared by the session store ([`crate::file`]) and the event store
//! ([`crate::file_events`]), which differ only in their frames and what their
//! snapshots hold.
//!
//! Compaction starts the next log first, on the commit thread, between
//! batches: everything written before is then durable and visible, so a
//! snapshot of that state holds exactly what the earlier logs hold, and what
//! is written next goes to the new log. The snapshot itself is written on a
//! thread of its own, which removes the files it replaces.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::container::FILE_HEADER_LEN;
use crate::file::dir::{self, Names};
use crate::reserve::Reservation;

/// The log being appended to.
#[derive(Debug)]
pub(crate) struct ActiveLog {
    names: Names,
    /// The header a new log of this store starts with.
    header: [u8; FILE_HEADER_LEN],
    file: File,
    number: u64,
    /// Bytes in the log: its header and every batch written to it.
    bytes: u64,
    /// The zeros written ahead of the log's end (see [`crate::reserve`]).
    reservation: Reservation,
    compaction: Option<JoinHandle<()>>,
}

impl ActiveLog {
    /// Log `number` of the store named by `names`, open at its end after
    /// `bytes`; a new log starts with `header`.
    pub(crate) fn new(
        names: Names,
        header: [u8; FILE_HEADER_LEN],
        file: File,
        number: u64,
        bytes: u64,
        reservation: Reservation,
    ) -> Self {
        Self {
            names,
            header,
            file,
            number,
            bytes,
            reservation,
            compaction: None,
        }
    }

    /// The log's path in `dir`.
    pub(crate) fn path(&self, dir: &Path) -> std::path::PathBuf {
        self.names.log_path(dir, self.number)
    }

    /// Appends `batch` and syncs the log's data; the time the sync took.
    /// Counted in the log's size only once synced.
    pub(crate) fn append(&mut self, batch: &[u8]) -> io::Result<Duration> {
        self.file.write_all(batch)?;
        let syncing = Instant::now();
        self.file.sync_data()?;
        let synced = syncing.elapsed();
        self.bytes += batch.len() as u64;
        Ok(synced)
    }

    /// Keeps the reservation of zeros ahead of the log's end.
    pub(crate) fn keep_reserve(&mut self, dir: &Path) {
        self.reservation.keep(&self.file, self.bytes, dir);
    }

    /// Appends to `file`, log `number`, from now on: a log that holds only
    /// its header, created and synced by the caller.
    pub(crate) fn switch_to(&mut self, file: File, number: u64) {
        self.file = file;
        self.number = number;
        self.bytes = FILE_HEADER_LEN as u64;
        self.reservation.reset();
    }

    /// Waits for a compaction in progress, if any.
    pub(crate) fn wait_for_compaction(&mut self) {
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.join();
        }
    }

    /// Whether a compaction is still running (one that finished is joined).
    fn compacting(&mut self) -> bool {
        match &self.compaction {
            Some(running) if !running.is_finished() => true,
            _ => {
                self.wait_for_compaction();
                false
            }
        }
    }

    /// Starts a compaction once the log holds more than `threshold` bytes,
    /// unless one is running: starts the next log (created and synced in
    /// `dir`), then runs `snapshot` with that log's number on a thread named
    /// `thread`. `take` gives the snapshot's contents; it is called on this
    /// thread, after the switch and before anything else is written.
    ///
    /// A log that cannot be created postpones the compaction to a later
    /// batch (with a warning); the current log goes on.
    pub(crate) fn compact_past<S: Send + 'static>(
        &mut self,
        threshold: u64,
        dir: &Path,
        thread: &str,
        take: impl FnOnce() -> S,
        snapshot: impl FnOnce(&Path, u64, S) -> io::Result<()> + Send + 'static,
    ) {
        if self.bytes <= threshold || self.compacting() {
            return;
        }
        let next = self.number + 1;
        let path = self.names.log_path(dir, next);
        let log = match dir::create_synced(dir, &path, &self.header) {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot start a new log, compaction postponed: {e}");
                return;
            }
        };
        self.switch_to(log, next);
        let contents = take();
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name(thread.to_string())
            .spawn(move || {
                if let Err(e) = snapshot(&dir, next, contents) {
                    tracing::warn!(dir = %dir.display(), "compaction failed, the logs are kept: {e}");
                }
            });
        match spawned {
            Ok(handle) => self.compaction = Some(handle),
            Err(e) => tracing::warn!("cannot start the compaction thread {thread}: {e}"),
        }
    }
}
