//! The durable session record, how one is created, and how a new version of it
//! is written.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{Error, ExpiryPolicy, SessionId, SessionStatus, Timestamp};

/// A session's application state: a JSON object.
pub type SessionState = Map<String, Value>;

/// What a session was created with; it does not change afterwards.
///
/// It holds what the MCP handshake negotiated, so that a session continued on
/// another process (or after a restart) can serve requests at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The authenticated principal the session is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The negotiated protocol revision, e.g. `2025-11-25`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The client's `clientInfo` (name, version, …) as it sent it, if it
    /// sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<RawJson>,
    /// The client's declared capabilities as it sent them, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<RawJson>,
}

impl SessionMeta {
    /// The client's `clientInfo`, parsed (`null` if it sent none).
    pub fn client_info_value(&self) -> Value {
        self.client_info
            .as_ref()
            .map_or(Value::Null, RawJson::to_value)
    }

    /// The client's capabilities, parsed (`null` if it declared none).
    pub fn capabilities_value(&self) -> Value {
        self.capabilities
            .as_ref()
            .map_or(Value::Null, RawJson::to_value)
    }

    /// At least the size of this metadata as JSON, found without writing
    /// it: an escaped character takes at most six bytes (`\u001f`), raw
    /// JSON is written as it is, and the keys and punctuation take less
    /// than 96 bytes.
    pub(crate) fn json_size_bound(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| 6 * s.len());
        let raw = |r: &Option<RawJson>| r.as_ref().map_or(0, |r| r.get().len());
        96 + text(&self.owner)
            + text(&self.protocol_version)
            + raw(&self.client_info)
            + raw(&self.capabilities)
    }
}

/// A JSON value kept as the text it arrived in.
///
/// What a client declares about itself (`clientInfo`, capabilities) is kept
/// and stored as it came, checked to be JSON but never built into a tree:
/// creating a session and reading one back from a store stay cheap.
/// [`to_value`](Self::to_value) parses it when it is needed.
///
/// ```
/// use serde_json::json;
/// use session_core::RawJson;
///
/// let raw = RawJson::from_value(&json!({"name": "client"}));
/// assert_eq!(raw.get(), r#"{"name":"client"}"#);
/// assert_eq!(raw.to_value()["name"], "client");
/// let parsed: RawJson = serde_json::from_str(r#" {"a": [1, 2]} "#)?;
/// assert_eq!(parsed.get(), r#"{"a": [1, 2]}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// The JSON text of `value`.
    pub fn from_value(value: &Value) -> Self {
        RawJson(serde_json::value::to_raw_value(value).expect("a JSON value serializes"))
    }

    /// The JSON text, as it arrived (without surrounding whitespace).
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value, parsed from the text.
    pub fn to_value(&self) -> Value {
        // The text was checked to be JSON when it was read or made.
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        RawJson(raw)
    }
}

/// Equal when the texts are equal (a store gives back the text it was given).
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// `null` is no value.
fn raw_unless_null(value: &Value) -> Option<RawJson> {
    (!value.is_null()).then(|| RawJson::from_value(value))
}

/// The parameters of a session about to be created.
///
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use session_core::NewSession;
///
/// let new = NewSession::new()
///     .client_info(json!({"name": "test-client", "version": "1.0"}))
///     .capabilities(json!({"tools": {}}))
///     .idle_timeout(Duration::from_secs(60));
/// # let _ = new;
/// ```
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub(crate) meta: SessionMeta,
    pub(crate) state: SessionState,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) handshake_timeout: Option<Duration>,
}

