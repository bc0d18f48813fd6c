//! The queue between a file store's writers and its commit thread, shared by
//! the session store ([`crate::file`]) and the event store
//! ([`crate::file_events`]).
//!
//! Writers push under their own shard lock; the commit thread takes
//! everything queued as one batch, writes it with one sync, and answers each
//! write. After a batch fails, the queue refuses writes (before they are
//! queued) until the commit thread has reopened the directory: see
//! [`reopen_with_backoff`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why a write was not queued: nothing of it reached the disk.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// The store refuses writes after an I/O error, for this reason.
    Failed(Arc<str>),
    /// The store is shutting down.
    Stopping,
}

#[derive(Debug)]
struct State<T> {
    items: Vec<T>,
    stopping: bool,
    /// How many queued writes the commit thread is waiting for; writers wake
    /// it only on the first write and on reaching this, not on every write.
    wanted: usize,
    /// Why the store refuses writes, while it does: set when a batch fails,
    /// cleared once the directory is reopened.
    failed: Option<Arc<str>>,
}

/// A queue of writes of type `T` for one commit thread.
#[derive(Debug)]
pub(crate) struct CommitQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Whether `failed` is set, read without the lock.
    failing: AtomicBool,
}

impl<T> Default for CommitQueue<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                items: Vec::new(),
                stopping: false,
                wanted: 0,
                failed: None,
            }),
            ready: Condvar::new(),
            failing: AtomicBool::new(false),
        }
    }
}

impl<T> CommitQueue<T> {
    /// Queues the write that `make` builds, unless the queue refuses writes.
    /// `make` runs under the queue's lock, only once the write is accepted:
    /// what it marks as pending is never left behind by a refusal.
    pub(crate) fn push_with(&self, make: impl FnOnce() -> T) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.failed {
            return Err(Refusal::Failed(reason.clone()));
        }
        if state.stopping {
            return Err(Refusal::Stopping);
        }
        state.items.push(make());
        let queued = state.items.len();
        let wake = queued == 1 || queued == state.wanted;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Whether the store refuses writes after an I/O error. Cheap: no lock.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn failure(&self) -> Option<Arc<str>> {
        self.state.lock().failed.clone()
    }

    /// Starts refusing writes for `reason`; returns the writes queued and not
    /// taken yet, which never reached the disk.
    pub(crate) fn fail(&self, reason: Arc<str>) -> Vec<T> {
        let mut state = self.state.lock();
        state.failed = Some(reason);
        self.failing.store(true, Ordering::Release);
        std::mem::take(&mut state.items)
    }

    /// Accepts writes again.
    fn recovered(&self) {
        let mut state = self.state.lock();
        state.failed = None;
        self.failing.store(false, Ordering::Release);
    }

    /// Updates the reason writes are refused for.
    fn set_failure(&self, reason: Arc<str>) {
        self.state.lock().failed = Some(reason);
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

    /// Asks the commit thread to finish what is queued and stop.
    pub(crate) fn stop(&self) {
        self.state.lock().stopping = true;
        self.ready.notify_one();
    }

    /// Waits for work; `None` once stopping with nothing left.
    ///
    /// Once there is work, waits up to `linger` for `expected` writes in all:
    /// writers acknowledged by the previous batch are usually about to queue
    /// their next write, and a batch that leaves without them costs them a
    /// whole extra sync. `(1, Duration::ZERO)` takes whatever is there.
    pub(crate) fn take(&self, expected: usize, linger: Duration) -> Option<Vec<T>> {
        let mut state = self.state.lock();
        while state.items.is_empty() && !state.stopping {
            self.ready.wait(&mut state);
        }
        if state.items.len() < expected && !state.stopping {
            state.wanted = expected;
            let deadline = Instant::now() + linger;
            while state.items.len() < expected && !state.stopping {
                if self.ready.wait_until(&mut state, deadline).timed_out() {
                    break;
                }
            }
            state.wanted = 0;
        }
        if state.items.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut state.items))
    }
}

