//! Stores that time their operations into the server's [`Metrics`]: a thin
//! wrapper around any [`SessionStore`] or [`EventStore`], put in place by
//! the builder when metrics are on.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use session_core::{
    Cas, EventId, EventStore, GroupCommitStats, Page, Result, SessionId, SessionRecord,
    SessionStore, StoredEvent, StreamId, Timestamp,
};

use crate::metrics::{Metrics, StoreName};

/// A session store (sessions, handles or tasks) whose operations are timed.
#[derive(Debug)]
pub(crate) struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    name: StoreName,
    metrics: Arc<Metrics>,
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
        })
    }

    fn record<T>(&self, operation: &'static str, started: Instant, outcome: &Result<T>) {
        self.metrics.store_operation(
            self.name.store,
            self.name.backend,
            operation,
            started.elapsed(),
            outcome.is_err(),
        );
    }
}

/// Times `$call` as `$operation`.
macro_rules! timed {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let outcome = $call.await;
        $self.record($operation, started, &outcome);
        outcome
    }};
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        timed!(self, "insert", self.inner.insert(record))
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        timed!(self, "load", self.inner.load(id))
    }

    async fn compare_and_swap(&self, record: &SessionRecord, expected_version: u64) -> Result<Cas> {
        timed!(
            self,
            "compare_and_swap",
            self.inner.compare_and_swap(record, expected_version)
        )
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        timed!(self, "delete", self.inner.delete(id))
    }

    async fn count(&self) -> Result<usize> {
        timed!(self, "count", self.inner.count())
    }

    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        timed!(self, "list", self.inner.list(cursor, limit))
    }

    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        timed!(
            self,
            "remove_expired",
            self.inner.remove_expired(now, limit)
        )
    }

    async fn list_corrupt(&self, limit: usize) -> Result<Vec<SessionId>> {
        timed!(self, "list_corrupt", self.inner.list_corrupt(limit))
    }

    async fn readiness(&self) -> Result<()> {
        timed!(self, "readiness", self.inner.readiness())
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
}

impl MeteredEvents {
    /// `inner`, counted as the `events` store.
    pub(crate) fn wrap(inner: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> Arc<dyn EventStore> {
        let backend = inner.backend();
        Arc::new(MeteredEvents {
            inner,
            backend,
            metrics,
        })
    }

    fn record<T>(&self, operation: &'static str, started: Instant, outcome: &Result<T>) {
        self.metrics.store_operation(
            "events",
            self.backend,
            operation,
            started.elapsed(),
            outcome.is_err(),
        );
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
        timed!(self, "append", self.inner.append(session, stream, data))
    }

    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Result<Option<Vec<StoredEvent>>> {
        timed!(
            self,
            "replay_after",
            self.inner.replay_after(session, after)
        )
    }

    async fn latest(&self, session: &SessionId, stream: &StreamId) -> Result<Option<EventId>> {
        timed!(self, "latest", self.inner.latest(session, stream))
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
        timed!(self, "remove_session", self.inner.remove_session(session))
    }

    fn may_hold(&self, session: &SessionId) -> bool {
        self.inner.may_hold(session)
    }

    async fn readiness(&self) -> Result<()> {
        timed!(self, "readiness", self.inner.readiness())
    }

    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        self.inner.group_commit_stats()
    }

    fn backend(&self) -> &'static str {
        self.backend
    }
}
