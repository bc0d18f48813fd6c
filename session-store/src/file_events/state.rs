//! The events in memory: every retained event of every stream, with how far
//! each stream is durable.
//!
//! Appends change the state when they are accepted (sequence numbers are
//! allocated and bounds applied in log order), but readers see an event only
//! once the commit thread has made it durable: [`Stream::durable`] is the
//! last sequence number a reader may be shown. So a read never returns what a
//! crash could still take away, and a sequence number a reader has seen is
//! never handed out again.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use foldhash::HashMap;
use foldhash::fast::RandomState;
use parking_lot::{Mutex, MutexGuard};
use session_core::{EventId, SessionId, StoredEvent, StreamId};

use super::format;

const SHARDS: usize = 16;

/// The bounds, both at least 1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) events_per_stream: usize,
    pub(super) streams_per_session: usize,
}

/// One stream of a session.
///
/// Invariants: `base <= dropped_through`, `durable <= last`, and `events`
/// holds exactly the sequence numbers `dropped_through + 1 ..= last`.
#[derive(Debug)]
pub(super) struct Stream {
    /// Tells this stream apart from an earlier one of the same name (dropped
    /// or removed), so a late durability mark does not land on it.
    pub(super) epoch: u64,
    /// The stream started after this sequence number.
    base: u64,
    /// The last sequence number allocated.
    last: u64,
    /// The last sequence number that is durable: readers see up to here.
    durable: u64,
    /// Every event up to here is gone (bound, gap or damage).
    dropped_through: u64,
    events: VecDeque<(u64, Arc<str>)>,
}

impl Stream {
    fn new(epoch: u64, base: u64) -> Self {
        Stream {
            epoch,
            base,
            last: base,
            durable: base,
            dropped_through: base,
            events: VecDeque::new(),
        }
    }

    /// Whether readers know the stream: something of it is durable.
    fn known(&self) -> bool {
        self.durable > self.base
    }

    fn clear(&mut self, session: &SessionId, stream: &StreamId, bytes: &AtomicI64) {
        for (_, data) in self.events.drain(..) {
            bytes.fetch_sub(event_bytes(session, stream, &data), Ordering::Relaxed);
        }
    }

    fn push(
        &mut self,
        session: &SessionId,
        stream: &StreamId,
        seq: u64,
        data: Arc<str>,
        limits: Limits,
        bytes: &AtomicI64,
    ) {
        bytes.fetch_add(event_bytes(session, stream, &data), Ordering::Relaxed);
        self.events.push_back((seq, data));
        self.last = seq;
        while self.events.len() > limits.events_per_stream {
            if let Some((dropped, data)) = self.events.pop_front() {
                self.dropped_through = dropped;
                bytes.fetch_sub(event_bytes(session, stream, &data), Ordering::Relaxed);
            }
        }
    }
}

fn event_bytes(session: &SessionId, stream: &StreamId, data: &str) -> i64 {
    i64::try_from(format::frame_len(
        session.as_str(),
        stream.as_str(),
        data.len(),
    ))
    .unwrap_or(i64::MAX)
}

/// One session's streams.
#[derive(Debug, Default)]
pub(super) struct Session {
    streams: HashMap<StreamId, Stream>,
    /// Streams by creation, for dropping the oldest.
    order: VecDeque<StreamId>,
    /// Streams created from now on start after this: the highest sequence
    /// number of any stream dropped from the session.
    floor: u64,
}

impl Session {
    fn bytes(&self, session: &SessionId) -> i64 {
        self.streams
            .iter()
            .flat_map(|(name, s)| s.events.iter().map(move |(_, d)| (name, d)))
            .map(|(name, data)| event_bytes(session, name, data))
            .sum()
    }

    /// The stream, created if missing (the oldest stream dropped if the
    /// session is full). Returns whether it was created.
    fn stream(
        &mut self,
        session: &SessionId,
        name: &StreamId,
        base: Base,
        state: &State,
    ) -> (&mut Stream, bool) {
        let created = !self.streams.contains_key(name);
        if created {
            while self.order.len() >= state.limits.streams_per_session {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                if let Some(mut dropped) = self.streams.remove(&oldest) {
                    self.floor = self.floor.max(dropped.last);
                    dropped.clear(session, &oldest, &state.bytes);
                }
            }
            self.order.push_back(name.clone());
        }
        let base = match base {
            Base::Floor => self.floor,
            Base::Before(seq) => seq.saturating_sub(1).min(self.floor),
            Base::Exact(base) => base,
        };
        let stream = self
            .streams
            .entry(name.clone())
            .or_insert_with(|| Stream::new(state.next_epoch(), base));
        (stream, created)
    }
}

