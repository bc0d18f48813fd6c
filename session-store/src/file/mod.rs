//! [`FileStore`]: sessions in a directory, durable across crashes.

mod committer;
mod compact;
pub(crate) mod dir;
mod frame;
mod index;
mod recovery;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use session_core::{
    Cas, GroupCommitStats, Page, Result, SessionId, SessionRecord, SessionStore, Timestamp,
};
use tokio::sync::oneshot;

use crate::Error;
use crate::active_log::ActiveLog;
use crate::commit_stats::CommitStats;
use committer::{Committer, Queue, Settings, Write as LogWrite};
use index::{Durable, Index, Latest};

pub(crate) use dir::LOCK_FILE;
pub use recovery::RecoveryReport;

/// Settings of a [`FileStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// The log is compacted into a snapshot once it is larger than this and
    /// than twice the live data (16 MiB).
    pub compact_min_bytes: u64,
    /// The largest encoded record (its JSON) a write may store (256 MiB,
    /// also the most a reader accepts; a larger value is lowered to it). A
    /// larger record is refused with
    /// [`session_core::Error::RecordTooLarge`] before anything is queued.
    pub max_record_bytes: usize,
    /// After an I/O error, the wait before the first attempt to reopen the
    /// directory (100 ms); each failed attempt doubles it, up to
    /// [`reopen_backoff_max`](Self::reopen_backoff_max). See "After an I/O
    /// error" in [`FileStore`]'s durability contract.
    pub reopen_backoff_min: Duration,
    /// The longest wait between two attempts to reopen the directory (5 s).
    pub reopen_backoff_max: Duration,
    /// Once the log is this long (1 MiB), the store keeps 1 MiB of zeros
    /// written and synced ahead of its end, so that a batch's `fdatasync`
    /// writes its data in place instead of also committing the file's new
    /// size through the file system's journal (on ext4 here about 1.5× faster;
    /// see BENCHMARKS.md).
    /// Reopening truncates the zeros. `u64::MAX` turns it off.
    pub reserve_from_bytes: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            compact_min_bytes: 16 << 20,
            max_record_bytes: frame::MAX_PAYLOAD,
            reopen_backoff_min: Duration::from_millis(100),
            reopen_backoff_max: Duration::from_secs(5),
            reserve_from_bytes: 1 << 20,
        }
    }
}

impl FileStoreOptions {
    /// Sets the minimum log size before compaction.
    pub fn compact_min_bytes(mut self, bytes: u64) -> Self {
        self.compact_min_bytes = bytes;
        self
    }

    /// Sets the log length from which zeros are kept written ahead of its
    /// end (`u64::MAX`: never); see
    /// [`reserve_from_bytes`](Self::reserve_from_bytes).
    pub fn reserve_from_bytes(mut self, bytes: u64) -> Self {
        self.reserve_from_bytes = bytes;
        self
    }

    /// Sets the largest encoded record a write may store (at most 256 MiB).
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets the first and the longest wait between attempts to reopen the
    /// directory after an I/O error (a `max` below `min` is raised to it).
    pub fn reopen_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reopen_backoff_min = min;
        self.reopen_backoff_max = max.max(min);
        self
    }
}

