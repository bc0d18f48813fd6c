//! [`RedisStore`]: sessions in Redis (or Valkey), shared by many processes.

mod errors;
mod events;
mod keys;

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};
use session_core::{
    Cas, Error, Page, Result, SessionId, SessionRecord, SessionStatus, SessionStore, Timestamp,
    terminal_error,
};

use errors::{Sent, ready, redis_error, redis_write_error};
pub use events::RedisEventStore;
use keys::Keys;

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prefix of every key (`mcp`). Keys of one session share a hash tag,
    /// `{<session id>}`, so they live in one Redis Cluster slot. A `prefix`
    /// query parameter of the URL given to [`RedisStore::connect`]
    /// (`redis://host:6379/0?prefix=myapp`) takes precedence.
    pub prefix: String,
    /// Redis keeps a record this long past its `expires_at` before its own
    /// TTL removes it (5 min). The TTL is relative: the time from the
    /// record's last write to its deadline, plus this, so it does not depend
    /// on how the servers' clocks compare with Redis's. The record's
    /// `expires_at` stays what decides expiry.
    pub ttl_grace: Duration,
    /// Longest wait for a Redis reply before the call fails (2 s). A
    /// blocking read for events waits this long beyond its own wait.
    pub response_timeout: Duration,
    /// Longest wait for a connection to Redis (2 s).
    pub connection_timeout: Duration,
    /// Events kept per resumable stream (256).
    pub events_per_stream: usize,
    /// Streams kept per session (64): beyond it, appending to a new stream
    /// drops the stream appended to least recently (never the session's
    /// standalone GET stream), as [`MemoryEventStore`](crate::MemoryEventStore)
    /// does.
    pub streams_per_session: usize,
    /// Events of a stream are dropped this long after its last event (35 min:
    /// the default idle timeout plus the default grace). Set it from the
    /// sessions' idle timeout with
    /// [`session_idle_timeout`](Self::session_idle_timeout). A session's event
    /// numbering (the last number of each stream) lives as long as the session
    /// record as well, so numbers are never reused while the session lives.
    pub events_ttl: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "mcp".into(),
            ttl_grace: Duration::from_secs(300),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            events_per_stream: 256,
            streams_per_session: 64,
            events_ttl: session_core::ExpiryPolicy::DEFAULT_IDLE_TIMEOUT
                .saturating_add(Duration::from_secs(300)),
        }
    }
}

impl RedisOptions {
    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the reply timeout.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets how long events are kept after a stream's last event.
    pub fn events_ttl(mut self, ttl: Duration) -> Self {
        self.events_ttl = ttl;
        self
    }

    /// Keeps events as long as a session that received them can live idle:
    /// `idle_timeout` plus [`ttl_grace`](Self::ttl_grace) after the stream's
    /// last event. What a server sets from its sessions' idle timeout.
    pub fn session_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.events_ttl = idle_timeout.saturating_add(self.ttl_grace);
        self
    }

    /// Sets how many events each stream keeps (at least 1).
    pub fn events_per_stream(mut self, events: usize) -> Self {
        self.events_per_stream = events;
        self
    }

    /// Sets how many streams each session keeps (at least 1).
    pub fn streams_per_session(mut self, streams: usize) -> Self {
        self.streams_per_session = streams;
        self
    }
}

/// Milliseconds of a duration, for Redis: at least 1 (Redis refuses a TTL of
/// 0), at most `u64::MAX`.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Splits the `prefix` query parameter off a Redis URL:
/// `redis://host:6379/0?prefix=myapp` is `redis://host:6379/0` and `myapp`.
/// Other query parameters stay. A prefix is 1 to 64 characters of
/// `[A-Za-z0-9_.:-]`.
fn split_prefix(url: &str) -> std::result::Result<(String, Option<String>), String> {
    let (before_fragment, fragment) = match url.find('#') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let Some((base, query)) = before_fragment.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut prefix = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "prefix" {
            kept.push(pair);
            continue;
        }
        if !valid_prefix(value) {
            return Err(format!(
                "the prefix `{value}` must be 1 to 64 characters of A-Z a-z 0-9 _ . : -"
            ));
        }
        if prefix.replace(value.to_string()).is_some() {
            return Err("the prefix is given twice".into());
        }
    }
    let mut rebuilt = base.to_string();
    if !kept.is_empty() {
        rebuilt.push('?');
        rebuilt.push_str(&kept.join("&"));
    }
    rebuilt.push_str(fragment);
    Ok((rebuilt, prefix))
}