/// Where a stream being created starts.
#[derive(Debug, Clone, Copy)]
enum Base {
    /// After the session's floor: a stream created now.
    Floor,
    /// A recovered stream whose start frame was lost, first seen at this
    /// sequence number: after the floor, or just before it if lower.
    Before(u64),
    /// A recovered stream, from its start frame.
    Exact(u64),
}

/// One shard: the sessions whose ids hash to it.
#[derive(Debug, Default)]
pub(super) struct Shard {
    sessions: HashMap<SessionId, Session>,
}

/// A record of the retained durable state, for a snapshot.
#[derive(Debug)]
pub(super) enum Retained {
    Start(SessionId, StreamId, u64),
    Event(SessionId, StreamId, u64, Arc<str>),
    Mark(SessionId, StreamId, u64),
    Floor(SessionId, u64),
}

/// Counts of what the state holds.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub(super) sessions: usize,
    pub(super) streams: usize,
    pub(super) events: usize,
}

/// Every session's events, sharded by session id.
#[derive(Debug)]
pub(super) struct State {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    pub(super) limits: Limits,
    epochs: AtomicU64,
    /// Bytes the retained events would take in a snapshot (an estimate the
    /// compaction threshold compares the log with).
    bytes: AtomicI64,
}

impl State {
    pub(super) fn new(limits: Limits) -> Self {
        State {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
            limits,
            epochs: AtomicU64::new(1),
            bytes: AtomicI64::new(0),
        }
    }

    /// An empty state with the same bounds and shard assignment, for
    /// [`replace_with`](Self::replace_with).
    pub(super) fn empty_like(&self) -> Self {
        State {
            hasher: self.hasher.clone(),
            ..State::new(self.limits)
        }
    }

    /// Takes the contents of `fresh` (from [`empty_like`](Self::empty_like),
    /// filled by reopening the directory), shard by shard: a reader sees
    /// each session before or after, never missing. Called only while
    /// nothing is queued (the store refuses appends meanwhile).
    pub(super) fn replace_with(&self, fresh: State) {
        // The epochs `fresh` handed out (1 up to its counter) move to a
        // range of this state's own, so no stream taken over shares one
        // with a stream of before.
        let handed_out = fresh.epochs.load(Ordering::Relaxed);
        let offset = self.epochs.fetch_add(handed_out, Ordering::Relaxed);
        for (mine, theirs) in self.shards.iter().zip(fresh.shards.iter()) {
            let mut theirs = std::mem::take(&mut *theirs.lock());
            for session in theirs.sessions.values_mut() {
                for stream in session.streams.values_mut() {
                    stream.epoch = offset + stream.epoch - 1;
                }
            }
            let old = std::mem::replace(&mut *mine.lock(), theirs);
            drop(old);
        }
        self.bytes
            .store(fresh.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn lock(&self, session: &SessionId) -> ShardGuard<'_> {
        let i = (self.hasher.hash_one(session.as_str()) as usize) % SHARDS;
        ShardGuard {
            shard: self.shards[i].lock(),
            state: self,
        }
    }

    /// Estimated bytes of the retained events.
    pub(super) fn live_bytes(&self) -> u64 {
        u64::try_from(self.bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Everything a snapshot must hold: per session, its known streams in
    /// creation order with their durable retained events (or a mark when
    /// none is retained), and its floor.
    pub(super) fn retained(&self) -> Vec<Retained> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (id, session) in &shard.sessions {
                for name in &session.order {
                    let Some(stream) = session.streams.get(name).filter(|s| s.known()) else {
                        continue;
                    };
                    out.push(Retained::Start(id.clone(), name.clone(), stream.base));
                    let before = out.len();
                    out.extend(
                        stream
                            .events
                            .iter()
                            .take_while(|(seq, _)| *seq <= stream.durable)
                            .map(|(seq, data)| {
                                Retained::Event(id.clone(), name.clone(), *seq, data.clone())
                            }),
                    );
                    if out.len() == before {
                        out.push(Retained::Mark(id.clone(), name.clone(), stream.durable));
                    }
                }
                if session.floor > 0 {
                    out.push(Retained::Floor(id.clone(), session.floor));
                }
            }
        }
        out
    }

    /// What the state holds, as readers see it.
    pub(super) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            counts.sessions += shard.sessions.len();
            for session in shard.sessions.values() {
                for stream in session.streams.values().filter(|s| s.known()) {
                    counts.streams += 1;
                    counts.events += stream
                        .events
                        .iter()
                        .take_while(|(seq, _)| *seq <= stream.durable)
                        .count();
                }
            }
        }
        counts
    }
}