impl NewSession {
    /// A session with no owner, no client information and empty state, that
    /// starts [`Active`](SessionStatus::Active).
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds the session to an authenticated principal.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.meta.owner = Some(owner.into());
        self
    }

    /// Records the negotiated protocol revision.
    pub fn protocol_version(mut self, version: impl Into<String>) -> Self {
        self.meta.protocol_version = Some(version.into());
        self
    }

    /// Records the client's `clientInfo` (`null`: none).
    pub fn client_info(mut self, info: Value) -> Self {
        self.meta.client_info = raw_unless_null(&info);
        self
    }

    /// Records the client's capabilities (`null`: none).
    pub fn capabilities(mut self, capabilities: Value) -> Self {
        self.meta.capabilities = raw_unless_null(&capabilities);
        self
    }

    /// Records the client's `clientInfo` as the JSON text it sent.
    pub fn client_info_raw(mut self, info: Option<RawJson>) -> Self {
        self.meta.client_info = info;
        self
    }

    /// Records the client's capabilities as the JSON text it sent.
    pub fn capabilities_raw(mut self, capabilities: Option<RawJson>) -> Self {
        self.meta.capabilities = capabilities;
        self
    }

    /// Sets the initial application state.
    pub fn state(mut self, state: SessionState) -> Self {
        self.state = state;
        self
    }

    /// Overrides the manager's idle timeout for this session.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Overrides the manager's absolute lifetime for this session.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// Starts the session in [`Initializing`](SessionStatus::Initializing): it
    /// must be activated within `timeout` or it expires, however busy it is.
    /// A [`SessionManager`](crate::SessionManager) shortens `timeout` to its
    /// [`handshake_timeout`](crate::ManagerConfig::handshake_timeout) if that
    /// is smaller.
    pub fn initializing(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }
}

/// One session as a store holds it.
///
/// A record is immutable: a write produces the next version through
/// [`SessionRecord::begin_write`], which refuses terminal and expired sessions.
/// `expires_at` is the deadline of a live session; once a session is terminal
/// it is the instant after which a store may forget the record.
///
/// Cloning is cheap: the metadata and the state are shared until written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    id: SessionId,
    meta: Arc<SessionMeta>,
    state: Arc<SessionState>,
    status: SessionStatus,
    created_at: Timestamp,
    last_activity: Timestamp,
    expires_at: Timestamp,
    expiry: ExpiryPolicy,
    version: u64,
}

impl SessionRecord {
    /// The first version (1) of a new session, created at `now` with
    /// `default_expiry` unless `new` overrides it.
    pub fn create(
        id: SessionId,
        new: NewSession,
        now: Timestamp,
        default_expiry: ExpiryPolicy,
    ) -> Self {
        let expiry = ExpiryPolicy {
            idle_timeout: new.idle_timeout.unwrap_or(default_expiry.idle_timeout),
            max_lifetime: new.max_lifetime.or(default_expiry.max_lifetime),
        };
        let deadline = expiry.deadline(now, now);
        let (status, expires_at) = match new.handshake_timeout {
            Some(timeout) => (
                SessionStatus::Initializing,
                deadline.min(now.saturating_add(timeout)),
            ),
            None => (SessionStatus::Active, deadline),
        };
        SessionRecord {
            id,
            meta: Arc::new(new.meta),
            state: Arc::new(new.state),
            status,
            created_at: now,
            last_activity: now,
            expires_at,
            expiry,
            version: 1,
        }
    }

    /// The same record under another id: for a creation retried after an id
    /// collision.
    pub(crate) fn with_id(mut self, id: SessionId) -> Self {
        self.id = id;
        self
    }

    /// The session's id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// What the session was created with.
    pub fn meta(&self) -> &SessionMeta {
        &self.meta
    }

    /// The principal the session is bound to, if any.
    pub fn owner(&self) -> Option<&str> {
        self.meta.owner.as_deref()
    }

    /// The application state.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The status as stored, without regard to the time. Prefer
    /// [`status_at`](Self::status_at).
    pub fn stored_status(&self) -> SessionStatus {
        self.status
    }

    /// The status at `now`: a live session past its deadline reads as
    /// [`Expired`](SessionStatus::Expired) whether or not anything has swept it.
    pub fn status_at(&self, now: Timestamp) -> SessionStatus {
        if !self.status.is_terminal() && now >= self.expires_at {
            SessionStatus::Expired
        } else {
            self.status
        }
    }

    /// When the session was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the session was last written or touched.
    pub fn last_activity(&self) -> Timestamp {
        self.last_activity
    }

    /// The deadline of a live session, or the instant a store may forget a
    /// terminal one.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// The expiry policy this session follows.
    pub fn expiry(&self) -> ExpiryPolicy {
        self.expiry
    }

    /// The version, 1 on creation, increased by one on every write.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Starts writing the next version at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] or [`Error::Expired`] when the session is terminal or
    /// past its deadline at `now`: nothing writes to such a session.
    pub fn begin_write(&self, now: Timestamp) -> Result<RecordWrite, Error> {
        match self.status_at(now) {
            SessionStatus::Expired => Err(Error::Expired),
            SessionStatus::Closed => Err(Error::Closed),
            _ => Ok(RecordWrite {
                next: self.clone(),
                now,
                retention: RecordWrite::DEFAULT_RETENTION,
                state_written: false,
            }),
        }
    }