/// Whether `prefix` may start keys: 1 to 64 characters of
/// `[A-Za-z0-9_.:-]`.
fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// A session store in Redis: for several server processes (replicas behind
/// a load balancer) that must share sessions.
///
/// **Durability:** what Redis promises. With `appendonly yes` and
/// `appendfsync always`, a write acknowledged by Redis survives a crash of
/// Redis; with the default `everysec`, up to a second of writes can be lost.
/// A write this store acknowledges was acknowledged by Redis.
///
/// **How it keeps the contract:**
/// - a record is one string key, `<prefix>:{<id>}:s`, holding a small header
///   (version, status, deadline) and the record's JSON;
/// - creation is `SET … NX PX`, so ids never collide;
/// - compare-and-swap is a Lua script on that one key (safe on a shared,
///   multiplexed connection, unlike `WATCH`/`MULTI`), which also refuses
///   writes to a terminal record;
/// - every write sets Redis's own TTL to the time from the record's last
///   write (`last_activity`) to its deadline, plus a grace period: relative,
///   computed from the record alone, so a server clock behind or ahead of
///   Redis (or a test's manual clock) changes nothing. Abandoned sessions
///   disappear even if no server sweeps, while the record's own `expires_at`
///   decides expiry on every read;
/// - two sorted sets, `<prefix>:deadlines` and `<prefix>:live`, index
///   deadlines (sweeping costs in proportion to what expired) and count live
///   sessions; they are hints, corrected by each sweep;
/// - listing uses `SCAN`, never `KEYS`.
///
/// **Why the indexes are not updated atomically with the record:** a
/// session's keys share the hash tag `{<id>}` and so one Redis Cluster slot,
/// while each index is one key for all sessions, in another slot; a script
/// or `MULTI` spanning both would be refused by a cluster (`CROSSSLOT`). So
/// they are written in separate commands, ordered so the sweep corrects what
/// a failure leaves behind:
/// - [`insert`](SessionStore::insert) adds the index entries *before* the
///   record: a failure there fails the insert with nothing written, and
///   entries left by an insert that then failed (or lost the id to another)
///   name a record that is missing, not due, or earlier than recorded, which
///   the sweep drops or moves when their time comes;
/// - [`compare_and_swap`](SessionStore::compare_and_swap) and
///   [`delete`](SessionStore::delete) update the indexes *after* the record,
///   best effort: once the record is written the call reports success (the
///   write is acknowledged by Redis), and a failed index update is logged. The
///   stale entry it leaves is the record's previous deadline, which the sweep
///   moves to the current one, or a deleted record, which it drops (with its
///   live entry).
///
/// The connection reconnects by itself after Redis restarts; meanwhile calls
/// fail after `response_timeout` with [`Error::Backend`], never hang, and
/// [`readiness`](SessionStore::readiness) (a `PING` bounded to 1 s) says
/// Redis is unreachable.
///
/// **What a failed write did** ([`Error::outcome`]): nothing
/// ([`WriteOutcome::NotApplied`](session_core::WriteOutcome::NotApplied)) when no connection could be made (Redis
/// refused it) or Redis answered with an error; possibly applied
/// ([`WriteOutcome::Unknown`](session_core::WriteOutcome::Unknown)) after a timeout (waiting for the reply, or
/// for a connection: the client does not tell them apart), a connection lost
/// once the command may have left, a reply that did not read back, or an
/// error a Lua script raised while running (Redis keeps the writes a failed
/// script made). An insert whose index entries could not be written wrote
/// no record, so it is `NotApplied`.
///
/// ```no_run
/// use session_store::{RedisOptions, RedisStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/", RedisOptions::default())?;
/// store.ping().await?;
/// let events = store.event_store();
/// # let _ = events;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.options.prefix)
            .finish_non_exhaustive()
    }
}

