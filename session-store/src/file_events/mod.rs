//! [`FileEventStore`]: resumable-stream events in a directory, durable
//! across crashes and restarts.

mod committer;
mod files;
mod format;
mod recovery;
mod state;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use session_core::{
    EventId, EventStore, GroupCommitStats, Result, SessionId, StoredEvent, StreamId,
};
use tokio::sync::oneshot;

use crate::Error;
use crate::active_log::ActiveLog;
use crate::commit_stats::CommitStats;
use committer::{Committer, Op, Queue, Work};
use state::{Limits, State};

pub use recovery::EventRecoveryReport;

/// Settings of a [`FileEventStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileEventStoreOptions {
    /// Events kept per stream, oldest dropped first (256; at least 1).
    pub events_per_stream: usize,
    /// Streams kept per session, least recently created dropped first (64;
    /// at least 1).
    pub streams_per_session: usize,
    /// The log is compacted once it is larger than this and than twice the
    /// retained events (4 MiB).
    pub compact_min_bytes: u64,
    /// After an I/O error, the wait before the first attempt to reopen the
    /// directory (100 ms); each failed attempt doubles it, up to
    /// [`reopen_backoff_max`](Self::reopen_backoff_max). See "After an I/O
    /// error" in [`FileEventStore`]'s durability contract.
    pub reopen_backoff_min: Duration,
    /// The longest wait between two attempts to reopen the directory (5 s).
    pub reopen_backoff_max: Duration,
    /// Once the log is this long (1 MiB), the store keeps 1 MiB of zeros
    /// written and synced ahead of its end, so that a batch's `fdatasync`
    /// writes its data in place instead of also committing the file's new
    /// size through the file system's journal. Reopening truncates the
    /// zeros. `u64::MAX` turns it off. As
    /// [`FileStoreOptions::reserve_from_bytes`](crate::FileStoreOptions::reserve_from_bytes).
    pub reserve_from_bytes: u64,
}

impl Default for FileEventStoreOptions {
    fn default() -> Self {
        FileEventStoreOptions {
            events_per_stream: 256,
            streams_per_session: 64,
            compact_min_bytes: 4 << 20,
            reopen_backoff_min: Duration::from_millis(100),
            reopen_backoff_max: Duration::from_secs(5),
            reserve_from_bytes: 1 << 20,
        }
    }
}

impl FileEventStoreOptions {
    /// Sets the events kept per stream.
    pub fn events_per_stream(mut self, n: usize) -> Self {
        self.events_per_stream = n;
        self
    }

    /// Sets the streams kept per session.
    pub fn streams_per_session(mut self, n: usize) -> Self {
        self.streams_per_session = n;
        self
    }

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

    /// Sets the first and the longest wait between attempts to reopen the
    /// directory after an I/O error (a `max` below `min` is raised to it).
    pub fn reopen_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reopen_backoff_min = min;
        self.reopen_backoff_max = max.max(min);
        self
    }
}

