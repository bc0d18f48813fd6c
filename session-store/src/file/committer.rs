//! Group commit: one thread appends every accepted write to the log, syncs
//! once per batch, then makes the batch visible and acknowledges it.
//!
//! Writers queue while a sync is in progress, and the next batch takes all of
//! them: with one writer every write costs one sync, with 64 writers a sync
//! carries up to 64 writes.
//!
//! When a batch cannot be written or synced, the store refuses writes
//! (failing them before they are queued) and this thread reopens the
//! directory at growing intervals until that works: see [`Committer::recover`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::{Error, SessionId, SessionRecord, WriteOutcome};
use tokio::sync::oneshot;

use super::compact;
use super::dir;
use super::frame::{self, FileKind, FrameKind};
use super::index::{Durable, Index, Shard};
use super::recovery::{self, RecoveryReport};
use crate::active_log::ActiveLog;
use crate::commit_queue::{CommitQueue, Refusal, reopen_with_backoff};
use crate::commit_stats::CommitStats;

/// A write accepted into the queue.
#[derive(Debug)]
pub(crate) enum Write {
    /// Store this record; `payload` is its JSON and `crc` the payload's CRC-32.
    Put {
        record: SessionRecord,
        payload: Vec<u8>,
        crc: u32,
    },
    /// Forget the record.
    Delete,
}

/// One queued write: `seq` orders it among the writes of its session.
#[derive(Debug)]
struct Op {
    seq: u64,
    id: SessionId,
    write: Write,
    ack: oneshot::Sender<Result<(), Error>>,
}

/// The longest a batch waits for writers it expects.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// The queue between writers and the committer thread.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    ops: CommitQueue<Op>,
    /// Numbers the writes; only read and bumped under the queue's lock.
    next_seq: AtomicU64,
}

/// The error of a write refused while the store recovers from `reason`:
/// nothing of it reached the disk.
pub(crate) fn refused(reason: &str) -> Error {
    Error::backend_msg(refusal(reason))
}

fn refusal(reason: &str) -> String {
    format!("the file store refuses writes after an I/O error: {reason}; retrying")
}

impl Queue {
    /// Queues `write` for `id` and marks it pending in `shard`, which the
    /// caller holds locked: so the log order of one session's writes is the
    /// order in which they were validated.
    pub(crate) fn push(
        &self,
        shard: &mut Shard,
        id: &SessionId,
        write: Write,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let (ack, done) = oneshot::channel();
        let queued = self.ops.push_with(|| {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let pending = match &write {
                Write::Put { record, .. } => Some(record.clone()),
                Write::Delete => None,
            };
            shard.set_pending(id, seq, pending);
            Op {
                seq,
                id: id.clone(),
                write,
                ack,
            }
        });
        match queued {
            Ok(()) => Ok(done),
            Err(Refusal::Failed(reason)) => Err(refused(&reason)),
            Err(Refusal::Stopping) => Err(Error::backend_msg("the file store is shutting down")),
        }
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.ops.failure()
    }

    /// Asks the committer to finish what is queued and stop.
    pub(crate) fn stop(&self) {
        self.ops.stop();
    }
}

/// Settings the committer needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dir: PathBuf,
    /// Compact once the log exceeds this, and twice the live data.
    pub(crate) compact_min_bytes: u64,
    /// After an I/O error: the wait before the first attempt to reopen the
    /// directory, doubled after each failed attempt up to the second value.
    pub(crate) reopen_backoff: (Duration, Duration),
}

/// The committer thread's state.
#[derive(Debug)]
pub(crate) struct Committer {
    pub(crate) settings: Settings,
    pub(crate) index: Arc<Index>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) log: ActiveLog,
    pub(crate) last_batch: u64,
    /// What each batch is counted in: shared with the store handle.
    pub(crate) stats: Arc<CommitStats>,
}