/// Status letters in a record's header.
fn status_letter(status: SessionStatus) -> char {
    match status {
        SessionStatus::Closed => 'C',
        SessionStatus::Expired => 'E',
        _ => 'L',
    }
}

/// The stored form: `<version> <status> <expires_at>\n<json>`.
fn encode(record: &SessionRecord) -> Result<String> {
    let json = serde_json::to_string(record)
        .map_err(|e| Error::backend("cannot encode the session record", e))?;
    Ok(format!(
        "{} {} {}\n{json}",
        record.version(),
        status_letter(record.stored_status()),
        record.expires_at().as_millis()
    ))
}

fn decode(id: &SessionId, stored: &[u8]) -> Result<SessionRecord> {
    let corrupt = |detail: String| Error::Corrupt {
        id: id.clone(),
        detail,
    };
    let newline = stored
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header".into()))?;
    let record: SessionRecord = serde_json::from_slice(&stored[newline + 1..])
        .map_err(|e| corrupt(format!("record does not decode: {e}")))?;
    if record.id() != id {
        return Err(corrupt("record holds another session's id".into()));
    }
    Ok(record)
}

/// Where a listing stands.
#[derive(serde::Serialize, serde::Deserialize)]
struct ListCursor {
    scan: u64,
    pending: Vec<String>,
}

/// Compare-and-swap on one record key.
/// KEYS[1] record, KEYS[2] the session's event counters, KEYS[3] its
/// streams; ARGV[1] expected version, ARGV[2] new value, ARGV[3] TTL (ms).
/// Returns {0} gone, {1, current} conflict, {2, status} terminal, {3} swapped.
///
/// Every write sets the TTL again (a plain `SET` would clear it), and makes
/// the session's event numbering live at least as long as the record, so a
/// stream's numbers are not reused while the session lives.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return {0} end
local v, s = string.match(cur, '^(%d+) (%a) ')
if s ~= 'L' then return {2, s} end
if v ~= ARGV[1] then return {1, cur} end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
for i = 2, 3 do
  local left = redis.call('PTTL', KEYS[i])
  if left ~= -2 and left < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {3}
";

