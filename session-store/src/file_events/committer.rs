//! Group commit: one thread writes every queued append to the log, syncs
//! once for the whole batch, then makes the batch visible and acknowledges it.
//!
//! Appends queue while a sync is in progress and the next batch takes all of
//! them: one writer pays one sync per event, 64 concurrent writers share a
//! sync between them. The same thread starts compactions between batches.
//!
//! When a batch cannot be written or synced, the store refuses appends and
//! removals (before they are queued) and this thread reopens the directory
//! at growing intervals until that works: see [`Committer::recover`].

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use session_core::{Error, SessionId, StreamId, WriteOutcome};
use tokio::sync::oneshot;

use super::files;
use super::format::{self, FileKind, FrameKind};
use super::recovery::{self, EventRecoveryReport};
use super::state::{Retained, State};
use crate::active_log::ActiveLog;
use crate::commit_queue::{CommitQueue, Refusal, reopen_with_backoff};
use crate::commit_stats::CommitStats;

/// What an operation writes.
#[derive(Debug)]
pub(super) enum Work {
    /// Event `seq` of `stream` (of the stream incarnation `epoch`), and the
    /// stream's start if this event created it.
    Event {
        stream: StreamId,
        start: Option<u64>,
        seq: u64,
        epoch: u64,
        data: Arc<str>,
        crc: u32,
    },
    /// The session's tombstone.
    Remove,
    /// Nothing: acknowledged once everything queued before it is durable.
    Barrier,
}

/// One queued operation.
#[derive(Debug)]
pub(super) struct Op {
    pub(super) session: SessionId,
    pub(super) work: Work,
    pub(super) ack: oneshot::Sender<Result<(), Error>>,
}

/// The queue between appenders and the commit thread.
#[derive(Debug, Default)]
pub(super) struct Queue {
    ops: CommitQueue<Op>,
}

/// The error of an operation refused while the store recovers from
/// `reason`: nothing of it reached the disk.
fn refusal(reason: &str) -> String {
    format!("the event store refuses appends after an I/O error: {reason}; retrying")
}

impl Queue {
    /// Queues `op`. Callers hold the session's shard lock, so the log order
    /// of one session's operations is the order they were accepted in.
    pub(super) fn push(&self, op: Op) -> Result<(), Error> {
        match self.ops.push_with(|| op) {
            Ok(()) => Ok(()),
            Err(Refusal::Failed(reason)) => Err(Error::backend_msg(refusal(&reason))),
            Err(Refusal::Stopping) => Err(Error::backend_msg("the event store is shutting down")),
        }
    }

    /// `Err` (nothing applied) while the store refuses appends after an I/O
    /// error. Cheap while it does not.
    pub(super) fn check_failed(&self) -> Result<(), Error> {
        if !self.ops.is_failing() {
            return Ok(());
        }
        match self.failure() {
            Some(reason) => Err(Error::backend_msg(refusal(&reason))),
            None => Ok(()),
        }
    }

    /// Why the store refuses appends, if it does.
    pub(super) fn failure(&self) -> Option<Arc<str>> {
        self.ops.failure()
    }

    /// Asks the commit thread to finish what is queued and stop.
    pub(super) fn stop(&self) {
        self.ops.stop();
    }
}

/// The commit thread's state.
#[derive(Debug)]
pub(super) struct Committer {
    pub(super) dir: PathBuf,
    pub(super) state: Arc<State>,
    pub(super) queue: Arc<Queue>,
    pub(super) log: ActiveLog,
    /// Compact once the log exceeds this and twice the retained data.
    pub(super) compact_min_bytes: u64,
    /// After an I/O error: the wait before the first attempt to reopen the
    /// directory, doubled after each failed attempt up to the second value.
    pub(super) reopen_backoff: (Duration, Duration),
    /// What each batch is counted in: shared with the store handle.
    pub(super) stats: Arc<CommitStats>,
}