/// Keeps the latest events of each stream in a directory, so a client can
/// resume its SSE streams (`Last-Event-ID`) after the server was killed and
/// restarted. Meant to live beside a [`FileStore`](crate::FileStore), in a
/// subdirectory `events/` of its directory; it takes its own lock, so it is
/// safe on its own too.
///
/// Every retained event is also held in memory: reads never touch the disk.
///
/// # Durability
///
/// - **When an append is acknowledged.** `append` and `remove_session`
///   return `Ok` only after the frame, and every frame queued before it, has
///   been written to the log and `fdatasync` has returned.
/// - **What reads see.** Only acknowledged events: `replay_after` and
///   `latest` never show an event a crash could still take away, so an id a
///   client was sent is never handed out again.
/// - **Ids never repeat.** Sequence numbers continue after a reopen. A stream
///   dropped by the bound and created again under the same name (the
///   standalone stream `g` of a long session) restarts above every id it had,
///   so `<stream>_<seq>` never names two events of one session: once a
///   session has dropped a stream, the streams it creates start above the
///   highest id of any stream it dropped (instead of at 1; position 0 still
///   replays such a stream from its start). Only `remove_session` forgets a
///   session's numbering, with its events.
/// - **Group commit.** One thread writes every queued append in one batch and
///   syncs once: concurrent appends share a sync.
/// - **What a crash can lose.** Appends not yet acknowledged. An unfinished
///   write at the end of the log is dropped on open
///   ([`EventRecoveryReport::torn_bytes`]); an append whose future was
///   dropped may or may not be kept, one that returned
///   [`session_core::Error::Backend`] says which with its
///   [`outcome`](session_core::Error::outcome).
/// - **Damage.** Every frame carries CRC-32 checksums of its header and of
///   its data. A damaged frame is skipped and listed in
///   [`EventRecoveryReport::damage`], never returned as data: its stream
///   resumes only from after it (`replay_after` from before it is `None`).
/// - **After an I/O error** (a full disk, a failed `fsync`) the store
///   recovers by itself, as [`FileStore`](crate::FileStore) does, never
///   retrying the failed `fsync`: the operations of the batch that failed
///   get [`WriteOutcome::Unknown`](session_core::WriteOutcome::Unknown);
///   then appends and removals are refused before they are queued
///   ([`WriteOutcome::NotApplied`](session_core::WriteOutcome::NotApplied),
///   "the event store refuses appends after an I/O error: …; retrying"),
///   [`readiness`](EventStore::readiness) reports the same error, and reads
///   go on from memory. The commit thread tries to reopen the directory
///   [`reopen_backoff_min`](FileEventStoreOptions::reopen_backoff_min)
///   (100 ms) after the failure, then at intervals doubling up to
///   [`reopen_backoff_max`](FileEventStoreOptions::reopen_backoff_max)
///   (5 s): a small probe file written and `fdatasync`ed, the directory read
///   back as [`open`](Self::open) reads it, rewritten into a new synced
///   snapshot, and a new log started; only then is the state read back
///   swapped in and appends accepted again. Every acknowledged event
///   survives, and what readers see stays durable; sequence numbers go on
///   from what the disk holds (a number handed to no caller may be used
///   again, one a reader saw never is).
/// - **Assumptions.** `fsync`/`fdatasync` make written data durable; a rename
///   followed by an `fsync` of the directory is atomic and durable.
///
/// # Bounds and space
///
/// At most `events_per_stream` events per stream (oldest dropped first) and
/// `streams_per_session` streams per session (least recently created dropped
/// first), as [`MemoryEventStore`](crate::MemoryEventStore). `replay_after` is
/// `None` for an unknown stream or when events after `after` were dropped;
/// `latest` is the last acknowledged id even if the bound dropped the event.
/// Once the log outgrows twice the retained events, the retained events are
/// written to a snapshot (temporary file, `fsync`, rename, `fsync` of the
/// directory) and the older files removed, so the directory stays within a
/// small multiple of the retained data and reopening reads only that.
///
/// ```
/// use session_core::{EventId, EventStore, SessionId, StreamId};
/// use session_store::FileEventStore;
///
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path().join("events");
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let session = SessionId::generate();
/// let g = StreamId::standalone();
/// let first = {
///     let events = FileEventStore::open(&dir, 256, 64)?;
///     let first = events.append(&session, &g, r#"{"n":1}"#.into()).await?;
///     events.append(&session, &g, r#"{"n":2}"#.into()).await?;
///     first
/// }; // closed here, as at a restart (or a kill -9 after the appends returned)
/// let events = FileEventStore::open(&dir, 256, 64)?;
/// let replay = events.replay_after(&session, &first).await?.unwrap();
/// assert_eq!(&*replay[0].data, r#"{"n":2}"#);
/// // Numbering continues: no id is ever reused.
/// let third = events.append(&session, &g, r#"{"n":3}"#.into()).await?;
/// assert_eq!(third.to_string(), "g_3");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct FileEventStore {
    state: Arc<State>,
    queue: Arc<Queue>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Counted by the commit thread, read by
    /// [`group_commit_stats`](EventStore::group_commit_stats).
    stats: Arc<CommitStats>,
    report: EventRecoveryReport,
    dir: PathBuf,
    /// Removals queued and not yet durable: while there are none, removing
    /// a session this store holds nothing of needs no trip to the commit
    /// thread.
    removals: std::sync::atomic::AtomicUsize,
    /// Held for the store's lifetime; closing it releases the lock.
    _lock: File,
}

