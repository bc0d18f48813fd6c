//! The contract of event stores: the SSE events of a session's streams, kept
//! so a client whose stream broke can resume it with `Last-Event-ID`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{GroupCommitStats, Result, SessionId};

/// Names one SSE stream of a session: `[0-9A-Za-z]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The stream a client opens with GET, one per session.
    pub fn standalone() -> Self {
        StreamId(Arc::from("g"))
    }

    /// A fresh stream for one request's SSE response: 64 random bits.
    pub fn generate() -> Self {
        let uuid = uuid::Uuid::new_v4();
        let bits = u64::from_le_bytes(uuid.as_bytes()[..8].try_into().unwrap_or_default());
        StreamId(Arc::from(format!("r{bits:016x}")))
    }

    /// Parses a stream name.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| StreamId(Arc::from(s)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An SSE event id: the stream and the event's position in it, written
/// `<stream>_<seq>`, so a `Last-Event-ID` names the stream to resume.
///
/// ```
/// use session_core::{EventId, StreamId};
/// let id = EventId { stream: StreamId::standalone(), seq: 7 };
/// assert_eq!(id.to_string(), "g_7");
/// assert_eq!(EventId::parse("g_7"), Some(id));
/// assert_eq!(EventId::parse("g-7"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The stream.
    pub stream: StreamId,
    /// Position in the stream, from 1.
    pub seq: u64,
}

impl EventId {
    /// Parses `<stream>_<seq>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (stream, seq) = s.split_once('_')?;
        Some(EventId {
            stream: StreamId::parse(stream)?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.stream, self.seq)
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its id.
    pub id: EventId,
    /// The JSON-RPC message it carries.
    pub data: Arc<str>,
}

/// Storage for the events of resumable streams.
///
/// Bounded: a store keeps only the latest events of each stream and the
/// latest streams of each session (its own limits), and forgets a session's
/// events when told the session ended.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// Appends `data` to `stream` of `session` and returns its id; ids of one
    /// stream increase.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) on a store failure.
    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId>;

    /// The events of `after`'s stream that follow it, oldest first. `None`
    /// when the store cannot replay from there: unknown stream, or events
    /// after `after` already dropped by the bound.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) on a store failure.
    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Result<Option<Vec<StoredEvent>>>;

    /// The id of the last event appended to `stream`, whether or not the
    /// bound has dropped it since; `None` if the store knows of none. A
    /// fresh connection to a stream follows from here, so it is not sent
    /// what was stored before it connected.
    ///
    /// The default reads the whole stream through
    /// [`replay_after`](Self::replay_after); stores override it with a
    /// direct lookup.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) on a store failure.
    async fn latest(&self, session: &SessionId, stream: &StreamId) -> Result<Option<EventId>> {
        let origin = EventId {
            stream: stream.clone(),
            seq: 0,
        };
        Ok(self
            .replay_after(session, &origin)
            .await?
            .and_then(|events| events.last().map(|e| e.id.clone())))
    }

    /// Waits up to `wait_ms` for events of `after`'s stream that follow it,
    /// appended by any process sharing the store. `Ok(None)` means the store
    /// has no live feed (every event is appended by this process, which
    /// delivers it itself); the default.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) on a store failure.
    async fn wait_after(
        &self,
        session: &SessionId,
        after: &EventId,
        wait_ms: u64,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let _ = (session, after, wait_ms);
        Ok(None)
    }

    /// Forgets every event of `session`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) on a store failure.
    async fn remove_session(&self, session: &SessionId) -> Result<()>;

    /// Whether [`remove_session`](Self::remove_session) may have anything to
    /// remove for `session`: a cheap, synchronous hint so that ending a
    /// session that never had a stream costs nothing. `false` must mean
    /// certainly nothing; the default, `true`, is always safe.
    fn may_hold(&self, session: &SessionId) -> bool {
        let _ = session;
        true
    }

    /// Whether the store accepts appends now: `Ok` if so, otherwise the
    /// reason as [`Error::Backend`](crate::Error::Backend). Cheap and bounded
    /// in time, like [`SessionStore::readiness`](crate::SessionStore::readiness);
    /// the default is always ready.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) saying why appends would fail.
    async fn readiness(&self) -> Result<()> {
        Ok(())
    }

    /// The store's group-commit statistics since it opened, as
    /// [`SessionStore::group_commit_stats`](crate::SessionStore::group_commit_stats):
    /// cheap, synchronous, no I/O. `None`, the default, for a store without
    /// group commit (memory, Redis).
    fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        None
    }

    /// A short name of the backend (`memory`, `file`, `redis`), for metrics
    /// and logs; `custom` by default.
    fn backend(&self) -> &'static str {
        "custom"
    }
}