    /// The serialized size of the state in bytes, as checked against a limit.
    pub fn state_size(&self) -> usize {
        json_size(&self.state)
    }

    /// The terminal [`Expired`](SessionStatus::Expired) version of this record,
    /// written at `now` and kept for `retention`. Unlike
    /// [`begin_write`](Self::begin_write) this accepts a live session past its
    /// deadline: recording that it expired is the point.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] or [`Error::Expired`] when the stored status is
    /// already terminal.
    pub fn expired_version(&self, now: Timestamp, retention: Duration) -> Result<Self, Error> {
        let mut next = self.clone();
        next.status = self.status.transition(SessionStatus::Expired)?;
        next.version += 1;
        next.expires_at = now.saturating_add(retention);
        Ok(next)
    }
}

/// The next version of a record, being written. Finish it with
/// [`RecordWrite::finish`].
#[derive(Debug)]
pub struct RecordWrite {
    next: SessionRecord,
    now: Timestamp,
    retention: Duration,
    state_written: bool,
}

impl RecordWrite {
    /// How long a store keeps a terminal record, unless told otherwise.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(300);

    /// The state, for changing it in place.
    pub fn state_mut(&mut self) -> &mut SessionState {
        self.state_written = true;
        Arc::make_mut(&mut self.next.state)
    }

    /// Whether the state was borrowed for writing, so its size may have grown.
    pub fn state_written(&self) -> bool {
        self.state_written
    }

    /// Merges `patch` into the state one level deep: each key of `patch`
    /// replaces the key of the same name, and a `null` value removes it (JSON
    /// Merge Patch, applied at the top level only).
    pub fn merge_state(&mut self, patch: SessionState) {
        let state = self.state_mut();
        for (key, value) in patch {
            if value.is_null() {
                state.remove(&key);
            } else {
                state.insert(key, value);
            }
        }
    }

    /// Moves the session to `to`.
    ///
    /// # Errors
    ///
    /// As [`SessionStatus::transition`].
    pub fn set_status(&mut self, to: SessionStatus) -> Result<(), Error> {
        self.next.status = self.next.status.transition(to)?;
        Ok(())
    }

    /// Replaces the session's expiry policy.
    pub fn set_expiry(&mut self, expiry: ExpiryPolicy) {
        self.next.expiry = expiry;
    }

    /// How long a store keeps the record if this write makes it terminal.
    pub fn retain_for(&mut self, retention: Duration) {
        self.retention = retention;
    }

    /// The record being written.
    pub fn record(&self) -> &SessionRecord {
        &self.next
    }

    /// Produces the next version: version + 1, last activity now, and a new
    /// deadline. An initializing session keeps its handshake deadline, so
    /// traffic cannot stretch a handshake; a terminal one gets `now + retention`.
    pub fn finish(self) -> SessionRecord {
        let mut next = self.next;
        next.version += 1;
        next.last_activity = self.now;
        next.expires_at = match next.status {
            SessionStatus::Initializing => next.expires_at,
            SessionStatus::Active => next.expiry.deadline(next.created_at, self.now),
            SessionStatus::Expired | SessionStatus::Closed => {
                self.now.saturating_add(self.retention)
            }
        };
        next
    }
}

