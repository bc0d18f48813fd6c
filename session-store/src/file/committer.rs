//! Group commit: one thread appends every accepted write to the log, syncs
//! once per batch, then makes the batch visible and acknowledges it.
//!
//! Writers queue while a sync is in progress, and the next batch takes all of
//! them: with one writer every write costs one sync, with 64 writers a sync
//! carries up to 64 writes.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use session_core::{Error, SessionId, SessionRecord};
use tokio::sync::oneshot;

use super::compact;
use super::dir;
use super::frame::{self, FileKind, FrameKind};
use super::index::{Durable, Index, Shard};

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
struct Op {
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
    /// How many queued writes the committer is waiting for; writers wake it
    /// only on the first write and on reaching this, not on every write.
    wanted: usize,
}

/// The longest a batch waits for writers it expects.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// Set once, on the first I/O failure; after it the store refuses writes.
pub(crate) type Poison = OnceLock<Arc<str>>;

/// The queue between writers and the committer thread.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    pub(crate) poison: Poison,
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
        self.check_poison()?;
        let (ack, done) = oneshot::channel();
        let mut state = self.state.lock();
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
        let wake = state.ops.len() == 1 || state.ops.len() == state.wanted;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(done)
    }

    pub(crate) fn check_poison(&self) -> Result<(), Error> {
        match self.poison.get() {
            Some(reason) => Err(Error::backend_msg(format!(
                "the file store refuses writes after an I/O failure: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Asks the committer to finish what is queued and stop.
    pub(crate) fn stop(&self) {
        self.state.lock().stopping = true;
        self.ready.notify_one();
    }

    /// Waits for work; `None` once stopping and drained.
    ///
    /// Once there is work, waits up to `linger` for `expected` writes in all:
    /// writers acknowledged by the previous batch are usually about to queue
    /// their next write, and a batch that leaves without them costs them a
    /// whole extra sync.
    fn take(&self, expected: usize, linger: Duration) -> Option<Vec<Op>> {
        let mut state = self.state.lock();
        while state.ops.is_empty() && !state.stopping {
            self.ready.wait(&mut state);
        }
        if state.ops.len() < expected && !state.stopping {
            state.wanted = expected;
            let deadline = Instant::now() + linger;
            while state.ops.len() < expected && !state.stopping {
                if self.ready.wait_until(&mut state, deadline).timed_out() {
                    break;
                }
            }
            state.wanted = 0;
        }
        if state.ops.is_empty() {
            return None;
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
}

/// The committer thread's state.
#[derive(Debug)]
pub(crate) struct Committer {
    pub(crate) settings: Settings,
    pub(crate) index: Arc<Index>,
    pub(crate) queue: Arc<Queue>,
    pub(crate) log: File,
    pub(crate) log_seq: u64,
    pub(crate) log_bytes: u64,
    pub(crate) last_batch: u64,
    pub(crate) compaction: Option<JoinHandle<()>>,
}

impl Committer {
    /// Runs until the queue stops, then waits for a compaction in progress.
    pub(crate) fn run(mut self) {
        let mut buf = Vec::with_capacity(64 << 10);
        let (mut expected, mut linger) = (1, Duration::ZERO);
        while let Some(ops) = self.queue.take(expected, linger) {
            if let Err(e) = self.queue.check_poison() {
                self.fail(ops, &e.to_string());
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
            let started = Instant::now();
            match self.log.write_all(&buf).and_then(|()| self.log.sync_data()) {
                Ok(()) => {
                    // Wait for at most one sync (and at most `MAX_LINGER`)
                    // for as many writes as this batch carried: a writer that
                    // misses the batch waits a whole sync anyway.
                    expected = ops.len();
                    linger = started.elapsed().min(MAX_LINGER);
                    self.log_bytes += buf.len() as u64;
                    self.apply(ops);
                    self.maybe_compact();
                }
                Err(e) => {
                    let reason = format!("writing the log failed: {e}");
                    tracing::error!(dir = %self.settings.dir.display(), "{reason}");
                    let _ = self.queue.poison.set(Arc::from(reason.as_str()));
                    self.fail(ops, &reason);
                }
            }
        }
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.join();
        }
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

    fn fail(&self, ops: Vec<Op>, reason: &str) {
        for op in ops {
            self.index.rollback(&op.id, op.seq);
            let _ = op.ack.send(Err(Error::backend_msg(format!(
                "the write may not be durable: {reason}"
            ))));
        }
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
        // Start the next log first: the snapshot then holds exactly what the
        // earlier logs hold, because this thread is the only one promoting.
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
        self.log = log;
        self.log_seq = next;
        self.log_bytes = frame::FILE_HEADER_LEN as u64;
        let entries = self.index.snapshot();
        let dir = self.settings.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("file-store-compact".into())
            .spawn(move || {
                if let Err(e) = compact::write_snapshot(&dir, next, &entries) {
                    tracing::warn!(dir = %dir.display(), "compaction failed, the logs are kept: {e}");
                }
            });
        match spawned {
            Ok(handle) => self.compaction = Some(handle),
            Err(e) => tracing::warn!("cannot start the compaction thread: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{ExpiryPolicy, NewSession, Timestamp};

    /// A log the commit thread cannot write: every batch fails as a full or
    /// broken disk would make it fail.
    fn unwritable_log(dir: &std::path::Path) -> File {
        let path = dir.join("log-0000000000000001.mcps");
        std::fs::write(&path, frame::file_header(FileKind::Log)).unwrap();
        File::open(&path).unwrap() // read-only: writes fail with EBADF
    }

    #[test]
    fn after_a_failed_write_the_store_refuses_writes_and_forgets_the_pending_one() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::new());
        let queue = Arc::new(Queue::default());
        let committer = Committer {
            settings: Settings {
                dir: dir.path().to_path_buf(),
                compact_min_bytes: u64::MAX,
            },
            index: index.clone(),
            queue: queue.clone(),
            log: unwritable_log(dir.path()),
            log_seq: 1,
            log_bytes: frame::FILE_HEADER_LEN as u64,
            last_batch: 0,
            compaction: None,
        };
        let thread = std::thread::spawn(move || committer.run());

        let record = SessionRecord::create(
            SessionId::generate(),
            NewSession::new(),
            Timestamp::from_millis(1),
            ExpiryPolicy::default(),
        );
        let (payload, crc) = frame::record_payload(&record).unwrap();
        let done = {
            let mut shard = index.lock(record.id());
            let write = Write::Put {
                record: record.clone(),
                payload,
                crc,
            };
            queue.push(&mut shard, record.id(), write).unwrap()
        };
        let outcome = done.blocking_recv().unwrap();
        let message = outcome.unwrap_err().to_string();
        assert!(message.contains("may not be durable"), "{message}");
        assert!(index.durable(record.id()).is_none());
        assert!(
            index.lock(record.id()).slot(record.id()).is_none(),
            "the failed write is no longer pending"
        );
        let refused = {
            let mut shard = index.lock(record.id());
            queue.push(&mut shard, record.id(), Write::Delete)
        };
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("refuses writes after an I/O failure"),
            "{message}"
        );
        queue.stop();
        thread.join().unwrap();
    }
}
