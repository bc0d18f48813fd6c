//! [`RedisStore`]: sessions in Redis (or Valkey), shared by many processes.

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

pub use events::RedisEventStore;
use keys::Keys;

/// Settings of a [`RedisStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prefix of every key (`mcp`). Keys of one session share a hash tag,
    /// `{<session id>}`, so they live in one Redis Cluster slot.
    pub prefix: String,
    /// Redis keeps a record this long past its `expires_at` before its own
    /// TTL removes it (5 min): room for clock skew between the servers and
    /// Redis. The record's `expires_at` stays what decides expiry.
    pub ttl_grace: Duration,
    /// Longest wait for a Redis reply before the call fails (2 s).
    pub response_timeout: Duration,
    /// Longest wait for a connection to Redis (2 s).
    pub connection_timeout: Duration,
    /// Events kept per resumable stream (256).
    pub events_per_stream: usize,
    /// Events of a stream are dropped this long after its last event (30 min).
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
            events_ttl: Duration::from_secs(1800),
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
/// - creation is `SET … NX PXAT`, so ids never collide;
/// - compare-and-swap is a Lua script on that one key (safe on a shared,
///   multiplexed connection, unlike `WATCH`/`MULTI`), which also refuses
///   writes to a terminal record;
/// - every write sets Redis's own expiry to the record's deadline plus a
///   grace period, so abandoned sessions disappear even if no server sweeps,
///   while the record's own `expires_at` decides expiry on every read;
/// - two sorted sets, `<prefix>:deadlines` and `<prefix>:live`, index
///   deadlines (sweeping costs in proportion to what expired) and count live
///   sessions; they are hints, corrected by each sweep;
/// - listing uses `SCAN`, never `KEYS`.
///
/// The connection reconnects by itself after Redis restarts; meanwhile calls
/// fail after `response_timeout` with [`Error::Backend`], never hang.
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

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::backend(format!("redis: {what}"), e)
}

/// Compare-and-swap on one record key.
/// KEYS[1] record; ARGV[1] expected version, ARGV[2] new value, ARGV[3] PXAT.
/// Returns {0} gone, {1, current} conflict, {2, status} terminal, {3} swapped.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return {0} end
local v, s = string.match(cur, '^(%d+) (%a) ')
if s ~= 'L' then return {2, s} end
if v ~= ARGV[1] then return {1, cur} end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
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
    /// # Errors
    ///
    /// [`crate::Error::Format`] for a URL that is not a Redis URL, or when
    /// called outside a Tokio runtime.
    pub fn connect(url: &str, options: RedisOptions) -> std::result::Result<Self, crate::Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(crate::Error::Format {
                path: url.into(),
                detail: "RedisStore::connect must be called inside a Tokio runtime".into(),
            });
        }
        let client = redis::Client::open(url).map_err(|e| crate::Error::Format {
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

    /// Redis's own expiry for a record: its deadline plus the grace period.
    fn pxat(&self, record: &SessionRecord) -> u64 {
        let grace = u64::try_from(self.options.ttl_grace.as_millis()).unwrap_or(u64::MAX);
        record.expires_at().as_millis().saturating_add(grace)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, record: &SessionRecord) -> Result<()> {
        let mut con = self.connection.clone();
        let key = self.keys.record(record.id());
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(encode(record)?)
            .arg("NX")
            .arg("PXAT")
            .arg(self.pxat(record))
            .query_async(&mut con)
            .await
            .map_err(|e| redis_error("SET NX", e))?;
        if set.is_none() {
            return Err(Error::AlreadyExists);
        }
        let id = record.id().as_str();
        let mut pipe = redis::pipe();
        pipe.zadd(self.keys.deadlines(), id, record.expires_at().as_millis())
            .ignore();
        if !record.stored_status().is_terminal() {
            pipe.zadd(self.keys.live(), id, 0).ignore();
        }
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| redis_error("ZADD", e))
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
            .arg(expected_version)
            .arg(encode(record)?)
            .arg(self.pxat(record))
            .invoke_async(&mut con)
            .await
            .map_err(|e| redis_error("compare-and-swap", e))?;
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
                let id = record.id().as_str();
                let mut pipe = redis::pipe();
                pipe.zadd(self.keys.deadlines(), id, record.expires_at().as_millis())
                    .ignore();
                if record.stored_status().is_terminal() {
                    pipe.zrem(self.keys.live(), id).ignore();
                }
                pipe.query_async::<()>(&mut con)
                    .await
                    .map_err(|e| redis_error("ZADD", e))?;
                Ok(Cas::Swapped)
            }
            _ => Err(Error::backend_msg(format!(
                "redis: unexpected compare-and-swap reply {reply:?}"
            ))),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let mut con = self.connection.clone();
        let (deleted,): (i64,) = redis::pipe()
            .del(self.keys.record(id))
            .zrem(self.keys.deadlines(), id.as_str())
            .ignore()
            .zrem(self.keys.live(), id.as_str())
            .ignore()
            .query_async(&mut con)
            .await
            .map_err(|e| redis_error("DEL", e))?;
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
                .arg(limit.max(10))
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
                limit as isize,
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
            let reply: Vec<Value> = script
                .key(self.keys.record(&id))
                .arg(now.as_millis())
                .invoke_async(&mut con)
                .await
                .map_err(|e| redis_error("remove due", e))?;
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
            pipe.query_async::<()>(&mut con)
                .await
                .map_err(|e| redis_error("ZREM", e))?;
        }
        Ok(removed)
    }
}