/// A locked shard.
#[derive(Debug)]
pub(super) struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    state: &'a State,
}

/// How a recovered frame fitted in.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Replayed {
    /// As expected.
    Applied,
    /// Sequence numbers were skipped: the events before are unavailable.
    Gap { expected: u64 },
    /// An event not newer than what the stream has: ignored.
    Stale { last: u64 },
}

impl ShardGuard<'_> {
    /// Accepts an event: allocates its sequence number (after the last one,
    /// or after the session's floor for a new stream) and applies the bounds.
    /// Returns the sequence number, the stream's epoch, and its base if the
    /// stream was created.
    pub(super) fn append(
        &mut self,
        session: &SessionId,
        name: &StreamId,
        data: Arc<str>,
    ) -> (u64, u64, Option<u64>) {
        let state = self.state;
        let entry = self.shard.sessions.entry(session.clone()).or_default();
        let (stream, created) = entry.stream(session, name, Base::Floor, state);
        let seq = stream.last + 1;
        stream.push(session, name, seq, data, state.limits, &state.bytes);
        (seq, stream.epoch, created.then_some(seq - 1))
    }

    /// Whether the session has events here.
    pub(super) fn contains(&self, session: &SessionId) -> bool {
        self.shard.sessions.contains_key(session)
    }

    /// Forgets a session; whether it was there.
    pub(super) fn remove(&mut self, session: &SessionId) -> bool {
        match self.shard.sessions.remove(session) {
            Some(removed) => {
                self.state
                    .bytes
                    .fetch_sub(removed.bytes(session), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Marks event `seq` of the stream with `epoch` durable.
    pub(super) fn mark_durable(
        &mut self,
        session: &SessionId,
        name: &StreamId,
        epoch: u64,
        seq: u64,
    ) {
        if let Some(stream) = self
            .shard
            .sessions
            .get_mut(session)
            .and_then(|s| s.streams.get_mut(name))
            .filter(|s| s.epoch == epoch)
        {
            stream.durable = stream.durable.max(seq.min(stream.last));
        }
    }

    /// Recovery: event `seq` read back from the log.
    pub(super) fn replay_event(
        &mut self,
        session: &SessionId,
        name: &StreamId,
        seq: u64,
        data: Arc<str>,
    ) -> Replayed {
        let state = self.state;
        let entry = self.shard.sessions.entry(session.clone()).or_default();
        let (stream, _) = entry.stream(session, name, Base::Before(seq), state);
        if seq <= stream.last {
            return Replayed::Stale { last: stream.last };
        }
        let outcome = if seq > stream.last + 1 {
            let expected = stream.last + 1;
            stream.clear(session, name, &state.bytes);
            stream.dropped_through = seq - 1;
            Replayed::Gap { expected }
        } else {
            Replayed::Applied
        };
        stream.push(session, name, seq, data, state.limits, &state.bytes);
        stream.durable = seq;
        outcome
    }

    /// Recovery: the stream reached `seq` with nothing retained up to it.
    pub(super) fn replay_mark(&mut self, session: &SessionId, name: &StreamId, seq: u64) {
        let state = self.state;
        let entry = self.shard.sessions.entry(session.clone()).or_default();
        let (stream, _) = entry.stream(session, name, Base::Before(seq), state);
        if seq > stream.last {
            stream.clear(session, name, &state.bytes);
            stream.last = seq;
            stream.durable = seq;
            stream.dropped_through = seq;
        }
    }

    /// Recovery: the stream starts after `base`. A stream already there (it
    /// was not dropped when the bounds were larger) is left alone.
    pub(super) fn replay_start(&mut self, session: &SessionId, name: &StreamId, base: u64) {
        let state = self.state;
        let entry = self.shard.sessions.entry(session.clone()).or_default();
        entry.stream(session, name, Base::Exact(base), state);
    }

    /// Recovery: the session's floor.
    pub(super) fn replay_floor(&mut self, session: &SessionId, floor: u64) {
        let entry = self.shard.sessions.entry(session.clone()).or_default();
        entry.floor = entry.floor.max(floor);
    }

    /// The durable events after `after`, or `None` if they cannot all be
    /// given (unknown stream, `after` in the future, or events dropped).
    /// Position 0 means "before anything was sent": the whole stream, if
    /// nothing of it was dropped (a stream created after the session dropped
    /// one starts above the session's floor, not at 1).
    pub(super) fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> Option<Vec<StoredEvent>> {
        let stream = self
            .shard
            .sessions
            .get(session)?
            .streams
            .get(&after.stream)
            .filter(|s| s.known())?;
        let from_start = after.seq == 0 && stream.dropped_through == stream.base;
        if after.seq > stream.durable || (after.seq < stream.dropped_through && !from_start) {
            return None;
        }
        Some(
            stream
                .events
                .iter()
                .skip_while(|(seq, _)| *seq <= after.seq)
                .take_while(|(seq, _)| *seq <= stream.durable)
                .map(|(seq, data)| StoredEvent {
                    id: EventId {
                        stream: after.stream.clone(),
                        seq: *seq,
                    },
                    data: data.clone(),
                })
                .collect(),
        )
    }

    /// The last durable sequence number of the stream.
    pub(super) fn latest(&self, session: &SessionId, name: &StreamId) -> Option<u64> {
        self.shard
            .sessions
            .get(session)?
            .streams
            .get(name)
            .filter(|s| s.known())
            .map(|s| s.durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(events: usize, streams: usize) -> Limits {
        Limits {
            events_per_stream: events,
            streams_per_session: streams,
        }
    }

    fn id(stream: &StreamId, seq: u64) -> EventId {
        EventId {
            stream: stream.clone(),
            seq,
        }
    }

    #[test]
    fn readers_see_only_durable_events() {
        let state = State::new(limits(10, 10));
        let s = SessionId::generate();
        let g = StreamId::standalone();
        let mut shard = state.lock(&s);
        let (one, epoch, created) = shard.append(&s, &g, "1".into());
        assert_eq!(created, Some(0));
        let (two, _, created) = shard.append(&s, &g, "2".into());
        assert_eq!(created, None);
        assert_eq!((one, two), (1, 2));
        assert_eq!(shard.latest(&s, &g), None, "nothing durable yet");
        assert_eq!(shard.replay_after(&s, &id(&g, 0)), None);
        shard.mark_durable(&s, &g, epoch, 1);
        assert_eq!(shard.latest(&s, &g), Some(1));
        let replay = shard.replay_after(&s, &id(&g, 0)).unwrap();
        assert_eq!(replay.len(), 1, "event 2 is not durable");
        assert_eq!(shard.replay_after(&s, &id(&g, 2)), None);
        shard.mark_durable(&s, &g, epoch + 100, 2);
        assert_eq!(shard.latest(&s, &g), Some(1), "another epoch's mark");
    }

    #[test]
    fn a_dropped_stream_name_restarts_above_every_id_it_had() {
        let state = State::new(limits(10, 1));
        let s = SessionId::generate();
        let (g, r) = (StreamId::standalone(), StreamId::generate());
        let mut shard = state.lock(&s);
        for _ in 0..5 {
            shard.append(&s, &g, "x".into());
        }
        shard.append(&s, &r, "y".into());
        let (seq, epoch, created) = shard.append(&s, &g, "again".into());
        assert_eq!(created, Some(6));
        assert_eq!(seq, 7, "after the floor (5, then r's 6)");
        shard.mark_durable(&s, &g, epoch, 7);
        let all = shard.replay_after(&s, &id(&g, 0)).unwrap();
        assert_eq!(all.len(), 1, "position 0 is the start of the new stream");
        assert_eq!(shard.replay_after(&s, &id(&g, 5)), None, "an old id");
    }

    #[test]
    fn live_bytes_follow_the_bounds() {
        let state = State::new(limits(2, 10));
        let s = SessionId::generate();
        let g = StreamId::standalone();
        let one = format::frame_len(s.as_str(), "g", 4) as u64;
        let mut shard = state.lock(&s);
        for _ in 0..5 {
            shard.append(&s, &g, "data".into());
        }
        drop(shard);
        assert_eq!(state.live_bytes(), 2 * one);
        state.lock(&s).remove(&s);
        assert_eq!(state.live_bytes(), 0);
    }
}