impl Committer {
    /// Runs until the queue stops, then waits for a compaction in progress.
    pub(super) fn run(mut self) {
        let mut buf = Vec::with_capacity(64 << 10);
        while let Some(ops) = self.queue.ops.take(1, Duration::ZERO) {
            buf.clear();
            // Events and removals; barriers write nothing.
            let mut writes = 0;
            for op in &ops {
                let session = op.session.as_str();
                match &op.work {
                    Work::Event {
                        stream,
                        start,
                        seq,
                        data,
                        crc,
                        ..
                    } => {
                        writes += 1;
                        if let Some(base) = start {
                            let name = stream.as_str();
                            format::encode_frame(
                                &mut buf,
                                FrameKind::Start,
                                session,
                                name,
                                *base,
                                &[],
                                0,
                            );
                        }
                        format::encode_frame(
                            &mut buf,
                            FrameKind::Event,
                            session,
                            stream.as_str(),
                            *seq,
                            data.as_bytes(),
                            *crc,
                        );
                    }
                    Work::Remove => {
                        writes += 1;
                        format::encode_frame(&mut buf, FrameKind::Remove, session, "", 0, &[], 0);
                    }
                    Work::Barrier => {}
                }
            }
            // A batch of barriers alone is neither written nor counted.
            let written = if buf.is_empty() {
                Ok(None)
            } else {
                self.log.append(&buf).map(Some)
            };
            match written {
                Ok(synced) => {
                    if let Some(took) = synced {
                        self.stats.committed(writes, took);
                    }
                    self.publish(ops);
                    self.maybe_compact();
                    self.log.keep_reserve(&self.dir);
                }
                Err(e) => {
                    self.stats.failed();
                    let log = self.log.path(&self.dir);
                    let reason: Arc<str> =
                        Arc::from(format!("cannot write {}: {e}", log.display()));
                    tracing::error!(
                        dir = %self.dir.display(),
                        "{reason}; appends are refused until the directory is reopened"
                    );
                    let queued = self.queue.ops.fail(reason.clone());
                    // This batch may be on disk in part or in whole; what
                    // was queued behind it never got there.
                    let unknown = format!("the event may not be durable: {reason}");
                    fail(ops, &unknown, WriteOutcome::Unknown);
                    fail(queued, &refusal(&reason), WriteOutcome::NotApplied);
                    if !self.recover(&reason) {
                        break;
                    }
                }
            }
        }
        self.log.wait_for_compaction();
    }

    /// After a failed batch, while appends are refused: reopens the
    /// directory at growing intervals (see [`reopen_with_backoff`]) until it
    /// works (`true`) or the store stops (`false`). As the session store's:
    /// the directory is read back as at a restart, rewritten into a new
    /// snapshot and a new log started, and only then is the state read back
    /// swapped in.
    fn recover(&mut self, cause: &str) -> bool {
        let queue = self.queue.clone();
        let backoff = self.reopen_backoff;
        let reopened =
            reopen_with_backoff(&queue.ops, backoff, cause, "event store", || self.reopen());
        let Some(report) = reopened else {
            return false;
        };
        tracing::info!(
            dir = %self.dir.display(),
            events = report.events,
            torn_bytes = report.torn_bytes,
            "the event store reopened its directory after an I/O error and accepts appends again"
        );
        true
    }

    /// One attempt to reopen the directory; see [`recover`](Self::recover).
    fn reopen(&mut self) -> Result<EventRecoveryReport, crate::Error> {
        self.log.wait_for_compaction();
        let dir = self.dir.clone();
        files::probe(&dir).map_err(|e| crate::Error::io("write a probe file in", &dir, e))?;
        let fresh = self.state.empty_like();
        let recovered = recovery::recover(&dir, &fresh)?;
        let next = files::EVENTS.next_number(&dir)?;
        write_snapshot(&dir, next, &fresh.retained())
            .map_err(|e| crate::Error::io("write a snapshot in", &dir, e))?;
        let path = files::EVENTS.log_path(&dir, next);
        let log = files::create_synced(&dir, &path, &format::file_header(FileKind::Log))
            .map_err(|e| crate::Error::io("create event log", &path, e))?;
        self.state.replace_with(fresh);
        self.log.switch_to(log, next);
        Ok(recovered.report)
    }

