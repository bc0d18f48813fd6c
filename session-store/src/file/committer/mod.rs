//! Group commit: one thread appends every accepted write to the log and hands
//! each batch to the sync thread ([`super::syncer`]), which syncs what has
//! been written, then makes it visible and acknowledges it.
//!
//! Writers queue while a batch is written, and the next batch takes all of
//! them; batches written while a sync runs share the next sync: with one
//! writer every write costs one sync, with 64 writers a sync carries up to 64
//! writes.
//!
//! When a batch cannot be written or synced, the store refuses writes
//! (failing them before they are queued) and this thread reopens the
//! directory at growing intervals until that works: see [`Committer::recover`].

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use session_core::{Error, SessionId, SessionRecord, WriteOutcome};
use tokio::sync::oneshot;

use super::compact;
use super::dir;
use super::frame::{self, FileKind, FrameKind};
use super::index::{Durable, Index, Shard};
use super::recovery::{self, RecoveryReport};
use super::syncer::{Syncer, Written};
use crate::commit_stats::CommitStats;
use crate::reserve::Reservation;

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

#[derive(Debug)]
pub(crate) struct Op {
    seq: u64,
    id: SessionId,
    write: Write,
    ack: oneshot::Sender<Result<(), Error>>,
}

#[derive(Debug, Default)]
struct QueueState {
    ops: Vec<Op>,
    next_seq: u64,
    stopping: bool,
    /// Why the store refuses writes, while it does: set when a batch fails,
    /// cleared once the directory is reopened.
    failed: Option<Arc<str>>,
}

/// The queue between writers and the committer thread.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

/// The error of a write refused while the store recovers from `reason`:
/// nothing of it reached the disk.
pub(crate) fn refused(reason: &str) -> Error {
    Error::backend_msg(refusal(reason))
}