impl Committer {
    /// Runs until the queue stops, then waits for a compaction in progress.
    pub(crate) fn run(mut self) {
        let mut buf = Vec::with_capacity(64 << 10);
        let (mut expected, mut linger) = (1, Duration::ZERO);
        while let Some(ops) = self.queue.ops.take(expected, linger) {
            self.last_batch += 1;
            let batch = self.last_batch;
            buf.clear();
            for op in &ops {
                match &op.write {
                    Write::Put { payload, crc, .. } => {
                        let id = op.id.as_str();
                        frame::encode_frame(&mut buf, FrameKind::Put, id, batch, payload, *crc);
                    }
                    Write::Delete => {
                        let id = op.id.as_str();
                        frame::encode_frame(&mut buf, FrameKind::Delete, id, batch, &[], 0);
                    }
                }
            }
            frame::encode_commit(&mut buf, batch, ops.len());
            let started = Instant::now();
            match self.log.append(&buf) {
                Ok(synced) => {
                    self.stats.committed(ops.len(), synced);
                    // Wait for at most one sync (and at most `MAX_LINGER`)
                    // for as many writes as this batch carried: a writer that
                    // misses the batch waits a whole sync anyway.
                    expected = ops.len();
                    linger = started.elapsed().min(MAX_LINGER);
                    self.apply(ops);
                    self.maybe_compact();
                    self.log.keep_reserve(&self.settings.dir);
                }
                Err(e) => {
                    self.stats.failed();
                    let log = self.log.path(&self.settings.dir);
                    let reason: Arc<str> =
                        Arc::from(format!("cannot write {}: {e}", log.display()));
                    tracing::error!(
                        dir = %self.settings.dir.display(),
                        "{reason}; writes are refused until the directory is reopened"
                    );
                    let queued = self.queue.ops.fail(reason.clone());
                    // This batch may be on disk in part or in whole; the
                    // writes queued behind it never got there.
                    let unknown = format!("the write may not be durable: {reason}");
                    self.fail(ops, &unknown, WriteOutcome::Unknown);
                    self.fail(queued, &refusal(&reason), WriteOutcome::NotApplied);
                    (expected, linger) = (1, Duration::ZERO);
                    if !self.recover(&reason) {
                        break;
                    }
                }
            }
        }
        self.log.wait_for_compaction();
    }

    /// After a failed batch, while writes are refused: reopens the directory
    /// at growing intervals (see [`reopen_with_backoff`]) until it works
    /// (`true`: writes are accepted again) or the store stops (`false`).
    ///
    /// Reopening reads the directory back as
    /// [`FileStore::open`](super::FileStore::open) does, rewrites all of it
    /// into a new snapshot (so what reads then show, including a failed batch
    /// the disk may hold, is durable from that snapshot's own `fsync`, not
    /// from the failed one), starts a new log, and only then replaces the
    /// in-memory state.
    fn recover(&mut self, cause: &str) -> bool {
        let queue = self.queue.clone();
        let backoff = self.settings.reopen_backoff;
        let reopened =
            reopen_with_backoff(&queue.ops, backoff, cause, "file store", || self.reopen());
        let Some(report) = reopened else {
            return false;
        };
        tracing::info!(
            dir = %self.settings.dir.display(),
            sessions = report.sessions,
            corrupt = report.corrupt.len(),
            torn_bytes = report.torn_bytes,
            "the file store reopened its directory after an I/O error and accepts writes again"
        );
        true
    }

    /// One attempt to reopen the directory; see [`recover`](Self::recover).
    fn reopen(&mut self) -> Result<RecoveryReport, crate::Error> {
        self.log.wait_for_compaction();
        let dir = self.settings.dir.clone();
        dir::probe(&dir).map_err(|e| crate::Error::io("write a probe file in", &dir, e))?;
        let recovered = recovery::recover(&dir)?;
        let next = dir::SESSIONS.next_number(&dir)?;
        let entries: Vec<(SessionId, (Durable, u64))> = recovered.entries.into_iter().collect();
        compact::write_snapshot(&dir, next, entries.iter().map(|(id, (d, _))| (id, d)))
            .map_err(|e| crate::Error::io("write a snapshot in", &dir, e))?;
        let path = dir::SESSIONS.log_path(&dir, next);
        let log = dir::create_synced(&dir, &path, &frame::file_header(FileKind::Log))
            .map_err(|e| crate::Error::io("create log", &path, e))?;
        self.index.replace(entries);
        self.log.switch_to(log, next);
        self.last_batch = self.last_batch.max(recovered.last_batch);
        Ok(recovered.report)
    }

    fn apply(&self, ops: Vec<Op>) {
        for op in ops {
            let (durable, bytes) = match op.write {
                Write::Put {
                    record, payload, ..
                } => (
                    Some(Durable::Record(record)),
                    frame::frame_len(op.id.as_str(), payload.len()) as u64,
                ),
                Write::Delete => (None, 0),
            };
            self.index.promote(&op.id, op.seq, durable, bytes);
            let _ = op.ack.send(Ok(()));
        }
    }

    /// Forgets `ops` (no longer pending) and fails each with `message`.
    fn fail(&self, ops: Vec<Op>, message: &str, outcome: WriteOutcome) {
        for op in ops {
            self.index.rollback(&op.id, op.seq);
            let error = Error::backend_msg(message).with_outcome(outcome);
            let _ = op.ack.send(Err(error));
        }
    }

