//! [`RedisEventStore`]: resumable-stream events in Redis streams, shared by
//! every server process, so a stream broken on one replica resumes on another.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncCommands, Script, Value};
use session_core::{EventId, EventStore, Result, SessionId, StoredEvent, StreamId};

use super::{RedisOptions, keys::Keys, redis_error};

/// Appends one event.
/// KEYS[1] events, KEYS[2] counter, KEYS[3] streams of the session.
/// ARGV[1] data, ARGV[2] max events, ARGV[3] ttl ms, ARGV[4] now ms,
/// ARGV[5] stream name. Returns the event's number.
const APPEND: &str = r"
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[2], '0-' .. n, 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if n == 1 then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5]) end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return n
";

/// Events of resumable streams in Redis.
///
/// Each stream is a Redis stream `<prefix>:{<id>}:e:<stream>` whose entries
/// are numbered `0-1`, `0-2`, … by a counter, capped to the configured
/// number of events, and expiring with its last event's TTL. Any process
/// can replay a stream from a `Last-Event-ID`, and a process holding a
/// resumed connection follows events appended elsewhere with `XREAD BLOCK`
/// (on connections of its own, not the shared one).
#[derive(Clone)]
pub struct RedisEventStore {
    connection: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    max_events: usize,
    ttl_ms: u64,
    /// Connections for blocking reads, reused.
    blocking: Arc<Mutex<Vec<MultiplexedConnection>>>,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("max_events", &self.max_events)
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
            let data = fields
                .chunks(2)
                .find(|kv| kv[0] == "d")
                .map(|kv| kv[1].clone())?;
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
            ttl_ms: u64::try_from(options.events_ttl.as_millis()).unwrap_or(u64::MAX),
            blocking: Arc::default(),
        }
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
    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId> {
        let mut con = self.connection.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let seq: u64 = Script::new(APPEND)
            .key(self.keys.events(session, stream))
            .key(self.keys.counter(session, stream))
            .key(self.keys.streams(session))
            .arg(&*data)
            .arg(self.max_events)
            .arg(self.ttl_ms)
            .arg(now)
            .arg(stream.as_str())
            .invoke_async(&mut con)
            .await
            .map_err(|e| redis_error("XADD", e))?;
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
            .get(self.keys.counter(session, &after.stream))
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

    async fn wait_after(
        &self,
        session: &SessionId,
        after: &EventId,
        wait_ms: u64,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let pooled = self.blocking.lock().pop();
        let mut con = match pooled {
            Some(con) => con,
            None => self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| redis_error("connect", e))?,
        };
        let reply: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(wait_ms)
            .arg("STREAMS")
            .arg(self.keys.events(session, &after.stream))
            .arg(format!("0-{}", after.seq))
            .query_async(&mut con)
            .await
            .map_err(|e| redis_error("XREAD", e))?;
        self.blocking.lock().push(con);
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
        let mut keys = vec![self.keys.streams(session)];
        for name in streams {
            if let Some(stream) = StreamId::parse(&name) {
                keys.push(self.keys.events(session, &stream));
                keys.push(self.keys.counter(session, &stream));
            }
        }
        // Every key carries the session's hash tag: one slot, one DEL.
        con.del::<_, ()>(keys)
            .await
            .map_err(|e| redis_error("DEL", e))
    }
}
