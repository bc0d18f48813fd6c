//! [`RedisEventStore`]: resumable-stream events in Redis streams, shared by
//! every server process, so a stream broken on one replica resumes on another.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Script, Value};
use session_core::{EventId, EventStore, Result, SessionId, StoredEvent, StreamId};

use super::{RedisOptions, Sent, keys::Keys, ready, redis_error, redis_write_error};

/// Appends one event.
/// KEYS[1] events of the stream, KEYS[2] counters of the session, KEYS[3]
/// streams of the session. ARGV[1] data, ARGV[2] max events, ARGV[3] TTL
/// (ms), ARGV[4] stream name, ARGV[5] max streams, ARGV[6] the standalone
/// stream's name. Returns {the event's number, names of dropped streams}.
///
/// A stream numbered afresh starts from an empty events key (left over, if
/// at all, from a stream of that name dropped by the cap), so its numbers
/// always increase. The counters and the stream list keep at least the
/// events' TTL (a record write raises them to the record's own). Beyond the
/// cap the streams appended to least recently go, never the standalone one
/// and never the one appended to; their events keys are deleted by the
/// caller (they are not among this script's keys).
const APPEND: &str = r"
local n = redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
if n == 1 then redis.call('DEL', KEYS[1]) end
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[2], '0-' .. n, 'd', ARGV[1])
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])), ARGV[4])
for i = 2, 3 do
  local left = redis.call('PTTL', KEYS[i])
  if left < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
local dropped = {}
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
if over > 0 then
  for _, name in ipairs(redis.call('ZRANGE', KEYS[3], 0, over + 1)) do
    if over > 0 and name ~= ARGV[4] and name ~= ARGV[6] then
      redis.call('ZREM', KEYS[3], name)
      redis.call('HDEL', KEYS[2], name)
      dropped[#dropped + 1] = name
      over = over - 1
    end
  end
end
return {n, dropped}
";

/// Idle connections for blocking reads kept for reuse, at most.
const IDLE_BLOCKING: usize = 32;

/// A connection for blocking reads and the reply timeout it was made with.
struct Blocking {
    response_timeout: Duration,
    connection: MultiplexedConnection,
}

/// Events of resumable streams in Redis.
///
/// Each stream is a Redis stream `<prefix>:{<id>}:e:<stream>` whose entries
/// are numbered `0-1`, `0-2`, … by a counter (a field of the session's hash
/// `<prefix>:{<id>}:c`), capped to the configured number of events, and
/// dropped [`events_ttl`](RedisOptions::events_ttl) after its last event.
/// A session keeps at most
/// [`streams_per_session`](RedisOptions::streams_per_session) streams, in
/// `<prefix>:{<id>}:streams`. The counters and that list live as long as the
/// session record too, so a stream's numbers are never reused while the
/// session lives: a resume from an event whose successors expired is refused
/// (`None`), never confused with newer events.
///
/// A failed append or removal says what it did as
/// [`RedisStore`](super::RedisStore)'s writes do: an append that timed out
/// may have been stored, and numbered.
///
/// Any process can replay a stream from a `Last-Event-ID`, and a process
/// holding a resumed connection follows events appended elsewhere with
/// `XREAD BLOCK` (on connections of its own, not the shared one, whose reply
/// timeout covers the wait).
#[derive(Clone)]
pub struct RedisEventStore {
    connection: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    max_events: usize,
    max_streams: usize,
    ttl_ms: u64,
    response_timeout: Duration,
    connection_timeout: Duration,
    /// Connections for blocking reads, reused.
    blocking: Arc<Mutex<Vec<Blocking>>>,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("max_events", &self.max_events)
            .field("max_streams", &self.max_streams)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

fn seq_of(entry_id: &str) -> Option<u64> {
    entry_id.strip_prefix("0-")?.parse().ok()
}

/// Reads `(number, data)` pairs out of an `XRANGE`/`XREAD` entry list.
fn entries(value: &Value) -> Vec<(u64, String)> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id: String = redis::from_redis_value_ref(pair.first()?).ok()?;
            let fields: Vec<String> = redis::from_redis_value_ref(pair.get(1)?).ok()?;
            let data = fields.chunks(2).find_map(|kv| match kv {
                [key, value] if key == "d" => Some(value.clone()),
                _ => None,
            })?;
            Some((seq_of(&id)?, data))
        })
        .collect()
}

impl RedisEventStore {
    pub(super) fn new(
        connection: ConnectionManager,
        client: redis::Client,
        keys: Keys,
        options: &RedisOptions,
    ) -> Self {
        RedisEventStore {
            connection,
            client,
            keys,
            max_events: options.events_per_stream.max(1),
            max_streams: options.streams_per_session.max(1),
            ttl_ms: super::millis(options.events_ttl),
            response_timeout: options.response_timeout,
            connection_timeout: options.connection_timeout,
            blocking: Arc::default(),
        }
    }

