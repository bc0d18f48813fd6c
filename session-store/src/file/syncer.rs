//! The second half of group commit: a thread that `fdatasync`s what the
//! commit thread has written, then makes it visible and acknowledges it.
//!
//! While one sync runs, the commit thread goes on writing the batches that
//! queue behind it, and the next sync takes all of them at once: the disk's
//! time and the writers' time overlap instead of following each other. A
//! sync covers every batch handed over before it started, because each was
//! written (its `write` returned) before it was handed over.
//!
//! When a sync fails, every batch it covered and every batch handed over
//! after it fails as possibly durable, the queue refuses writes, and the
//! commit thread (woken by the refusal) waits for this thread to go idle and
//! reopens the directory: see [`Committer::recover`](super::committer::Committer).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use session_core::WriteOutcome;

use super::committer::{self, Op, Queue};
use super::index::Index;
use crate::commit_stats::CommitStats;

/// A batch the commit thread has written to `log`, waiting for its sync.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) ops: Vec<Op>,
    pub(crate) log: Arc<File>,
    /// The log's path, for error messages.
    pub(crate) path: PathBuf,
}

#[derive(Debug, Default)]
struct State {
    written: Vec<Written>,
    /// A sync (or the acknowledgements after it) is in progress.
    busy: bool,
    /// Why the last sync failed, until the directory is reopened.
    failed: Option<Arc<str>>,
    stopping: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the sync thread (work, stop) and the commit thread (idle).
    changed: Condvar,
}

/// The commit thread's handle on the sync thread; dropping it finishes what
/// was handed over and stops the thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the sync thread, which promotes synced writes in `index`,
    /// refuses writes through `queue` when a sync fails, and counts batches
    /// in `stats`.
    pub(crate) fn start(
        index: Arc<Index>,
        queue: Arc<Queue>,
        stats: Arc<CommitStats>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("file-store-sync".into())
                .spawn(move || run(&shared, &index, &queue, &stats))?
        };
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands over a batch that has been written.
    pub(crate) fn hand(&self, written: Written) {
        self.shared.state.lock().written.push(written);
        self.shared.changed.notify_all();
    }

    /// Waits until every batch handed over has been synced (or failed) and
    /// acknowledged: after this the index holds everything written.
    pub(crate) fn drain(&self) {
        let mut state = self.shared.state.lock();
        while state.busy || !state.written.is_empty() {
            self.shared.changed.wait(&mut state);
        }
    }

    /// Why the last sync failed, if it did and the directory has not been
    /// reopened since.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.shared.state.lock().failed.clone()
    }

    /// The directory has been reopened: batches handed over from now on are
    /// synced again.
    pub(crate) fn recovered(&self) {
        self.shared.state.lock().failed = None;
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, index: &Index, queue: &Queue, stats: &CommitStats) {
    loop {
        let (batches, failed) = {
            let mut state = shared.state.lock();
            while state.written.is_empty() && !state.stopping {
                shared.changed.wait(&mut state);
            }
            if state.written.is_empty() {
                return;
            }
            state.busy = true;
            (std::mem::take(&mut state.written), state.failed.clone())
        };
        match failed {
            // Written after a failed sync: on disk or not, nobody knows.
            Some(reason) => fail_all(index, batches, &reason),
            None => sync(shared, index, queue, stats, batches),
        }
        shared.state.lock().busy = false;
        shared.changed.notify_all();
    }
}

/// Syncs every log the batches were written to, then acknowledges them in
/// the order they were written; or fails them all.
fn sync(shared: &Shared, index: &Index, queue: &Queue, stats: &CommitStats, batches: Vec<Written>) {
    let started = Instant::now();
    let mut synced: Vec<&Arc<File>> = Vec::with_capacity(1);
    let mut result = Ok(());
    for batch in &batches {
        if synced.iter().any(|log| Arc::ptr_eq(log, &batch.log)) {
            continue;
        }
        if let Err(e) = batch.log.sync_data() {
            result = Err(format!("cannot sync {}: {e}", batch.path.display()));
            break;
        }
        synced.push(&batch.log);
    }
    match result {
        Ok(()) => {
            let writes = batches.iter().map(|batch| batch.ops.len()).sum();
            stats.committed(writes, started.elapsed());
            for batch in batches {
                committer::apply(index, batch.ops);
            }
        }
        Err(reason) => {
            stats.failed();
            let reason: Arc<str> = Arc::from(reason);
            tracing::error!("{reason}; writes are refused until the directory is reopened");
            shared.state.lock().failed = Some(reason.clone());
            // Refusing wakes the commit thread, which reopens the directory
            // once this thread is idle.
            let queued = queue.fail(reason.clone());
            fail_all(index, batches, &reason);
            committer::fail(
                index,
                queued,
                &committer::refusal(&reason),
                WriteOutcome::NotApplied,
            );
        }
    }
}

fn fail_all(index: &Index, batches: Vec<Written>, reason: &str) {
    let unknown = format!("the write may not be durable: {reason}");
    for batch in batches {
        committer::fail(index, batch.ops, &unknown, WriteOutcome::Unknown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::committer::tests::{put, record};

    #[test]
    fn a_failed_sync_fails_what_it_covered_and_what_was_queued_and_refuses_writes() {
        let index = Arc::new(Index::new());
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(CommitStats::default());
        let syncer = Syncer::start(index.clone(), queue.clone(), stats.clone()).unwrap();
        let (written, queued) = (record(), record());
        let written_done = put(&index, &queue, &written).unwrap();
        let ops = queue.take().unwrap();
        let queued_done = put(&index, &queue, &queued).unwrap();
        let (_reader, writer) = std::io::pipe().unwrap();
        syncer.hand(Written {
            ops,
            log: Arc::new(File::from(std::os::fd::OwnedFd::from(writer))),
            path: "a pipe".into(),
        });
        let failed = written_done.blocking_recv().unwrap().unwrap_err();
        assert!(
            failed.to_string().contains("cannot sync a pipe"),
            "{failed}"
        );
        assert_eq!(failed.outcome(), Some(WriteOutcome::Unknown));
        let refused = queued_done.blocking_recv().unwrap().unwrap_err();
        assert_eq!(refused.outcome(), Some(WriteOutcome::NotApplied));
        syncer.drain();
        assert!(syncer.failure().is_some());
        assert!(queue.failure().is_some());
        for r in [&written, &queued] {
            assert!(index.durable(r.id()).is_none());
            assert!(
                index.lock(r.id()).slot(r.id()).is_none(),
                "no longer pending"
            );
        }
        assert_eq!(stats.snapshot().failed_batches, 1);
        // The commit thread finds nothing to take and reopens the directory.
        assert!(queue.take().is_some_and(|ops| ops.is_empty()));

        // Until then, a batch written after the failure fails unsynced.
        let late = record();
        let late_done = {
            queue.recovered();
            let done = put(&index, &queue, &late).unwrap();
            let ops = queue.take().unwrap();
            let (_reader, writer) = std::io::pipe().unwrap();
            syncer.hand(Written {
                ops,
                log: Arc::new(File::from(std::os::fd::OwnedFd::from(writer))),
                path: "another pipe".into(),
            });
            done
        };
        let failed = late_done.blocking_recv().unwrap().unwrap_err();
        assert!(
            failed.to_string().contains("cannot sync a pipe"),
            "{failed}"
        );
        assert_eq!(stats.snapshot().failed_batches, 1, "not synced again");
        syncer.recovered();
        assert!(syncer.failure().is_none());
    }
}