/// Serialized JSON size of a value without building the string.
pub(crate) fn json_size<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a `Map<String, Value>` into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_meta_size_bound_is_never_below_the_size() {
        let metas = [
            SessionMeta::default(),
            SessionMeta {
                owner: Some("\u{1}\u{1f}\"\\".repeat(10)),
                protocol_version: Some("\n".repeat(7)),
                client_info: Some(RawJson::from_value(&json!({"name": "\u{7}x"}))),
                capabilities: Some(RawJson::from_value(&json!({"roots": {"a": [1, 2]}}))),
            },
            NewSession::new()
                .owner("\u{0}")
                .protocol_version("2025-11-25")
                .meta,
        ];
        for meta in metas {
            let size = json_size(&meta);
            assert!(meta.json_size_bound() >= size, "{meta:?}: {size}");
        }
        // Every key and its punctuation, with the least of content: the
        // bound's constant must cover them.
        let bare = SessionMeta {
            owner: Some(String::new()),
            protocol_version: Some(String::new()),
            client_info: Some(RawJson::from_value(&json!(0))),
            capabilities: Some(RawJson::from_value(&json!(0))),
        };
        assert!(bare.json_size_bound() >= json_size(&bare));
        // Characters escaped as `\u00XX` take six bytes each.
        let escaped = SessionMeta {
            owner: Some("\u{1}".repeat(100)),
            ..SessionMeta::default()
        };
        assert!(escaped.json_size_bound() >= json_size(&escaped));
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn policy() -> ExpiryPolicy {
        ExpiryPolicy::idle(Duration::from_secs(10))
    }

    #[test]
    fn new_session_is_active_version_one_with_idle_deadline() {
        let r = SessionRecord::create(SessionId::generate(), NewSession::new(), at(1000), policy());
        assert_eq!(r.version(), 1);
        assert_eq!(r.stored_status(), SessionStatus::Active);
        assert_eq!(r.expires_at(), at(11_000));
        assert_eq!(r.status_at(at(10_999)), SessionStatus::Active);
        assert_eq!(r.status_at(at(11_000)), SessionStatus::Expired);
    }

    #[test]
    fn initializing_session_keeps_its_handshake_deadline_through_writes() {
        let new = NewSession::new().initializing(Duration::from_secs(2));
        let r = SessionRecord::create(SessionId::generate(), new, at(0), policy());
        assert_eq!(r.stored_status(), SessionStatus::Initializing);
        assert_eq!(r.expires_at(), at(2000));
        let mut w = r.begin_write(at(1500)).unwrap();
        w.merge_state(Map::from_iter([("a".into(), json!(1))]));
        let r2 = w.finish();
        assert_eq!(
            r2.expires_at(),
            at(2000),
            "traffic must not stretch a handshake"
        );
        let mut w = r2.begin_write(at(1900)).unwrap();
        w.set_status(SessionStatus::Active).unwrap();
        let r3 = w.finish();
        assert_eq!(r3.expires_at(), at(11_900));
        assert_eq!(r3.version(), 3);
    }

    #[test]
    fn writes_to_terminal_or_expired_sessions_are_refused() {
        let r = SessionRecord::create(SessionId::generate(), NewSession::new(), at(0), policy());
        assert!(matches!(r.begin_write(at(10_000)), Err(Error::Expired)));
        let mut w = r.begin_write(at(5)).unwrap();
        w.set_status(SessionStatus::Closed).unwrap();
        w.retain_for(Duration::from_secs(1));
        let closed = w.finish();
        assert_eq!(closed.expires_at(), at(1005));
        assert!(matches!(closed.begin_write(at(6)), Err(Error::Closed)));
        assert_eq!(closed.status_at(at(u64::MAX)), SessionStatus::Closed);
    }

    #[test]
    fn merge_replaces_keys_and_null_removes() {
        let state = Map::from_iter([("a".into(), json!(1)), ("b".into(), json!({"x": 1}))]);
        let r = SessionRecord::create(
            SessionId::generate(),
            NewSession::new().state(state),
            at(0),
            policy(),
        );
        let mut w = r.begin_write(at(1)).unwrap();
        w.merge_state(Map::from_iter([
            ("a".into(), Value::Null),
            ("b".into(), json!({"y": 2})),
            ("c".into(), json!("new")),
        ]));
        let r2 = w.finish();
        assert_eq!(
            Value::Object(r2.state().clone()),
            json!({"b": {"y": 2}, "c": "new"})
        );
        assert_eq!(
            Value::Object(r.state().clone()),
            json!({"a": 1, "b": {"x": 1}}),
            "the earlier version is untouched"
        );
        assert_eq!(r2.state_size(), r#"{"b":{"y":2},"c":"new"}"#.len());
    }

    #[test]
    fn record_round_trips_through_json() {
        let new = NewSession::new()
            .owner("alice")
            .protocol_version("2025-11-25")
            .client_info(json!({"name": "c", "version": "1"}))
            .capabilities(json!({"roots": {}}));
        let r = SessionRecord::create(SessionId::generate(), new, at(42), policy());
        let text = serde_json::to_string(&r).unwrap();
        let back: SessionRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.owner(), Some("alice"));
    }
}
