//! GET: the legacy era's streams. A session's own stream (server requests
//! and notifications outside any request), and any broken stream resumed
//! with `Last-Event-ID`, replayed from the event store and then fed live,
//! from this process or, when another replica runs the request, from the
//! store.

use std::sync::Arc;

use axum::http;
use axum::response::Response;
use session_core::wire::Message;
use session_core::{EventId, StreamId};
use tokio::sync::mpsc;

use super::headers::Head;
use super::{App, principal, sse};
use crate::dispatch::{Dispatcher, session_of_stream};
use crate::error::Rejection;
use crate::hub::Attach;

/// GET: the legacy session's own stream, or a broken request stream
/// resumed with `Last-Event-ID`.
pub(super) async fn get(
    app: &Arc<App>,
    request: http::request::Parts,
) -> Result<Response, Rejection> {
    let head = Head::scan(&request.headers);
    app.guard.check(&head)?;
    let id = session_of_stream(
        head.session_id.map(super::post::text),
        head.protocol_version.map(super::post::text),
    );
    // A modern client is told the method is gone whatever it accepts.
    if !matches!(id, Err(Rejection::MethodNotAllowed)) {
        head.accept.check_get()?;
    }
    let id = id?;
    let session = app
        .dispatcher
        .session(&id, principal(&request.extensions).as_deref())
        .await?;
    let last = match head.last_event_id {
        Some(value) => {
            let text = value.to_str().unwrap_or("");
            Some(EventId::parse(text).ok_or_else(|| Rejection::CannotResume(text.to_string()))?)
        }
        None => None,
    };
    let hub = app.dispatcher.hub();
    let standalone = StreamId::standalone();
    let (mut connection, limit, follow) = match &last {
        Some(last) => {
            // A request's stream whose response was already published ends
            // after the replay; one still running here continues live; one
            // running elsewhere (another replica) is followed in the store.
            let running = hub.is_running(session.id(), &last.stream);
            let connection = hub
                .attach(session.id(), &last.stream, Some(last), Attach::TakeOver)
                .await?;
            let replayed_response = last.stream != standalone && connection.replayed_response;
            let limit = replayed_response.then(|| connection.frames.len());
            let follow = !running && !replayed_response;
            (connection, limit, follow)
        }
        None => (
            hub.attach(session.id(), &standalone, None, Attach::Exclusive)
                .await?,
            None,
            true,
        ),
    };
    if follow && let Some(feed) = connection.feed.take() {
        let from = match connection.last.clone() {
            Some(last) => last,
            None => latest_event(app.dispatcher.hub(), session.id(), &standalone).await,
        };
        let request_stream = from.stream != standalone;
        let key = connection.key.clone();
        tokio::spawn(follow_store(
            app.dispatcher.clone(),
            key,
            connection.number,
            feed,
            from,
            request_stream.then_some(app.config.follow_idle_timeout),
        ));
    }
    Ok(sse::response(
        connection,
        app.dispatcher.clone(),
        None,
        app.config.keep_alive,
        limit,
        app.open_stream(),
    ))
}

/// The id of the last event appended to `stream` (position 0 if none), so
/// a fresh connection is fed only what comes after it.
async fn latest_event(
    hub: &crate::hub::Hub,
    session: &session_core::SessionId,
    stream: &StreamId,
) -> EventId {
    match hub.events().latest(session, stream).await {
        Ok(Some(id)) => id,
        _ => EventId {
            stream: stream.clone(),
            seq: 0,
        },
    }
}

/// Forwards to a connection the events other processes append to its
/// stream, until the connection goes, the stream's response passes, or the
/// store has no live feed (a single process delivers everything itself).
async fn follow_store(
    dispatcher: Arc<Dispatcher>,
    key: (session_core::SessionId, StreamId),
    number: u64,
    feed: mpsc::Sender<crate::hub::Frame>,
    mut last: EventId,
    // For a request's stream: how long it may go without an event.
    idle_limit: Option<std::time::Duration>,
) {
    use crate::hub::Frame;
    let request_stream = idle_limit.is_some();
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        if idle_limit.is_some_and(|limit| quiet_since.elapsed() >= limit) {
            // Whoever ran the request has gone quiet (or died): end here,
            // the client can resume again.
            let _ = feed.send(Frame::end()).await;
            return;
        }
        if feed.is_closed()
            || !dispatcher.hub().is_attached(&key, number)
            || dispatcher.is_shutting_down()
        {
            return;
        }
        match dispatcher
            .hub()
            .events()
            .wait_after(&key.0, &last, 1_000)
            .await
        {
            Ok(None) => {
                // No other process can add to this stream: a request's
                // stream ends after its replay.
                if request_stream {
                    let _ = feed.send(Frame::end()).await;
                }
                return;
            }
            Ok(Some(events)) => {
                if !events.is_empty() {
                    quiet_since = tokio::time::Instant::now();
                }
                for event in events {
                    last = event.id.clone();
                    let response = request_stream
                        && matches!(
                            Message::parse(event.data.as_bytes()),
                            Ok(Message::Response(_))
                        );
                    if feed.send(Frame::event(event.id, event.data)).await.is_err() {
                        return;
                    }
                    if response {
                        let _ = feed.send(Frame::end()).await;
                        return;
                    }
                }
            }
            Err(e) => {
                crate::hub::unfollowed("a stream", &e);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
