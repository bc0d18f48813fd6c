//! Live SSE streams: which connection currently carries each stream, and the
//! event store behind them so a broken stream can be resumed.
//!
//! Publishing on a stream and attaching a connection to it are serialised per
//! stream: a connection resuming with `Last-Event-ID` gets the stored events
//! after that id and then every later one, with no gap and no duplicate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::HashMap;
use parking_lot::Mutex;
use session_core::{EventId, EventStore, SessionId, StreamId};
use tokio::sync::mpsc;

use crate::error::{Rejection, Throttle, describe};

/// Frames a connection buffers before it is considered stalled and cut off
/// (the client can resume from the event store).
const CONNECTION_BUFFER: usize = 256;

/// Warnings about events the store refused.
static UNSTORED: Throttle = Throttle::new(std::time::Duration::from_secs(10));

/// Warns that `what` (an event of `session`) could not be stored: it was
/// sent live but cannot be replayed. At most every few seconds, so a
/// failing store does not flood the log.
pub(crate) fn unstored(session: &SessionId, what: &str, error: &session_core::Error) {
    if let Some(suppressed) = UNSTORED.allow() {
        tracing::warn!(%session, suppressed, "cannot store {what}: {}", describe(error));
    }
}

/// Warnings about failures to follow the event store.
static UNFOLLOWED: Throttle = Throttle::new(std::time::Duration::from_secs(10));

/// Warns that following the event store (events other processes append)
/// failed; throttled like [`unstored`].
pub(crate) fn unfollowed(what: &str, error: &session_core::Error) {
    if let Some(suppressed) = UNFOLLOWED.allow() {
        tracing::warn!(
            suppressed,
            "following {what} in the event store failed: {}",
            describe(error)
        );
    }
}

/// One SSE event to write.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) id: Option<EventId>,
    pub(crate) data: Arc<str>,
    /// Ends the SSE response (the stream's last event was sent).
    pub(crate) end: bool,
}

impl Frame {
    pub(crate) fn event(id: EventId, data: Arc<str>) -> Self {
        Frame {
            id: Some(id),
            data,
            end: false,
        }
    }

    pub(crate) fn end() -> Self {
        Frame {
            id: None,
            data: Arc::from(""),
            end: true,
        }
    }
}

type Key = (SessionId, StreamId);
type SharedSlot = Arc<tokio::sync::Mutex<Slot>>;

#[derive(Debug, Default)]
struct Slot {
    /// The connection carrying the stream now: its number and sender.
    connection: Option<(u64, mpsc::Sender<Frame>)>,
    /// A request's stream whose response is not yet published.
    running: bool,
}

/// The registry of live streams.
#[derive(Debug)]
pub(crate) struct Hub {
    /// Streams by session, so ending a session touches only its own.
    streams: Mutex<HashMap<SessionId, HashMap<StreamId, SharedSlot>>>,
    events: Arc<dyn EventStore>,
    next_connection: AtomicU64,
}

/// How a connection attaches to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attach {
    /// The stream of a request starting now: running until
    /// [`Hub::finish`].
    Start,
    /// Refuse with 409 if a connection is attached (the GET stream).
    Exclusive,
    /// Replace the attached connection (a resumed stream).
    TakeOver,
}

/// A connection attached to a stream.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) key: (SessionId, StreamId),
    pub(crate) number: u64,
    pub(crate) frames: mpsc::Receiver<Frame>,
    /// Feeds this connection events appended by other processes; taken
    /// (or dropped) before the connection becomes a response body, so the
    /// body ends when the hub lets go of the stream.
    pub(crate) feed: Option<mpsc::Sender<Frame>>,
    /// The id of the last event put on the connection by the replay.
    pub(crate) last: Option<EventId>,
    /// Whether the replay included a JSON-RPC response.
    pub(crate) replayed_response: bool,
}

impl Hub {
    pub(crate) fn new(events: Arc<dyn EventStore>) -> Self {
        Hub {
            streams: Mutex::default(),
            events,
            next_connection: AtomicU64::new(1),
        }
    }

    pub(crate) fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    fn slot(&self, session: &SessionId, stream: &StreamId) -> SharedSlot {
        self.streams
            .lock()
            .entry(session.clone())
            .or_default()
            .entry(stream.clone())
            .or_default()
            .clone()
    }

    fn existing(&self, session: &SessionId, stream: &StreamId) -> Option<SharedSlot> {
        self.streams.lock().get(session)?.get(stream).cloned()
    }

    /// Forgets a stream; a session without streams is forgotten too.
    fn remove(streams: &mut HashMap<SessionId, HashMap<StreamId, SharedSlot>>, key: &Key) {
        if let Some(session) = streams.get_mut(&key.0) {
            session.remove(&key.1);
            if session.is_empty() {
                streams.remove(&key.0);
            }
        }
    }