impl FileEventStore {
    /// Opens (creating if needed) the event store in `dir`, keeping
    /// `events_per_stream` events of each stream and `streams_per_session`
    /// streams of each session (both at least 1).
    ///
    /// Opening reads the retained events, so call it from a blocking context
    /// (`tokio::task::spawn_blocking`) if the runtime must not stall.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another store has the directory open,
    /// [`Error::Format`] for files of another format version, [`Error::Io`] if
    /// the directory cannot be created, read or written.
    pub fn open(
        dir: impl AsRef<Path>,
        events_per_stream: usize,
        streams_per_session: usize,
    ) -> std::result::Result<Self, Error> {
        Self::open_with(
            dir,
            FileEventStoreOptions::default()
                .events_per_stream(events_per_stream)
                .streams_per_session(streams_per_session),
        )
    }

    /// Opens the event store in `dir` with `options`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: FileEventStoreOptions,
    ) -> std::result::Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = files::lock(&dir)?;
        let state = Arc::new(State::new(Limits {
            events_per_stream: options.events_per_stream.max(1),
            streams_per_session: options.streams_per_session.max(1),
        }));
        let recovered = recovery::recover(&dir, &state)?;
        if let Some(snapshot) = recovered.snapshot {
            files::EVENTS
                .remove_before(&dir, snapshot)
                .map_err(|e| Error::io("remove old event logs in", &dir, e))?;
        }
        let (log, log_number, log_bytes) =
            open_log(&dir, recovered.log, recovered.snapshot.unwrap_or(1))?;
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(CommitStats::default());
        let committer = Committer {
            dir: dir.clone(),
            state: state.clone(),
            queue: queue.clone(),
            log: ActiveLog::new(
                files::EVENTS,
                format::file_header(format::FileKind::Log),
                log,
                log_number,
                log_bytes,
                crate::reserve::Reservation::new(options.reserve_from_bytes),
            ),
            compact_min_bytes: options.compact_min_bytes,
            reopen_backoff: (
                options.reopen_backoff_min,
                options.reopen_backoff_max.max(options.reopen_backoff_min),
            ),
            stats: stats.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("event-store-commit".into())
            .spawn(move || committer.run())
            .map_err(|e| Error::io("start the commit thread for", &dir, e))?;
        Ok(FileEventStore {
            state,
            queue,
            committer: Mutex::new(Some(handle)),
            stats,
            report: recovered.report,
            dir,
            removals: std::sync::atomic::AtomicUsize::new(0),
            _lock: lock,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening the directory found: events loaded, damage, torn bytes.
    /// (A reopen after an I/O error logs what it found instead.)
    pub fn recovery(&self) -> &EventRecoveryReport {
        &self.report
    }
}

/// Waits for a queued operation to become durable.
async fn durable(done: oneshot::Receiver<Result<()>>) -> Result<()> {
    done.await.unwrap_or_else(|_| {
        // The commit thread ended without answering: it may have written it.
        Err(session_core::Error::backend_msg(
            "the event store stopped before the event was known to be durable",
        )
        .with_outcome(session_core::WriteOutcome::Unknown))
    })
}

#[async_trait]
impl EventStore for FileEventStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId> {
        if data.len() > format::MAX_DATA {
            return Err(session_core::Error::backend_msg(format!(
                "an event of {} bytes is larger than the event store takes ({} bytes)",
                data.len(),
                format::MAX_DATA
            )));
        }
        let crc = crc32fast::hash(data.as_bytes());
        let (ack, done) = oneshot::channel();
        let seq = {
            let mut shard = self.state.lock(session);
            self.queue.check_failed()?;
            let (seq, epoch, start) = shard.append(session, stream, data.clone());
            self.queue.push(Op {
                session: session.clone(),
                work: Work::Event {
                    stream: stream.clone(),
                    start,
                    seq,
                    epoch,
                    data,
                    crc,
                },
                ack,
            })?;
            seq
        };
        durable(done).await?;
        Ok(EventId {
            stream: stream.clone(),
            seq,
        })
    }

    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Result<Option<Vec<StoredEvent>>> {
        Ok(self.state.lock(session).replay_after(session, after))
    }

    async fn latest(&self, session: &SessionId, stream: &StreamId) -> Result<Option<EventId>> {
        Ok(self
            .state
            .lock(session)
            .latest(session, stream)
            .map(|seq| EventId {
                stream: stream.clone(),
                seq,
            }))
    }

    fn may_hold(&self, session: &SessionId) -> bool {
        self.removals.load(std::sync::atomic::Ordering::SeqCst) > 0
            || self.state.lock(session).contains(session)
    }

    async fn remove_session(&self, session: &SessionId) -> Result<()> {
        let (ack, done) = oneshot::channel();
        let _counted = {
            let mut shard = self.state.lock(session);
            self.queue.check_failed()?;
            // A session with no events has nothing on disk, unless a removal
            // of it is still on its way: wait for what is queued.
            let work = if shard.remove(session) {
                self.removals
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Work::Remove
            } else if self.removals.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                // Nothing of it here, on disk or on its way there.
                return Ok(());
            } else {
                Work::Barrier
            };
            // Counted down however this ends, even if the caller stops
            // waiting.
            let counted = matches!(work, Work::Remove).then_some(CountDown(&self.removals));
            self.queue.push(Op {
                session: session.clone(),
                work,
                ack,
            })?;
            counted
        };
        durable(done).await
    }

    /// `Ok` unless the store refuses appends after an I/O error (until it
    /// has reopened its directory), with the reason.
    async fn readiness(&self) -> Result<()> {
        self.queue.check_failed()
    }

    /// Counted by the commit thread for every batch of the log since
    /// [`open`](FileEventStore::open): its writes (events appended and
    /// sessions removed; the frame that starts a new stream is not one), the
    /// time its `fdatasync` took (the `write` before it is not timed), and
    /// failed batches. A batch that only waited for earlier ones (removing a
    /// session while another removal is on its way) writes nothing and is not
    /// counted. An acknowledged append is already counted; syncs of
    /// snapshots and of a reopened directory are not batches.
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        Some(self.stats.snapshot())
    }
}