/// A session store in a directory: the embedded default.
///
/// Every record is also held in memory, so reads never touch the disk; writes
/// are appended to a log and made durable by group commit.
///
/// # Durability
///
/// - **When a write is acknowledged.** `insert`, `compare_and_swap`, `delete`
///   and `remove_expired` return `Ok` only after the write's frame, and every
///   frame before it, has been written to the log and `fdatasync` has returned.
///   Nothing acknowledged is lost when the process is killed, or the machine
///   loses power, afterwards.
/// - **What reads see.** Only acknowledged state: a read never returns a write
///   that a crash could still take away. (A compare-and-swap is checked against
///   the latest accepted write, so writers never wait on each other's sync.)
/// - **Group commit.** One thread writes every queued write in one batch and
///   syncs once: one writer pays one sync per write, 64 concurrent writers
///   share a sync between them.
/// - **What a crash can lose.** Writes not yet acknowledged: on open, a final
///   batch without its commit frame is dropped and the log truncated. A write
///   whose future was dropped may or may not have been applied; one that
///   returned [`session_core::Error::Backend`] says which with its
///   [`outcome`](session_core::Error::outcome) (see "After an I/O error").
/// - **Damage.** Every frame carries CRC-32 checksums of its header and of its
///   record. A record that fails its check is reported for that session only:
///   loading it returns [`session_core::Error::Corrupt`], it is listed in
///   [`RecoveryReport::corrupt`], and every other session loads. This holds
///   in snapshots too: a snapshot is complete once renamed into place (it is
///   synced first), so damage inside it, even to its final commit frame, is
///   treated as damage and its readable records are used, never as a torn
///   write that would discard them all.
/// - **Damage that names no session.** A frame whose *header* fails its
///   checksum cannot be attributed to a session: its id may be the damaged
///   part. It is skipped and listed only in [`RecoveryReport::damage`]; the
///   session it held is then missing (or at an earlier version, if an older
///   frame of it is intact) and is not in [`RecoveryReport::corrupt`].
/// - **What happens to a corrupt record.** It stays, and is carried into
///   snapshots so the damage is not silently forgotten, until it is deleted:
///   by id with [`delete`](SessionStore::delete), or by
///   [`SessionManager::clear_all`](session_core::SessionManager::clear_all),
///   which finds such records with
///   [`list_corrupt`](SessionStore::list_corrupt). It is not listed by
///   [`list`](SessionStore::list), and sweeps leave it alone because its
///   deadline cannot be read. Writing over it is refused with
///   [`session_core::Error::Corrupt`]: its owner cannot be checked.
/// - **Size.** A record whose encoding exceeds
///   [`FileStoreOptions::max_record_bytes`] is refused with
///   [`session_core::Error::RecordTooLarge`] before it is queued, so every
///   acknowledged record can be read back.
/// - **After an I/O error** (a full disk, a failed `fsync`) the store
///   recovers by itself, without a restart and without ever retrying the
///   failed `fsync` (which may have dropped data the kernel will not write
///   again):
///   - the writes of the batch that failed get
///     [`WriteOutcome::Unknown`](session_core::WriteOutcome::Unknown): they
///     may be on disk, in part or whole;
///   - from then on every write is refused before it is queued, with
///     [`WriteOutcome::NotApplied`](session_core::WriteOutcome::NotApplied)
///     and a message saying why ("the file store refuses writes after an
///     I/O error: …; retrying"), and [`readiness`](SessionStore::readiness)
///     reports the same error; reads (`load`, `list`, `count`, …) go on from
///     memory, showing what was acknowledged;
///   - the commit thread tries to reopen the directory
///     [`reopen_backoff_min`](FileStoreOptions::reopen_backoff_min) (100 ms)
///     after the failure, then at intervals doubling up to
///     [`reopen_backoff_max`](FileStoreOptions::reopen_backoff_max) (5 s),
///     with or without traffic. An attempt writes and `fdatasync`s a small
///     probe file (so a disk still full costs little), reads the directory
///     back exactly as [`open`](Self::open) does at a restart, writes all of
///     it to a new snapshot (temporary file, `fsync`, rename, `fsync` of the
///     directory; the older files are then removed) and starts a new log
///     after it. Only if every step succeeds is the state read back swapped
///     in, shard by shard, and writes accepted again;
///   - every acknowledged write survives: it was synced before it was
///     acknowledged, the directory is read back from disk, and the new
///     snapshot is synced on its own. A failed write the disk kept is in the
///     state read back and from then on durable like the rest; one it did not
///     keep is not. Either way what readers see is durable.
/// - **Assumptions.** `fsync` and `fdatasync` make written data durable; a
///   rename followed by an `fsync` of the directory is atomic and durable.
///
/// The log is compacted into a snapshot (temporary file, `fsync`, rename,
/// `fsync` of the directory, then removal of the old logs) once it outgrows
/// twice the live data. Only one `FileStore` may have a directory open at a
/// time: the lock file `LOCK` is held for the store's lifetime, and a second
/// open fails with [`Error::Locked`].
///
/// ```
/// use std::sync::Arc;
/// use session_core::{ManagerConfig, NewSession, SessionManager};
/// use session_store::{FileStore, SystemClock};
///
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let id = {
///     let store = Arc::new(FileStore::open(dir)?);
///     let manager = SessionManager::new(store, Arc::new(SystemClock), ManagerConfig::default());
///     let session = manager.create(NewSession::new()).await?;
///     session.id().clone()
/// }; // the store closes here, as at a restart
/// let store = Arc::new(FileStore::open(dir)?);
/// let manager = SessionManager::new(store, Arc::new(SystemClock), ManagerConfig::default());
/// assert!(manager.get(&id).await.is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct FileStore {
    index: Arc<Index>,
    queue: Arc<Queue>,
    max_record_bytes: usize,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Counted by the commit thread, read by
    /// [`group_commit_stats`](SessionStore::group_commit_stats).
    stats: Arc<CommitStats>,
    report: RecoveryReport,
    dir: PathBuf,
    /// Held for the store's lifetime; closing it releases the lock.
    _lock: File,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir` with default options.
    ///
    /// Opening reads the whole store, so call it from a blocking context
    /// (`tokio::task::spawn_blocking`) if the runtime must not stall.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another store has the directory open,
    /// [`Error::Format`] for files of another format version, [`Error::Io`] if
    /// the directory cannot be created, read or written.
    pub fn open(dir: impl AsRef<Path>) -> std::result::Result<Self, Error> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// Opens the store in `dir` with `options`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: FileStoreOptions,
    ) -> std::result::Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = dir::lock(&dir)?;
        let recovered = recovery::recover(&dir)?;
        if let Some(snapshot) = recovered.snapshot {
            dir::SESSIONS
                .remove_before(&dir, snapshot)
                .map_err(|e| Error::io("remove old logs in", &dir, e))?;
        }
        let (log, log_seq, log_bytes) = open_log(&dir, recovered.log, recovered.snapshot)?;
        let index = Arc::new(Index::with_capacity(recovered.entries.len()));
        index.load(recovered.entries);
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(CommitStats::default());
        let committer = Committer {
            settings: Settings {
                dir: dir.clone(),
                compact_min_bytes: options.compact_min_bytes,
                reopen_backoff: (
                    options.reopen_backoff_min,
                    options.reopen_backoff_max.max(options.reopen_backoff_min),
                ),
            },
            index: index.clone(),
            queue: queue.clone(),
            log: ActiveLog::new(
                dir::SESSIONS,
                frame::file_header(frame::FileKind::Log),
                log,
                log_seq,
                log_bytes,
                crate::reserve::Reservation::new(options.reserve_from_bytes),
            ),
            last_batch: recovered.last_batch,
            stats: stats.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("file-store-commit".into())
            .spawn(move || committer.run())
            .map_err(|e| Error::io("start the commit thread for", &dir, e))?;
        Ok(FileStore {
            index,
            queue,
            max_record_bytes: options.max_record_bytes.min(frame::MAX_PAYLOAD),
            committer: Mutex::new(Some(handle)),
            stats,
            report: recovered.report,
            dir,
            _lock: lock,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening the directory found: sessions loaded, damage, time taken.
    /// (A reopen after an I/O error logs what it found instead.)
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// Validates a write against the latest accepted state of `id` under its
    /// shard lock and, if `decide` accepts, queues it. `decide` returns
    /// `Err(outcome)` to answer without writing.
    fn stage<T>(
        &self,
        id: &SessionId,
        decide: impl FnOnce(Option<Latest<'_>>) -> std::result::Result<LogWrite, Result<T>>,
    ) -> std::result::Result<oneshot::Receiver<Result<()>>, Result<T>> {
        let mut shard = self.index.lock(id);
        let write = decide(shard.slot(id).and_then(|slot| slot.latest()))?;
        self.queue.push(&mut shard, id, write).map_err(Err)
    }
}

/// Waits for a queued write to become durable.
async fn durable(done: oneshot::Receiver<Result<()>>) -> Result<()> {
    done.await.unwrap_or_else(|_| {
        // The commit thread ended without answering: it may have written it.
        Err(session_core::Error::backend_msg(
            "the file store stopped before the write was known to be durable",
        )
        .with_outcome(session_core::WriteOutcome::Unknown))
    })
}

impl FileStore {
    /// Encodes `record` for the log, refusing one a reader would not accept.
    fn put(&self, record: &SessionRecord) -> Result<LogWrite> {
        let (payload, crc) = frame::record_payload(record)
            .map_err(|e| session_core::Error::backend("cannot encode the session record", e))?;
        if payload.len() > self.max_record_bytes {
            return Err(session_core::Error::RecordTooLarge {
                size: payload.len(),
                limit: self.max_record_bytes,
            });
        }
        Ok(LogWrite::Put {
            record: record.clone(),
            payload,
            crc,
        })
    }
}

fn corrupt(id: &SessionId, detail: &str) -> session_core::Error {
    session_core::Error::Corrupt {
        id: id.clone(),
        detail: detail.to_owned(),
    }
}

#[async_trait]
impl SessionStore for FileStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        let write = self.put(record)?;
        let staged = self.stage(record.id(), |latest| match latest {
            Some(_) => Err(Err(session_core::Error::AlreadyExists)),
            None => Ok(write),
        });
        match staged {
            Ok(done) => durable(done).await,
            Err(outcome) => outcome,
        }
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        match self.index.durable(id) {
            Some(Durable::Record(record)) => Ok(Some(record)),
            Some(Durable::Corrupt(detail)) => Err(corrupt(id, &detail)),
            None => Ok(None),
        }
    }

    async fn compare_and_swap(&self, record: &SessionRecord, expected_version: u64) -> Result<Cas> {
        let write = self.put(record)?;
        let staged = self.stage(record.id(), |latest| match latest {
            None => Err(Ok(Cas::Conflict { current: None })),
            Some(Latest::Corrupt(detail)) => Err(Err(corrupt(record.id(), detail))),
            Some(Latest::Record(current)) if current.stored_status().is_terminal() => {
                Err(Err(session_core::terminal_error(current.stored_status())))
            }
            Some(Latest::Record(current)) if current.version() != expected_version => {
                Err(Ok(Cas::Conflict {
                    current: Some(current.clone()),
                }))
            }
            Some(Latest::Record(_)) => Ok(write),
        });
        match staged {
            Ok(done) => durable(done).await.map(|()| Cas::Swapped),
            Err(outcome) => outcome,
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        match self.stage(id, |latest| match latest {
            None => Err(Ok(false)),
            Some(_) => Ok(LogWrite::Delete),
        }) {
            Ok(done) => durable(done).await.map(|()| true),
            Err(outcome) => outcome,
        }
    }

    async fn count(&self) -> Result<usize> {
        Ok(self.index.live())
    }

    /// Lists in id order; the cursor is the last id of the previous page.
    /// Corrupt records are not listed (see
    /// [`list_corrupt`](SessionStore::list_corrupt)).
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let (records, next) = self.index.page(cursor.unwrap_or(""), limit);
        Ok(Page { records, next })
    }

    /// A write that fails part way (an I/O error) still returns the records
    /// removed before it, if any; the error otherwise.
    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        let mut staged = Vec::new();
        let mut failed = None;
        for record in self.index.due(now, limit) {
            // Skip a record written since `due` looked at it.
            let outcome = self.stage(record.id(), |latest| match latest {
                Some(Latest::Record(current)) if current.version() == record.version() => {
                    Ok(LogWrite::Delete)
                }
                _ => Err(Ok(())),
            });
            match outcome {
                Ok(done) => staged.push((record, done)),
                Err(Ok(())) => {}
                Err(Err(e)) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let mut removed = Vec::with_capacity(staged.len());
        for (record, done) in staged {
            match durable(done).await {
                Ok(()) => removed.push(record),
                // Report the error that says the least is known.
                Err(e) if e.outcome() == Some(session_core::WriteOutcome::Unknown) => {
                    failed = Some(e);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) if removed.is_empty() => Err(e),
            _ => Ok(removed),
        }
    }

    /// Sessions whose latest record is known to be corrupt (found at open,
    /// and kept until deleted).
    async fn list_corrupt(&self, limit: usize) -> Result<Vec<SessionId>> {
        Ok(self.index.corrupt_ids(limit))
    }

    /// `Ok` unless the store refuses writes after an I/O error (until it has
    /// reopened its directory), with the reason.
    async fn readiness(&self) -> Result<()> {
        match self.queue.failure() {
            Some(reason) => Err(committer::refused(&reason)),
            None => Ok(()),
        }
    }

    /// Counted by the commit thread for every batch of the log since
    /// [`open`](FileStore::open): its writes (records stored or deleted; the
    /// batch's commit frame is not one), the time its `fdatasync` took (the
    /// `write` before it is not timed), and failed batches. A write that has
    /// been acknowledged is already counted. Syncs of snapshots and of a
    /// reopened directory are not batches and are not counted.
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        Some(self.stats.snapshot())
    }
}

impl Drop for FileStore {
    /// Finishes the writes already queued, then releases the directory.
    fn drop(&mut self) {
        self.queue.stop();
        if let Some(handle) = self.committer.lock().take() {
            let _ = handle.join();
        }
    }
}

/// Opens the log to append to: the newest one cut back to its last commit, or
/// a new one. Returns the file, its number and its length.
fn open_log(
    dir: &Path,
    newest: Option<(u64, u64)>,
    snapshot: Option<u64>,
) -> std::result::Result<(File, u64, u64), Error> {
    let header = frame::file_header(frame::FileKind::Log);
    let Some((seq, valid)) = newest else {
        let seq = snapshot.unwrap_or(1);
        let path = dir::SESSIONS.log_path(dir, seq);
        let file = dir::create_synced(dir, &path, &header)
            .map_err(|e| Error::io("create log", &path, e))?;
        return Ok((file, seq, header.len() as u64));
    };
    let path = dir::SESSIONS.log_path(dir, seq);
    let io = |e| Error::io("open log", &path, e);
    let mut file = OpenOptions::new().write(true).open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let valid = if valid < header.len() as u64 {
        // The header itself never made it to disk: start the file again.
        file.set_len(0).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        header.len() as u64
    } else {
        valid
    };
    if len != valid {
        file.set_len(valid).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    file.seek(SeekFrom::Start(valid)).map_err(io)?;
    Ok((file, seq, valid))
}