    /// Starts a compaction when the log holds more than twice the live data
    /// (and at least the configured minimum), unless one is running.
    fn maybe_compact(&mut self) {
        let threshold = self
            .settings
            .compact_min_bytes
            .max(self.index.bytes().saturating_mul(2));
        // The snapshot holds exactly what the earlier logs hold: this thread
        // is the only one promoting writes.
        let index = &self.index;
        self.log.compact_past(
            threshold,
            &self.settings.dir,
            "file-store-compact",
            || index.snapshot(),
            |dir, next, entries| {
                compact::write_snapshot(
                    dir,
                    next,
                    entries.iter().map(|(id, durable)| (id, durable)),
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reserve::Reservation;
    use session_core::{ExpiryPolicy, NewSession, Timestamp};
    use std::fs::File;

    /// A log the commit thread cannot write: every batch fails as a full or
    /// broken disk would make it fail.
    fn unwritable_log(dir: &std::path::Path) -> File {
        let path = dir::SESSIONS.log_path(dir, 1);
        std::fs::write(&path, frame::file_header(FileKind::Log)).unwrap();
        File::open(&path).unwrap() // read-only: writes fail with EBADF
    }

    /// A committer on an unwritable log in `dir`, reopening after `backoff`.
    fn start(
        dir: &std::path::Path,
        backoff: Duration,
    ) -> (
        Arc<Index>,
        Arc<Queue>,
        Arc<CommitStats>,
        std::thread::JoinHandle<()>,
    ) {
        let index = Arc::new(Index::new());
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(CommitStats::default());
        let committer = Committer {
            settings: Settings {
                dir: dir.to_path_buf(),
                compact_min_bytes: u64::MAX,
                reopen_backoff: (backoff, backoff),
            },
            index: index.clone(),
            queue: queue.clone(),
            log: ActiveLog::new(
                dir::SESSIONS,
                frame::file_header(FileKind::Log),
                unwritable_log(dir),
                1,
                frame::FILE_HEADER_LEN as u64,
                Reservation::new(u64::MAX),
            ),
            last_batch: 0,
            stats: stats.clone(),
        };
        let thread = std::thread::spawn(move || committer.run());
        (index, queue, stats, thread)
    }

    fn record() -> SessionRecord {
        SessionRecord::create(
            SessionId::generate(),
            NewSession::new(),
            Timestamp::from_millis(1),
            ExpiryPolicy::default(),
        )
    }

    fn put(
        index: &Index,
        queue: &Queue,
        record: &SessionRecord,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let (payload, crc) = frame::record_payload(record).unwrap();
        let mut shard = index.lock(record.id());
        let write = Write::Put {
            record: record.clone(),
            payload,
            crc,
        };
        queue.push(&mut shard, record.id(), write)
    }

    #[test]
    fn after_a_failed_write_the_store_refuses_writes_and_forgets_the_pending_one() {
        let dir = tempfile::tempdir().unwrap();
        // No reopening during this test.
        let (index, queue, stats, thread) = start(dir.path(), Duration::from_secs(3600));
        let record = record();
        let done = put(&index, &queue, &record).unwrap();
        let failed = done.blocking_recv().unwrap().unwrap_err();
        assert!(
            failed.to_string().contains("may not be durable"),
            "{failed}"
        );
        assert_eq!(
            failed.outcome(),
            Some(WriteOutcome::Unknown),
            "the failed batch may be on disk"
        );
        assert!(index.durable(record.id()).is_none());
        assert!(
            index.lock(record.id()).slot(record.id()).is_none(),
            "the failed write is no longer pending"
        );
        let refused = {
            let mut shard = index.lock(record.id());
            queue.push(&mut shard, record.id(), Write::Delete)
        };
        let refused = refused.unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("refuses writes after an I/O error") && message.contains("retrying"),
            "{message}"
        );
        assert_eq!(refused.outcome(), Some(WriteOutcome::NotApplied));
        assert!(queue.failure().is_some());
        let counted = stats.snapshot();
        assert_eq!(counted.failed_batches, 1);
        assert_eq!((counted.batches, counted.writes), (0, 0), "{counted:?}");
        // Stopping does not wait for the next attempt to reopen.
        queue.stop();
        thread.join().unwrap();
    }

    #[test]
    fn after_a_failed_write_the_directory_is_reopened_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (index, queue, stats, thread) = start(dir.path(), Duration::from_millis(5));
        let lost = record();
        let done = put(&index, &queue, &lost).unwrap();
        assert!(done.blocking_recv().unwrap().is_err());
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.failure().is_some() {
            assert!(Instant::now() < deadline, "the store did not reopen");
            std::thread::sleep(Duration::from_millis(5));
        }
        let kept = record();
        let done = put(&index, &queue, &kept).unwrap();
        done.blocking_recv().unwrap().unwrap();
        assert!(matches!(index.durable(kept.id()), Some(Durable::Record(r)) if r == kept));
        let counted = stats.snapshot();
        assert_eq!(
            (counted.failed_batches, counted.batches, counted.writes),
            (1, 1, 1),
            "the failed batch and the one after the reopening: {counted:?}"
        );
        queue.stop();
        thread.join().unwrap();

        // The reopened directory is a snapshot and a new log after it.
        let names: Vec<String> = dir::SESSIONS
            .list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, path)| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "log-0000000000000002.mcps",
                "snapshot-0000000000000002.mcps"
            ]
        );
        let recovered = recovery::recover(dir.path()).unwrap();
        assert_eq!(recovered.entries.len(), 1);
        assert!(recovered.entries.contains_key(kept.id()));
    }
}