    /// Stores `data` as the next event of the stream and sends it to the
    /// connection carrying the stream, if any. A connection that cannot keep
    /// up is cut off; its client resumes from the store.
    ///
    /// When the store refuses the event, it is still sent to the connection,
    /// without an id (it cannot be resumed from), and the error returned.
    pub(crate) async fn publish(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> Result<EventId, session_core::Error> {
        let slot = self.slot(session, stream);
        let mut slot = slot.lock().await;
        let stored = self.events.append(session, stream, data.clone()).await;
        let frame = match &stored {
            Ok(id) => Frame::event(id.clone(), data),
            Err(_) => Frame {
                id: None,
                data,
                end: false,
            },
        };
        if let Some((_, tx)) = &slot.connection
            && tx.try_send(frame).is_err()
        {
            slot.connection = None;
        }
        stored
    }

    /// Attaches a new connection to the stream. With `after`, it first gets
    /// the stored events that follow that id.
    pub(crate) async fn attach(
        &self,
        session: &SessionId,
        stream: &StreamId,
        after: Option<&EventId>,
        mode: Attach,
    ) -> Result<Connection, Rejection> {
        let slot = self.slot(session, stream);
        let mut slot = slot.lock().await;
        if mode == Attach::Exclusive
            && slot
                .connection
                .as_ref()
                .is_some_and(|(_, tx)| !tx.is_closed())
        {
            return Err(Rejection::Conflict(
                "an SSE stream is already open for this session".into(),
            ));
        }
        let mut last = after.cloned();
        let mut replayed_response = false;
        let replay = match after {
            Some(after) => {
                let replay = self
                    .events
                    .replay_after(session, after)
                    .await
                    .map_err(|e| Rejection::from_events(&e))?;
                // Position 0 is the priming event's: before anything was sent.
                match replay {
                    Some(events) => events,
                    None if after.seq == 0 => Vec::new(),
                    None => return Err(Rejection::CannotResume(after.to_string())),
                }
            }
            None => Vec::new(),
        };
        // Room for the whole replay, however many events the store keeps,
        // and then the usual buffer for live ones.
        let (tx, rx) = mpsc::channel(replay.len() + CONNECTION_BUFFER);
        if let Some(after) = after {
            for event in replay {
                last = Some(event.id.clone());
                replayed_response |= matches!(
                    session_core::wire::Message::parse(event.data.as_bytes()),
                    Ok(session_core::wire::Message::Response(_))
                );
                if tx.try_send(Frame::event(event.id, event.data)).is_err() {
                    return Err(Rejection::CannotResume(after.to_string()));
                }
            }
        }
        let number = self.next_connection.fetch_add(1, Ordering::Relaxed);
        slot.connection = Some((number, tx.clone()));
        if mode == Attach::Start {
            slot.running = true;
        }
        Ok(Connection {
            key: (session.clone(), stream.clone()),
            number,
            frames: rx,
            feed: Some(tx),
            last,
            replayed_response,
        })
    }

    /// Detaches connection `number` from its stream, if it is still the one
    /// attached (a resumed connection may have taken over). A running
    /// request's stream stays registered: its events keep being stored.
    pub(crate) fn detach(&self, key: &Key, number: u64) {
        let mut streams = self.streams.lock();
        let Some(slot) = streams.get(&key.0).and_then(|s| s.get(&key.1)).cloned() else {
            return;
        };
        // A publish holds the slot; it notices the closed connection itself.
        let Ok(mut slot) = slot.try_lock() else {
            return;
        };
        if slot.connection.as_ref().is_some_and(|(n, _)| *n == number) {
            slot.connection = None;
            if !slot.running {
                Self::remove(&mut streams, key);
            }
        }
    }

    /// Whether connection `number` still carries its stream.
    pub(crate) fn is_attached(&self, key: &Key, number: u64) -> bool {
        let Some(slot) = self.existing(&key.0, &key.1) else {
            return false;
        };
        slot.try_lock().map_or(true, |slot| {
            slot.connection.as_ref().is_some_and(|(n, _)| *n == number)
        })
    }

    /// Whether a request's stream is running here: from when its SSE
    /// response starts until its response is published.
    pub(crate) fn is_running(&self, session: &SessionId, stream: &StreamId) -> bool {
        let slot = self.existing(session, stream);
        slot.is_some_and(|slot| slot.try_lock().map_or(true, |slot| slot.running))
    }

    /// Ends a stream whose last event was published: its connection closes.
    pub(crate) fn finish(&self, session: &SessionId, stream: &StreamId) {
        Self::remove(&mut self.streams.lock(), &(session.clone(), stream.clone()));
    }

    /// Ends every stream of a session.
    pub(crate) fn drop_session(&self, session: &SessionId) {
        self.streams.lock().remove(session);
    }

    /// Ends every stream.
    pub(crate) fn close_all(&self) {
        self.streams.lock().clear();
    }

    /// Ends the streams that are not carrying a running request (GET
    /// streams, resumed finished streams), so their connections close; the
    /// streams of running requests stay until their response is out.
    pub(crate) fn close_idle(&self) {
        let mut streams = self.streams.lock();
        for slots in streams.values_mut() {
            slots.retain(|_, slot| slot.try_lock().map_or(true, |slot| slot.running));
        }
        streams.retain(|_, slots| !slots.is_empty());
    }

    /// Sessions with a stream registered here.
    pub(crate) fn sessions(&self) -> Vec<SessionId> {
        self.streams.lock().keys().cloned().collect()
    }
}