    /// Makes a durable batch visible to readers, then acknowledges it.
    fn publish(&self, ops: Vec<Op>) {
        for op in ops {
            if let Work::Event {
                stream, seq, epoch, ..
            } = &op.work
            {
                self.state
                    .lock(&op.session)
                    .mark_durable(&op.session, stream, *epoch, *seq);
            }
            let _ = op.ack.send(Ok(()));
        }
    }

    /// Starts a compaction when the log holds more than twice the retained
    /// data (and at least the configured minimum), unless one is running.
    fn maybe_compact(&mut self) {
        let threshold = self
            .compact_min_bytes
            .max(self.state.live_bytes().saturating_mul(2));
        let state = &self.state;
        self.log.compact_past(
            threshold,
            &self.dir,
            "event-store-compact",
            || state.retained(),
            |dir, next, retained| write_snapshot(dir, next, &retained),
        );
    }
}

/// Fails each of `ops` with `message`.
fn fail(ops: Vec<Op>, message: &str, outcome: WriteOutcome) {
    for op in ops {
        let _ = op
            .ack
            .send(Err(Error::backend_msg(message).with_outcome(outcome)));
    }
}

/// Writes `snapshot-<n>` holding `retained` (temporary file, fsync, rename,
/// fsync of the directory), then removes the files it replaces. An
/// unfinished snapshot is removed (best effort) when writing it fails, so it
/// does not hold on to disk space.
pub(super) fn write_snapshot(dir: &Path, n: u64, retained: &[Retained]) -> io::Result<()> {
    let temp = files::EVENTS.snapshot_temp_path(dir, n);
    if let Err(e) = write_temp(&temp, retained) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, files::EVENTS.snapshot_path(dir, n))?;
    files::sync_dir(dir)?;
    files::EVENTS.remove_before(dir, n)
}