/// Removes a record if it is due.
/// KEYS[1] record; ARGV[1] now (ms).
/// Returns {0} gone, {1, value} removed, {2, expires_at} not due.
const REMOVE_DUE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return {0} end
local exp = tonumber(string.match(cur, '^%d+ %a (%d+)'))
if exp and exp > tonumber(ARGV[1]) then return {2, tostring(exp)} end
redis.call('DEL', KEYS[1])
return {1, cur}
";

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port/db`). Returns at
    /// once: the connection is made on first use, and remade after failures.
    /// Call it inside a Tokio runtime (the connection lives on it).
    ///
    /// The query parameter `prefix` sets the key prefix, overriding
    /// [`RedisOptions::prefix`]: `redis://host:6379/0?prefix=myapp` keeps
    /// every key under `myapp:`. A prefix is 1 to 64 characters of
    /// `[A-Za-z0-9_.:-]`; other query parameters go to the Redis client.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Format`] for a URL that is not a Redis URL or has an
    /// invalid prefix, or when called outside a Tokio runtime.
    pub fn connect(
        url: &str,
        mut options: RedisOptions,
    ) -> std::result::Result<Self, crate::Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(crate::Error::Format {
                path: url.into(),
                detail: "RedisStore::connect must be called inside a Tokio runtime".into(),
            });
        }
        let (client_url, prefix) = split_prefix(url).map_err(|detail| crate::Error::Format {
            path: url.into(),
            detail,
        })?;
        if let Some(prefix) = prefix {
            options.prefix = prefix;
        }
        let client = redis::Client::open(client_url).map_err(|e| crate::Error::Format {
            path: url.into(),
            detail: format!("not a Redis URL: {e}"),
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| {
                crate::Error::Format {
                    path: url.into(),
                    detail: format!("cannot set up the Redis connection: {e}"),
                }
            })?;
        Ok(RedisStore {
            connection,
            client,
            keys: Keys::new(&options.prefix),
            options,
        })
    }

    /// A store of its own over the same connection, with every key under
    /// `prefix`: for records kept beside sessions, such as handles
    /// (`Handles` in `session-core`), which must never be found as
    /// sessions.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Format`] for a prefix that is not 1 to 64
    /// characters of `[A-Za-z0-9_.:-]`, or the prefix of this store.
    pub fn with_prefix(&self, prefix: &str) -> std::result::Result<Self, crate::Error> {
        if !valid_prefix(prefix) || prefix == self.options.prefix {
            return Err(crate::Error::Format {
                path: prefix.into(),
                detail: "a store beside another needs a prefix of its own, 1 to 64 characters \
                         of A-Z a-z 0-9 _ . : -"
                    .into(),
            });
        }
        let mut options = self.options.clone();
        options.prefix = prefix.to_string();
        Ok(RedisStore {
            connection: self.connection.clone(),
            client: self.client.clone(),
            keys: Keys::new(prefix),
            options,
        })
    }

    /// The event store for resumable streams, in the same Redis.
    pub fn event_store(&self) -> RedisEventStore {
        RedisEventStore::new(
            self.connection.clone(),
            self.client.clone(),
            self.keys.clone(),
            &self.options,
        )
    }

    /// Checks Redis answers (`PING`).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if it does not.
    pub async fn ping(&self) -> Result<()> {
        let mut con = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .map(|_| ())
            .map_err(|e| redis_error("PING", e))
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.options.prefix
    }

    /// Redis's own TTL for a record, in ms: from the record's last write to
    /// its deadline, plus the grace period. Computed from the record alone,
    /// so it does not depend on how the writer's clock compares with Redis's.
    /// (A record made terminal by a sweep keeps its last activity from
    /// before, so its TTL can be longer than needed: the sweep, not the TTL,
    /// removes it.)
    fn ttl_ms(&self, record: &SessionRecord) -> u64 {
        let written = record.last_activity().max(record.created_at());
        let left = record
            .expires_at()
            .as_millis()
            .saturating_sub(written.as_millis());
        left.saturating_add(millis(self.options.ttl_grace)).max(1)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        let mut con = self.connection.clone();
        let value = encode(record)?;
        // The index entries first (see the type's docs): a failure here
        // fails the insert with no record written. `LT` keeps the earlier
        // deadline should the id belong to another record: an early hint is
        // one the sweep moves, a late one would delay its sweep.
        let id = record.id().as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.keys.deadlines())
            .arg("LT")
            .arg(record.expires_at().as_millis())
            .arg(id)
            .ignore();
        if !record.stored_status().is_terminal() {
            pipe.zadd(self.keys.live(), id, 0).ignore();
        }
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| redis_error("ZADD", e))?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.record(record.id()))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms(record))
            .query_async(&mut con)
            .await
            .map_err(|e| redis_write_error("SET NX", e, Sent::Command))?;
        if set.is_none() {
            return Err(Error::AlreadyExists);
        }
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>> {
        let mut con = self.connection.clone();
        let stored: Option<Vec<u8>> = con
            .get(self.keys.record(id))
            .await
            .map_err(|e| redis_error("GET", e))?;
        stored.map(|bytes| decode(id, &bytes)).transpose()
    }

    async fn compare_and_swap(&self, record: &SessionRecord, expected_version: u64) -> Result<Cas> {
        let mut con = self.connection.clone();
        let reply: Vec<Value> = Script::new(CAS)
            .key(self.keys.record(record.id()))
            .key(self.keys.counters(record.id()))
            .key(self.keys.streams(record.id()))
            .arg(expected_version)
            .arg(encode(record)?)
            .arg(self.ttl_ms(record))
            .invoke_async(&mut con)
            .await
            .map_err(|e| redis_write_error("compare-and-swap", e, Sent::Script))?;
        let code: i64 = reply
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or(-1);
        match code {
            0 => Ok(Cas::Conflict { current: None }),
            1 => {
                let bytes: Vec<u8> = reply
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref(v).ok())
                    .unwrap_or_default();
                Ok(Cas::Conflict {
                    current: Some(decode(record.id(), &bytes)?),
                })
            }
            2 => {
                let letter: String = reply
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref(v).ok())
                    .unwrap_or_default();
                let status = if letter == "C" {
                    SessionStatus::Closed
                } else {
                    SessionStatus::Expired
                };
                Err(terminal_error(status))
            }
            3 => {
                // The record is written: from here on the write is
                // acknowledged. The index update is best effort (see the
                // type's docs): what it fails to do, the sweep corrects.
                let id = record.id().as_str();
                let mut pipe = redis::pipe();
                pipe.zadd(self.keys.deadlines(), id, record.expires_at().as_millis())
                    .ignore();
                if record.stored_status().is_terminal() {
                    pipe.zrem(self.keys.live(), id).ignore();
                }
                if let Err(e) = pipe.query_async::<()>(&mut con).await {
                    tracing::warn!(
                        session = %record.id(),
                        "redis: the record is written but its index entries are not \
                         (the sweep corrects them): {e}"
                    );
                }
                Ok(Cas::Swapped)
            }
            _ => Err(Error::backend_msg(format!(
                "redis: unexpected compare-and-swap reply {reply:?}"
            ))),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let mut con = self.connection.clone();
        let deleted: i64 = con
            .del(self.keys.record(id))
            .await
            .map_err(|e| redis_write_error("DEL", e, Sent::Command))?;
        // The record is gone: the index update is best effort (see the
        // type's docs); a sweep drops entries of missing records.
        let forgotten = redis::pipe()
            .zrem(self.keys.deadlines(), id.as_str())
            .ignore()
            .zrem(self.keys.live(), id.as_str())
            .ignore()
            .query_async::<()>(&mut con)
            .await;
        if let Err(e) = forgotten {
            tracing::warn!(
                session = %id,
                "redis: the record is deleted but its index entries are not \
                 (the sweep drops them): {e}"
            );
        }
        Ok(deleted > 0)
    }

    async fn count(&self) -> Result<usize> {
        let mut con = self.connection.clone();
        con.zcard(self.keys.live())
            .await
            .map_err(|e| redis_error("ZCARD", e))
    }

    /// Lists by `SCAN` (never `KEYS`). The cursor holds Redis's cursor and
    /// the ids of its last batch that did not fit in the page.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let mut con = self.connection.clone();
        let bad = |text: &str| {
            Error::backend_msg(format!("redis: not a cursor this store issued: {text}"))
        };
        let (mut scan, mut pending): (u64, Vec<String>) = match cursor {
            None => (0, Vec::new()),
            Some(text) => serde_json::from_str::<ListCursor>(text)
                .map(|c| (c.scan, c.pending))
                .map_err(|_| bad(text))?,
        };
        let mut started = cursor.is_some();
        let mut ids: Vec<SessionId> = Vec::new();
        loop {
            while ids.len() < limit && !pending.is_empty() {
                if let Ok(id) = SessionId::parse(&pending.remove(0)) {
                    ids.push(id);
                }
            }
            if ids.len() == limit || (started && scan == 0) {
                break;
            }
            let (after, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(scan)
                .arg("MATCH")
                .arg(self.keys.record_pattern())
                .arg("COUNT")
                .arg(limit.clamp(10, 1000))
                .query_async(&mut con)
                .await
                .map_err(|e| redis_error("SCAN", e))?;
            pending.extend(
                keys.iter()
                    .filter_map(|k| self.keys.id_of(k))
                    .map(|id| id.to_string()),
            );
            scan = after;
            started = true;
        }
        let next = (!pending.is_empty() || scan != 0)
            .then(|| serde_json::to_string(&ListCursor { scan, pending }).unwrap_or_default());
        let mut records = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.get(self.keys.record(id));
            }
            let values: Vec<Option<Vec<u8>>> = pipe
                .query_async(&mut con)
                .await
                .map_err(|e| redis_error("GET", e))?;
            for (id, value) in ids.iter().zip(values) {
                if let Some(bytes) = value
                    && let Ok(record) = decode(id, &bytes)
                {
                    records.push(record);
                }
            }
        }
        Ok(Page { records, next })
    }

    async fn remove_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<SessionRecord>> {
        let mut con = self.connection.clone();
        let due: Vec<String> = con
            .zrangebyscore_limit(
                self.keys.deadlines(),
                "-inf",
                now.as_millis(),
                0,
                isize::try_from(limit).unwrap_or(isize::MAX),
            )
            .await
            .map_err(|e| redis_error("ZRANGEBYSCORE", e))?;
        let script = Script::new(REMOVE_DUE);
        let mut removed = Vec::new();
        let mut forget = Vec::new();
        let mut later = Vec::new();
        for member in due {
            let Ok(id) = SessionId::parse(&member) else {
                forget.push(member);
                continue;
            };
            let reply: Vec<Value> = match script
                .key(self.keys.record(&id))
                .arg(now.as_millis())
                .invoke_async(&mut con)
                .await
            {
                Ok(reply) => reply,
                // What was removed so far is reported; the rest waits for
                // the next sweep.
                Err(e) if !removed.is_empty() => {
                    tracing::warn!(session = %id, "redis: a sweep stopped part way: {e}");
                    break;
                }
                Err(e) => return Err(redis_write_error("remove due", e, Sent::Script)),
            };
            let code: i64 = reply
                .first()
                .and_then(|v| redis::from_redis_value_ref(v).ok())
                .unwrap_or(-1);
            match code {
                1 => {
                    let bytes: Vec<u8> = reply
                        .get(1)
                        .and_then(|v| redis::from_redis_value_ref(v).ok())
                        .unwrap_or_default();
                    if let Ok(record) = decode(&id, &bytes) {
                        removed.push(record);
                    }
                    forget.push(member);
                }
                2 => {
                    // Written since: its deadline moved; fix the hint.
                    let at: String = reply
                        .get(1)
                        .and_then(|v| redis::from_redis_value_ref(v).ok())
                        .unwrap_or_default();
                    later.push((member, at.parse::<u64>().unwrap_or(0)));
                }
                _ => forget.push(member), // Redis's TTL already removed it
            }
        }
        if !forget.is_empty() || !later.is_empty() {
            let mut pipe = redis::pipe();
            for member in &forget {
                pipe.zrem(self.keys.deadlines(), member).ignore();
                pipe.zrem(self.keys.live(), member).ignore();
            }
            for (member, at) in &later {
                pipe.zadd(self.keys.deadlines(), member, *at).ignore();
            }
            // The records are removed: the index is a hint (see the type's
            // docs), and the next sweep drops entries of missing records.
            if let Err(e) = pipe.query_async::<()>(&mut con).await {
                tracing::warn!(
                    "redis: swept records are removed but their index entries are not \
                     (the next sweep drops them): {e}"
                );
            }
        }
        Ok(removed)
    }

    /// `PING`, answered within 1 s (or the reply timeout, if shorter).
    async fn readiness(&self) -> Result<()> {
        ready(&self.connection, self.options.response_timeout).await
    }
}

#[cfg(test)]
mod tests;