/// The message of a write refused while the store recovers from `reason`.
pub(crate) fn refusal(reason: &str) -> String {
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
        let mut state = self.state.lock();
        if let Some(reason) = &state.failed {
            return Err(refused(reason));
        }
        if state.stopping {
            return Err(Error::backend_msg("the file store is shutting down"));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let pending = match &write {
            Write::Put { record, .. } => Some(record.clone()),
            Write::Delete => None,
        };
        shard.set_pending(id, seq, pending);
        state.ops.push(Op {
            seq,
            id: id.clone(),
            write,
            ack,
        });
        let wake = state.ops.len() == 1;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(done)
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.state.lock().failed.clone()
    }

    /// Starts refusing writes for `reason`; returns the writes queued and
    /// not taken yet, which never reached the disk. Wakes the committer, which
    /// then finds nothing to take and reopens the directory.
    pub(crate) fn fail(&self, reason: Arc<str>) -> Vec<Op> {
        let mut state = self.state.lock();
        state.failed = Some(reason);
        let queued = std::mem::take(&mut state.ops);
        drop(state);
        self.ready.notify_one();
        queued
    }

    /// Updates the reason writes are refused for.
    fn set_failure(&self, reason: Arc<str>) {
        self.state.lock().failed = Some(reason);
    }

    /// Accepts writes again.
    pub(crate) fn recovered(&self) {
        self.state.lock().failed = None;
    }

    /// Waits `delay`, or less if the store stops; whether it stops.
    fn pause(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut state = self.state.lock();
        while !state.stopping {
            if self.ready.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.stopping
    }

    /// Asks the committer to finish what is queued and stop.
    pub(crate) fn stop(&self) {
        self.state.lock().stopping = true;
        self.ready.notify_one();
    }

    /// Waits for work and takes all of it; `None` once stopping and drained,
    /// and an empty batch once writes are refused (a sync failed: the
    /// committer reopens the directory).
    pub(crate) fn take(&self) -> Option<Vec<Op>> {
        let mut state = self.state.lock();
        while state.ops.is_empty() && !state.stopping && state.failed.is_none() {
            self.ready.wait(&mut state);
        }
        if state.ops.is_empty() {
            return (!state.stopping).then(Vec::new);
        }
        Some(std::mem::take(&mut state.ops))
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
    /// The log batches are written to; shared with the sync thread, which
    /// syncs it.
    pub(crate) log: Arc<File>,
    pub(crate) log_seq: u64,
    pub(crate) log_bytes: u64,
    /// The zeros written ahead of the log's end (see [`crate::reserve`]).
    pub(crate) reservation: Reservation,
    pub(crate) last_batch: u64,
    pub(crate) compaction: Option<JoinHandle<()>>,
    /// What each batch is counted in: shared with the store handle.
    pub(crate) stats: Arc<CommitStats>,
    /// The thread that syncs what this one writes.
    pub(crate) syncer: Syncer,
}

impl Committer {
    /// Runs until the queue stops, then waits for the sync thread and for a
    /// compaction in progress.
    pub(crate) fn run(mut self) {
        let mut buf = Vec::with_capacity(64 << 10);
        while let Some(ops) = self.queue.take() {
            if ops.is_empty() {
                // Writes are refused: a sync failed.
                if let Some(reason) = self.syncer.failure().or_else(|| self.queue.failure()) {
                    self.syncer.drain();
                    if !self.recover(&reason) {
                        break;
                    }
                }
                continue;
            }
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
            let path = dir::SESSIONS.log_path(&self.settings.dir, self.log_seq);
            match (&*self.log).write_all(&buf) {
                Ok(()) => {
                    self.log_bytes += buf.len() as u64;
                    self.syncer.hand(Written {
                        ops,
                        log: self.log.clone(),
                        path,
                    });
                    self.maybe_compact();
                    self.reservation
                        .keep(&self.log, self.log_bytes, &self.settings.dir);
                }
                Err(e) => {
                    // What was handed over before is synced (or fails) first.
                    self.syncer.drain();
                    self.stats.failed();
                    let reason: Arc<str> =
                        Arc::from(format!("cannot write {}: {e}", path.display()));
                    tracing::error!(
                        dir = %self.settings.dir.display(),
                        "{reason}; writes are refused until the directory is reopened"
                    );
                    let queued = self.queue.fail(reason.clone());
                    // This batch may be on disk in part or in whole; the
                    // writes queued behind it never got there.
                    let unknown = format!("the write may not be durable: {reason}");
                    fail(&self.index, ops, &unknown, WriteOutcome::Unknown);
                    fail(
                        &self.index,
                        queued,
                        &refusal(&reason),
                        WriteOutcome::NotApplied,
                    );
                    if !self.recover(&reason) {
                        break;
                    }
                }
            }
        }
        self.syncer.drain();
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.join();
        }
    }

    /// After a failed batch, while writes are refused: reopens the directory
    /// after `reopen_backoff.0`, then at intervals doubling up to
    /// `reopen_backoff.1`, until it works (`true`: writes are accepted
    /// again) or the store stops (`false`).
    ///
    /// The failed `fsync` is never retried: reopening reads the directory
    /// back as [`FileStore::open`](super::FileStore::open) does, rewrites
    /// all of it into a new snapshot (so what reads then show, including a
    /// failed batch the disk may hold, is durable from that snapshot's own
    /// `fsync`, not from the failed one), starts a new log, and only then
    /// replaces the in-memory state.
    fn recover(&mut self, cause: &str) -> bool {
        let (mut delay, longest) = self.settings.reopen_backoff;
        loop {
            if self.queue.pause(delay) {
                return false;
            }
            match self.reopen() {
                Ok(report) => {
                    tracing::info!(
                        dir = %self.settings.dir.display(),
                        sessions = report.sessions,
                        corrupt = report.corrupt.len(),
                        torn_bytes = report.torn_bytes,
                        "the file store reopened its directory after an I/O error and accepts writes again"
                    );
                    self.syncer.recovered();
                    self.queue.recovered();
                    return true;
                }
                Err(e) => {
                    tracing::warn!(
                        dir = %self.settings.dir.display(),
                        "reopening the file store failed, retrying in {:?}: {e}",
                        delay.saturating_mul(2).min(longest)
                    );
                    self.queue
                        .set_failure(Arc::from(format!("{cause} (reopening failed: {e})")));
                }
            }
            delay = delay.saturating_mul(2).min(longest);
        }
    }

    /// One attempt to reopen the directory; see [`recover`](Self::recover).
    fn reopen(&mut self) -> Result<RecoveryReport, crate::Error> {
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.join();
        }
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
        self.log = Arc::new(log);
        self.log_seq = next;
        self.log_bytes = frame::FILE_HEADER_LEN as u64;
        self.reservation.reset();
        self.last_batch = self.last_batch.max(recovered.last_batch);
        Ok(recovered.report)
    }

    /// Starts a compaction when the log holds more than twice the live data
    /// (and at least the configured minimum), unless one is running.
    fn maybe_compact(&mut self) {
        let threshold = self
            .settings
            .compact_min_bytes
            .max(self.index.bytes().saturating_mul(2));
        if self.log_bytes <= threshold {
            return;
        }
        if let Some(running) = &self.compaction {
            if !running.is_finished() {
                return;
            }
            if let Some(done) = self.compaction.take() {
                let _ = done.join();
            }
        }
        // Start the next log first, once everything written is synced and
        // promoted: the snapshot then holds exactly what the earlier logs
        // hold, because nothing is promoted until this thread writes again.
        self.syncer.drain();
        let next = self.log_seq + 1;
        let path = dir::SESSIONS.log_path(&self.settings.dir, next);
        let log = match dir::create_synced(
            &self.settings.dir,
            &path,
            &frame::file_header(FileKind::Log),
        ) {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot start a new log, compaction postponed: {e}");
                return;
            }
        };
        self.log = Arc::new(log);
        self.log_seq = next;
        self.log_bytes = frame::FILE_HEADER_LEN as u64;
        self.reservation.reset();
        let entries = self.index.snapshot();
        let dir = self.settings.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("file-store-compact".into())
            .spawn(move || {
                let entries = entries.iter().map(|(id, durable)| (id, durable));
                if let Err(e) = compact::write_snapshot(&dir, next, entries) {
                    tracing::warn!(dir = %dir.display(), "compaction failed, the logs are kept: {e}");
                }
            });
        match spawned {
            Ok(handle) => self.compaction = Some(handle),
            Err(e) => tracing::warn!("cannot start the compaction thread: {e}"),
        }
    }
}

/// Promotes synced writes in `index` and acknowledges them.
pub(crate) fn apply(index: &Index, ops: Vec<Op>) {
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
        index.promote(&op.id, op.seq, durable, bytes);
        let _ = op.ack.send(Ok(()));
    }
}

/// Forgets `ops` (no longer pending in `index`) and fails each with `message`.
pub(crate) fn fail(index: &Index, ops: Vec<Op>, message: &str, outcome: WriteOutcome) {
    for op in ops {
        index.rollback(&op.id, op.seq);
        let error = Error::backend_msg(message).with_outcome(outcome);
        let _ = op.ack.send(Err(error));
    }
}

#[cfg(test)]
pub(crate) mod tests;