    /// How long events are kept after a stream's last event, in ms.
    pub fn events_ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// A connection for a blocking read of up to `wait`: a pooled one whose
    /// reply timeout covers it, or a new one whose reply timeout is `wait`
    /// plus the usual reply timeout.
    async fn blocking_connection(&self, wait: Duration) -> Result<Blocking> {
        let needed = wait.saturating_add(self.response_timeout);
        let pooled = {
            let mut pool = self.blocking.lock();
            pool.iter()
                .rposition(|b| b.response_timeout >= needed)
                .map(|at| pool.swap_remove(at))
        };
        if let Some(pooled) = pooled {
            return Ok(pooled);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(needed));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| redis_error("connect", e))?;
        Ok(Blocking {
            response_timeout: needed,
            connection,
        })
    }

    fn stored(stream: &StreamId, events: Vec<(u64, String)>) -> Vec<StoredEvent> {
        events
            .into_iter()
            .map(|(seq, data)| StoredEvent {
                id: EventId {
                    stream: stream.clone(),
                    seq,
                },
                data: Arc::from(data),
            })
            .collect()
    }
}

#[async_trait]
impl EventStore for RedisEventStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId> {
        let mut con = self.connection.clone();
        let (seq, dropped): (u64, Vec<String>) = Script::new(APPEND)
            .key(self.keys.events(session, stream))
            .key(self.keys.counters(session))
            .key(self.keys.streams(session))
            .arg(&*data)
            .arg(self.max_events)
            .arg(self.ttl_ms)
            .arg(stream.as_str())
            .arg(self.max_streams)
            .arg(StreamId::standalone().as_str())
            .invoke_async(&mut con)
            .await
            .map_err(|e| redis_write_error("XADD", e, Sent::Script))?;
        let dropped: Vec<String> = dropped
            .iter()
            .filter_map(|name| StreamId::parse(name))
            .map(|old| self.keys.events(session, &old))
            .collect();
        if !dropped.is_empty() {
            // Best effort: their numbering is gone already, so nothing reads
            // them; left over, they expire with their TTL.
            if let Err(e) = con.del::<_, ()>(dropped).await {
                tracing::warn!(session = %session, "redis: cannot drop old streams' events: {e}");
            }
        }
        Ok(EventId {
            stream: stream.clone(),
            seq,
        })
    }

    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let mut con = self.connection.clone();
        let (last, all): (Option<u64>, Value) = redis::pipe()
            .hget(self.keys.counters(session), after.stream.as_str())
            .cmd("XRANGE")
            .arg(self.keys.events(session, &after.stream))
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .map_err(|e| redis_error("XRANGE", e))?;
        let Some(last) = last else {
            return Ok(None);
        };
        if after.seq > last {
            return Ok(None);
        }
        let events = entries(&all);
        let oldest = events.first().map_or(last + 1, |(seq, _)| *seq);
        if after.seq + 1 < oldest {
            return Ok(None);
        }
        let later = events
            .into_iter()
            .filter(|(seq, _)| *seq > after.seq)
            .collect();
        Ok(Some(Self::stored(&after.stream, later)))
    }

    /// The stream's counter: the last number appended, even when the cap
    /// has dropped that event since.
    async fn latest(&self, session: &SessionId, stream: &StreamId) -> Result<Option<EventId>> {
        let mut con = self.connection.clone();
        let last: Option<u64> = con
            .hget(self.keys.counters(session), stream.as_str())
            .await
            .map_err(|e| redis_error("HGET", e))?;
        Ok(last.filter(|&seq| seq > 0).map(|seq| EventId {
            stream: stream.clone(),
            seq,
        }))
    }

    /// `XREAD BLOCK` on a connection of its own (`BLOCK` holds up every
    /// command behind it on a connection), whose reply timeout is the wait
    /// plus the usual reply timeout; reused unless the read failed.
    async fn wait_after(
        &self,
        session: &SessionId,
        after: &EventId,
        wait_ms: u64,
    ) -> Result<Option<Vec<StoredEvent>>> {
        // `BLOCK 0` would wait for ever.
        let wait_ms = wait_ms.max(1);
        let mut blocking = self
            .blocking_connection(Duration::from_millis(wait_ms))
            .await?;
        let reply: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(wait_ms)
            .arg("STREAMS")
            .arg(self.keys.events(session, &after.stream))
            .arg(format!("0-{}", after.seq))
            .query_async(&mut blocking.connection)
            .await
            .map_err(|e| redis_error("XREAD", e))?;
        {
            let mut pool = self.blocking.lock();
            if pool.len() < IDLE_BLOCKING {
                pool.push(blocking);
            }
        }
        // A reply is [[key, entries]]; nil when the wait ran out.
        let events = match &reply {
            Value::Array(streams) => streams
                .first()
                .and_then(|s| match s {
                    Value::Array(pair) => pair.get(1).map(entries),
                    _ => None,
                })
                .unwrap_or_default(),
            Value::Map(map) => map.first().map(|(_, v)| entries(v)).unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(Some(Self::stored(&after.stream, events)))
    }

    async fn remove_session(&self, session: &SessionId) -> Result<()> {
        let mut con = self.connection.clone();
        let streams: Vec<String> = con
            .zrange(self.keys.streams(session), 0, -1)
            .await
            .map_err(|e| redis_error("ZRANGE", e))?;
        let mut keys = vec![self.keys.streams(session), self.keys.counters(session)];
        for name in streams {
            if let Some(stream) = StreamId::parse(&name) {
                keys.push(self.keys.events(session, &stream));
            }
        }
        // Every key carries the session's hash tag: one slot, one DEL.
        con.del::<_, ()>(keys)
            .await
            .map_err(|e| redis_write_error("DEL", e, Sent::Command))
    }

    /// `PING`, answered within 1 s (or the reply timeout, if shorter).
    async fn readiness(&self) -> Result<()> {
        ready(&self.connection, self.response_timeout).await
    }
}