/// After a failed batch, while `queue` refuses writes: calls `reopen` after
/// `backoff.0`, then at intervals doubling up to `backoff.1`, until it works
/// (its result, and the queue accepts writes again) or the store stops
/// (`None`). After each failed attempt the queue's reason for refusing
/// becomes `cause` with that attempt's error; `store` names the store in the
/// warning logged.
///
/// The failed `fsync` is never retried: `reopen` reads the directory back as
/// at a restart and rewrites it, so what reads show afterwards is durable
/// from that rewrite's own sync.
pub(crate) fn reopen_with_backoff<T, R>(
    queue: &CommitQueue<T>,
    backoff: (Duration, Duration),
    cause: &str,
    store: &str,
    mut reopen: impl FnMut() -> Result<R, crate::Error>,
) -> Option<R> {
    let (mut delay, longest) = backoff;
    loop {
        if queue.pause(delay) {
            return None;
        }
        match reopen() {
            Ok(done) => {
                queue.recovered();
                return Some(done);
            }
            Err(e) => {
                let next = delay.saturating_mul(2).min(longest);
                tracing::warn!("reopening the {store} failed, retrying in {next:?}: {e}");
                queue.set_failure(Arc::from(format!("{cause} (reopening failed: {e})")));
                delay = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_queue_refuses_without_building_the_write_and_gives_back_what_was_queued() {
        let queue = CommitQueue::<u32>::default();
        queue.push_with(|| 1).unwrap();
        assert!(!queue.is_failing());
        assert_eq!(queue.fail(Arc::from("disk full")), [1]);
        assert!(queue.is_failing());
        let refused = queue.push_with(|| unreachable!("built while refusing"));
        assert!(matches!(refused, Err(Refusal::Failed(reason)) if &*reason == "disk full"));
        queue.stop();
        assert!(matches!(queue.push_with(|| 2), Err(Refusal::Failed(_))));
    }

    #[test]
    fn a_stopping_queue_refuses_new_writes_and_hands_over_the_queued_ones_once() {
        let queue = CommitQueue::<u32>::default();
        queue.push_with(|| 1).unwrap();
        queue.stop();
        assert!(matches!(queue.push_with(|| 2), Err(Refusal::Stopping)));
        assert_eq!(queue.take(1, Duration::ZERO), Some(vec![1]));
        assert_eq!(queue.take(1, Duration::ZERO), None);
    }

    #[test]
    fn reopening_retries_until_it_works_then_accepts_writes() {
        let queue = CommitQueue::<u32>::default();
        queue.fail(Arc::from("disk full"));
        let mut attempts = 0;
        let reopened = reopen_with_backoff(
            &queue,
            (Duration::from_millis(1), Duration::from_millis(2)),
            "disk full",
            "test store",
            || {
                attempts += 1;
                if attempts < 3 {
                    let reason = queue.failure().unwrap();
                    if attempts == 2 {
                        assert!(
                            reason
                                .contains("reopening failed: cannot reopen attempt 1: still full"),
                            "{reason}"
                        );
                    }
                    return Err(crate::Error::Io {
                        action: "reopen",
                        path: format!("attempt {attempts}").into(),
                        source: std::io::Error::other("still full"),
                    });
                }
                Ok(attempts)
            },
        );
        assert_eq!(reopened, Some(3));
        assert!(queue.failure().is_none() && !queue.is_failing());
        queue.push_with(|| 7).unwrap();
    }

    #[test]
    fn reopening_gives_up_when_the_store_stops() {
        let queue = CommitQueue::<u32>::default();
        queue.fail(Arc::from("disk full"));
        queue.stop();
        let reopened = reopen_with_backoff(
            &queue,
            (Duration::from_secs(3600), Duration::from_secs(3600)),
            "disk full",
            "test store",
            || -> Result<(), crate::Error> { unreachable!("no attempt once stopping") },
        );
        assert!(reopened.is_none());
    }
}
