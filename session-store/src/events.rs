//! [`MemoryEventStore`]: resumable-stream events in process memory.

use std::collections::VecDeque;

use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use foldhash::HashMap;
use foldhash::fast::RandomState;
use parking_lot::Mutex;
use session_core::{EventId, EventStore, Result, SessionId, StoredEvent, StreamId};

const SHARDS: usize = 16;

/// Keeps the latest events of each stream in memory.
///
/// **Durability:** none; events are lost with the process. That costs little:
/// a stream can only be resumed from the process that produced it unless the
/// events live in a shared store (Redis), and a request in flight dies with its
/// process anyway. Used beside [`MemoryStore`](crate::MemoryStore) and
/// [`FileStore`](crate::FileStore).
///
/// **Bounds:** at most `events_per_stream` events per stream (oldest dropped
/// first) and `streams_per_session` streams per session (least recently
/// created dropped first).
#[derive(Debug)]
pub struct MemoryEventStore {
    shards: Box<[Mutex<HashMap<SessionId, SessionEvents>>]>,
    hasher: RandomState,
    events_per_stream: usize,
    streams_per_session: usize,
}

#[derive(Debug, Default)]
struct SessionEvents {
    streams: HashMap<StreamId, Stream>,
    /// Streams by creation, for dropping the oldest.
    order: VecDeque<StreamId>,
}

#[derive(Debug, Default)]
struct Stream {
    last_seq: u64,
    events: VecDeque<(u64, Arc<str>)>,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new(256, 64)
    }
}

impl MemoryEventStore {
    /// A store keeping `events_per_stream` events of each stream and
    /// `streams_per_session` streams of each session (both at least 1).
    pub fn new(events_per_stream: usize, streams_per_session: usize) -> Self {
        MemoryEventStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            events_per_stream: events_per_stream.max(1),
            streams_per_session: streams_per_session.max(1),
        }
    }

    fn shard(&self, id: &SessionId) -> &Mutex<HashMap<SessionId, SessionEvents>> {
        &self.shards[(self.hasher.hash_one(id.as_str()) as usize) % SHARDS]
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId> {
        let mut shard = self.shard(session).lock();
        let events = shard.entry(session.clone()).or_default();
        if !events.streams.contains_key(stream) {
            if events.order.len() >= self.streams_per_session
                && let Some(oldest) = events.order.pop_front()
            {
                events.streams.remove(&oldest);
            }
            events.order.push_back(stream.clone());
        }
        let entry = events.streams.entry(stream.clone()).or_default();
        entry.last_seq += 1;
        if entry.events.len() >= self.events_per_stream {
            entry.events.pop_front();
        }
        entry.events.push_back((entry.last_seq, data));
        Ok(EventId {
            stream: stream.clone(),
            seq: entry.last_seq,
        })
    }

    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let shard = self.shard(session).lock();
        let Some(stream) = shard
            .get(session)
            .and_then(|events| events.streams.get(&after.stream))
        else {
            return Ok(None);
        };
        if after.seq > stream.last_seq {
            return Ok(None);
        }
        // Everything after `after` must still be here.
        let oldest = stream
            .events
            .front()
            .map_or(stream.last_seq + 1, |(s, _)| *s);
        if after.seq + 1 < oldest {
            return Ok(None);
        }
        Ok(Some(
            stream
                .events
                .iter()
                .filter(|(seq, _)| *seq > after.seq)
                .map(|(seq, data)| StoredEvent {
                    id: EventId {
                        stream: after.stream.clone(),
                        seq: *seq,
                    },
                    data: data.clone(),
                })
                .collect(),
        ))
    }

    async fn latest(&self, session: &SessionId, stream: &StreamId) -> Result<Option<EventId>> {
        let shard = self.shard(session).lock();
        Ok(shard
            .get(session)
            .and_then(|events| events.streams.get(stream))
            .filter(|s| s.last_seq > 0)
            .map(|s| EventId {
                stream: stream.clone(),
                seq: s.last_seq,
            }))
    }

    fn may_hold(&self, session: &SessionId) -> bool {
        self.shard(session).lock().contains_key(session)
    }

    async fn remove_session(&self, session: &SessionId) -> Result<()> {
        self.shard(session).lock().remove(session);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn replays_what_follows_on_the_same_stream_only() {
        block_on(async {
            let store = MemoryEventStore::new(10, 10);
            let s = SessionId::generate();
            let (a, b) = (StreamId::generate(), StreamId::generate());
            let a1 = store.append(&s, &a, "a1".into()).await.unwrap();
            store.append(&s, &b, "b1".into()).await.unwrap();
            store.append(&s, &a, "a2".into()).await.unwrap();
            store.append(&s, &a, "a3".into()).await.unwrap();
            let replay = store.replay_after(&s, &a1).await.unwrap().unwrap();
            let data: Vec<&str> = replay.iter().map(|e| &*e.data).collect();
            assert_eq!(data, ["a2", "a3"]);
            assert_eq!(replay[1].id.to_string(), format!("{a}_3"));
            let last = replay[1].id.clone();
            assert_eq!(store.replay_after(&s, &last).await.unwrap(), Some(vec![]));
            let other = SessionId::generate();
            assert_eq!(store.replay_after(&other, &a1).await.unwrap(), None);
        });
    }

    #[test]
    fn bounds_hold_and_a_gap_is_refused_rather_than_skipped() {
        block_on(async {
            let store = MemoryEventStore::new(2, 2);
            let s = SessionId::generate();
            let a = StreamId::generate();
            let first = store.append(&s, &a, "1".into()).await.unwrap();
            let second = store.append(&s, &a, "2".into()).await.unwrap();
            store.append(&s, &a, "3".into()).await.unwrap();
            store.append(&s, &a, "4".into()).await.unwrap();
            assert_eq!(
                store.replay_after(&s, &first).await.unwrap(),
                None,
                "event 2 is gone"
            );
            assert_eq!(
                store
                    .replay_after(&s, &second)
                    .await
                    .unwrap()
                    .unwrap()
                    .len(),
                2
            );
            store
                .append(&s, &StreamId::generate(), "x".into())
                .await
                .unwrap();
            store
                .append(&s, &StreamId::generate(), "y".into())
                .await
                .unwrap();
            assert_eq!(
                store.replay_after(&s, &second).await.unwrap(),
                None,
                "stream a was dropped"
            );
            store.remove_session(&s).await.unwrap();
        });
    }
}