/// Decrements a counter when dropped.
struct CountDown<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FileEventStore {
    /// Finishes the appends already queued, then releases the directory.
    fn drop(&mut self) {
        self.queue.stop();
        if let Some(handle) = self.committer.lock().take() {
            let _ = handle.join();
        }
    }
}

/// Opens the log to append to: the newest one cut back to its last intact
/// frame, or a new one numbered `first`. Returns the file, its number and its
/// length.
fn open_log(
    dir: &Path,
    newest: Option<(u64, u64, bool)>,
    first: u64,
) -> std::result::Result<(File, u64, u64), Error> {
    let header = format::file_header(format::FileKind::Log);
    let Some((n, valid, intact)) = newest else {
        let path = files::EVENTS.log_path(dir, first);
        let file = files::create_synced(dir, &path, &header)
            .map_err(|e| Error::io("create event log", &path, e))?;
        return Ok((file, first, header.len() as u64));
    };
    let path = files::EVENTS.log_path(dir, n);
    let io = |e| Error::io("open event log", &path, e);
    let mut file = OpenOptions::new().write(true).open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let valid = if !intact && valid <= header.len() as u64 {
        // The header never made it to disk whole, and nothing follows it:
        // start the file again.
        file.set_len(0).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        header.len() as u64
    } else {
        valid
    };
    if len != valid {
        file.set_len(valid).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    file.seek(SeekFrom::Start(valid)).map_err(io)?;
    Ok((file, n, valid))
}
