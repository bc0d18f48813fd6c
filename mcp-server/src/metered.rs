//! Stores that time their operations into the server's [`Metrics`]: a thin
//! wrapper around any [`SessionStore`] or [`EventStore`], put in place by
//! the builder when metrics are on.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use async_trait::async_trait;
use session_core::{
    Cas, EventId, EventStore, GroupCommitStats, Page, Result, SessionId, SessionRecord,
    SessionStore, StoredEvent, StreamId, Timestamp,
};

use crate::metrics::{Metrics, StoreName};

/// The histograms of a store's operations, each made on first use and kept
/// (no label lookup on later operations).
#[derive(Debug, Default)]
struct Timers([OnceLock<Histogram>; 10]);

impl Timers {
    /// Records operation `index` (named `operation`) of `name`.
    fn record<T>(
        &self,
        metrics: &Metrics,
        name: StoreName,
        index: usize,
        operation: &'static str,
        started: Instant,
        outcome: &Result<T>,
    ) {
        let elapsed = started.elapsed().as_secs_f64();
        match self.0.get(index) {
            Some(cell) => cell
                .get_or_init(|| metrics.store_histogram(name.store, name.backend, operation))
                .observe(elapsed),
            None => metrics
                .store_histogram(name.store, name.backend, operation)
                .observe(elapsed),
        }
        if outcome.is_err() {
            metrics.store_error(name.store, name.backend, operation);
        }
    }
}

/// A session store (sessions, handles or tasks) whose operations are timed.
#[derive(Debug)]
pub(crate) struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    name: StoreName,
    metrics: Arc<Metrics>,
    timers: Timers,
}

impl MeteredStore {
    /// `inner`, counted as `store` (`sessions`, `handles`, `tasks`).
    pub(crate) fn wrap(
        inner: Arc<dyn SessionStore>,
        store: &'static str,
        metrics: Arc<Metrics>,
    ) -> Arc<dyn SessionStore> {
        let backend = inner.backend();
        Arc::new(MeteredStore {
            inner,
            name: StoreName { store, backend },
            metrics,
            timers: Timers::default(),
        })
    }

    fn record<T>(
        &self,
        index: usize,
        operation: &'static str,
        started: Instant,
        outcome: &Result<T>,
    ) {
        self.timers
            .record(&self.metrics, self.name, index, operation, started, outcome);
    }
}

/// Times `$call` as operation `$index`, named `$operation`.
macro_rules! timed {
    ($self:ident, $index:literal, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let outcome = $call.await;
        $self.record($index, $operation, started, &outcome);
        outcome
    }};
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        timed!(self, 0, "insert", self.inner.insert(record))
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        timed!(self, 1, "load", self.inner.load(id))
    }

    async fn compare_and_swap(&self, record: &SessionRecord, expected_version: u64) -> Result<Cas> {
        timed!(
            self,
            2,
            "compare_and_swap",
            self.inner.compare_and_swap(record, expected_version)
        )
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        timed!(self, 3, "delete", self.inner.delete(id))
    }

    async fn count(&self) -> Result<usize> {
        timed!(self, 4, "count", self.inner.count())
    }

    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        timed!(self, 5, "list", self.inner.list(cursor, limit))
    }

    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        timed!(
            self,
            6,
            "remove_expired",
            self.inner.remove_expired(now, limit)
        )
    }

    async fn list_corrupt(&self, limit: usize) -> Result<Vec<SessionId>> {
        timed!(self, 7, "list_corrupt", self.inner.list_corrupt(limit))
    }

    async fn readiness(&self) -> Result<()> {
        timed!(self, 8, "readiness", self.inner.readiness())
    }

    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        self.inner.group_commit_stats()
    }

    fn backend(&self) -> &'static str {
        self.name.backend
    }
}

/// An event store whose operations are timed.
#[derive(Debug)]
pub(crate) struct MeteredEvents {
    inner: Arc<dyn EventStore>,
    backend: &'static str,
    metrics: Arc<Metrics>,
    timers: Timers,
}

impl MeteredEvents {
    /// `inner`, counted as the `events` store.
    pub(crate) fn wrap(inner: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Arc<dyn EventStore> {
        let backend = inner.backend();
        Arc::new(MeteredEvents {
            inner,
            backend,
            metrics,
            timers: Timers::default(),
        })
    }

    fn record<T>(
        &self,
        index: usize,
        operation: &'static str,
        started: Instant,
        outcome: &Result<T>,
    ) {
        let name = StoreName {
            store: "events",
            backend: self.backend,
        };
        self.timers
            .record(&self.metrics, name, index, operation, started, outcome);
    }
}

#[async_trait]
impl EventStore for MeteredEvents {
    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId> {
        timed!(self, 0, "append", self.inner.append(session, stream, data))
    }

    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Result<Option<Vec<StoredEvent>>> {
        timed!(
            self,
            1,
            "replay_after",
            self.inner.replay_after(session, after)
        )
    }

    async fn latest(&self, session: &SessionId, stream: &StreamId) -> Result<Option<EventId>> {
        timed!(self, 2, "latest", self.inner.latest(session, stream))
    }

    async fn wait_after(
        &self,
        session: &SessionId,
        after: &EventId,
        wait_ms: u64,
    ) -> Result<Option<Vec<StoredEvent>>> {
        // A long poll: its time is the wait, not the store's cost.
        self.inner.wait_after(session, after, wait_ms).await
    }

    async fn remove_session(&self, session: &SessionId) -> Result<()> {
        timed!(
            self,
            3,
            "remove_session",
            self.inner.remove_session(session)
        )
    }

    fn may_hold(&self, session: &SessionId) -> bool {
        self.inner.may_hold(session)
    }

    async fn readiness(&self) -> Result<()> {
        timed!(self, 4, "readiness", self.inner.readiness())
    }

    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        self.inner.group_commit_stats()
    }

    fn backend(&self) -> &'static str {
        self.backend
    }
}