/// Writes and syncs the snapshot's temporary file.
fn write_temp(temp: &Path, retained: &[Retained]) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(temp)?);
    out.write_all(&format::file_header(FileKind::Snapshot))?;
    let mut buf = Vec::with_capacity(4096);
    for entry in retained {
        buf.clear();
        match entry {
            Retained::Start(session, stream, base) => format::encode_frame(
                &mut buf,
                FrameKind::Start,
                session.as_str(),
                stream.as_str(),
                *base,
                &[],
                0,
            ),
            Retained::Event(session, stream, seq, data) => format::encode_frame(
                &mut buf,
                FrameKind::Event,
                session.as_str(),
                stream.as_str(),
                *seq,
                data.as_bytes(),
                crc32fast::hash(data.as_bytes()),
            ),
            Retained::Mark(session, stream, seq) => format::encode_frame(
                &mut buf,
                FrameKind::Mark,
                session.as_str(),
                stream.as_str(),
                *seq,
                &[],
                0,
            ),
            Retained::Floor(session, seq) => format::encode_frame(
                &mut buf,
                FrameKind::Floor,
                session.as_str(),
                "",
                *seq,
                &[],
                0,
            ),
        }
        out.write_all(&buf)?;
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_events::state::Limits;
    use crate::reserve::Reservation;
    use session_core::EventId;
    use std::thread::JoinHandle;
    use std::time::Instant;

    /// A commit thread on a log it cannot write (opened read-only: every
    /// batch fails as on a full or broken disk), reopening after `backoff`.
    fn start(
        dir: &Path,
        backoff: Duration,
    ) -> (Arc<State>, Arc<Queue>, Arc<CommitStats>, JoinHandle<()>) {
        let path = files::EVENTS.log_path(dir, 1);
        std::fs::write(&path, format::file_header(FileKind::Log)).unwrap();
        let state = Arc::new(State::new(Limits {
            events_per_stream: 8,
            streams_per_session: 8,
        }));
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(CommitStats::default());
        let committer = Committer {
            dir: dir.to_path_buf(),
            state: state.clone(),
            queue: queue.clone(),
            log: ActiveLog::new(
                files::EVENTS,
                format::file_header(FileKind::Log),
                File::open(&path).unwrap(),
                1,
                format::FILE_HEADER_LEN as u64,
                Reservation::new(u64::MAX),
            ),
            compact_min_bytes: u64::MAX,
            reopen_backoff: (backoff, backoff),
            stats: stats.clone(),
        };
        let thread = std::thread::spawn(move || committer.run());
        (state, queue, stats, thread)
    }

    /// Appends as `FileEventStore::append` does; the receiver of its outcome.
    fn append(
        state: &State,
        queue: &Queue,
        session: &SessionId,
        data: &str,
    ) -> Result<oneshot::Receiver<Result<(), Error>>, Error> {
        let stream = StreamId::standalone();
        let mut shard = state.lock(session);
        queue.check_failed()?;
        let (seq, epoch, start) = shard.append(session, &stream, Arc::from(data));
        let (ack, done) = oneshot::channel();
        queue.push(Op {
            session: session.clone(),
            work: Work::Event {
                stream,
                start,
                seq,
                epoch,
                data: Arc::from(data),
                crc: crc32fast::hash(data.as_bytes()),
            },
            ack,
        })?;
        Ok(done)
    }

    #[test]
    fn a_failed_append_is_unknown_then_appends_are_refused_until_the_directory_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (state, queue, stats, thread) = start(dir.path(), Duration::from_millis(5));
        let session = SessionId::generate();
        let done = append(&state, &queue, &session, "lost").unwrap();
        let failed = done.blocking_recv().unwrap().unwrap_err();
        assert_eq!(failed.outcome(), Some(WriteOutcome::Unknown), "{failed}");

        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.failure().is_some() {
            assert!(Instant::now() < deadline, "the store did not reopen");
            std::thread::sleep(Duration::from_millis(5));
        }
        let done = append(&state, &queue, &session, "kept").unwrap();
        done.blocking_recv().unwrap().unwrap();
        let g = StreamId::standalone();
        let origin = EventId {
            stream: g.clone(),
            seq: 0,
        };
        let replay = state
            .lock(&session)
            .replay_after(&session, &origin)
            .unwrap();
        let data: Vec<&str> = replay.iter().map(|e| &*e.data).collect();
        assert_eq!(
            data,
            ["kept"],
            "only what the disk holds, then the new event"
        );
        let counted = stats.snapshot();
        assert_eq!(
            (counted.failed_batches, counted.batches, counted.writes),
            (1, 1, 1),
            "the failed batch and the one after the reopening: {counted:?}"
        );
        queue.stop();
        thread.join().unwrap();
    }

    #[test]
    fn while_refusing_appends_nothing_is_queued_and_stopping_does_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (state, queue, stats, thread) = start(dir.path(), Duration::from_secs(3600));
        let session = SessionId::generate();
        let done = append(&state, &queue, &session, "lost").unwrap();
        assert!(done.blocking_recv().unwrap().is_err());
        let refused = append(&state, &queue, &session, "refused").unwrap_err();
        assert_eq!(refused.outcome(), Some(WriteOutcome::NotApplied));
        let message = refused.to_string();
        assert!(
            message.contains("refuses appends after an I/O error") && message.contains("retrying"),
            "{message}"
        );
        assert_eq!(
            stats.snapshot().failed_batches,
            1,
            "a refused append is no batch"
        );
        queue.stop();
        thread.join().unwrap();
    }
}
