//! SSE response bodies fed by a hub connection.
//!
//! The events are written here rather than with axum's `Sse`, because the
//! 2025-11-25 priming event is an id with an *empty* `data` field, which
//! axum's encoder leaves out (browsers ignore such events; MCP clients use
//! them to learn the id to resume from).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use session_core::EventId;
use session_core::wire::Message;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::dispatch::Handling;
use crate::hub::{Connection, Frame, Hub};

/// Lets the body reach the hub without owning the server.
pub(crate) trait HubRef: Send + Sync {
    fn hub(&self) -> &Hub;
}

/// A connection's frames as SSE bytes; detaches from the hub when dropped
/// (the client went away), so later events wait in the store for a resume.
struct Events {
    priming: Option<Bytes>,
    connection: Connection,
    hub: Arc<dyn HubRef>,
    keep_alive: Interval,
    /// End after this many frames (a replayed stream that already ended).
    remaining: Option<usize>,
    /// Numbers of the events sent lately: an event arriving twice (from this
    /// process and from the shared store) is sent once, and one arriving
    /// late (another replica's, read from the store after a later local
    /// one) is still sent.
    sent: Sent,
    _open: OpenStream,
}

/// Counts an SSE stream open in the metrics for as long as it lives.
#[derive(Debug)]
pub(crate) struct OpenStream(Option<prometheus_client::metrics::gauge::Gauge>);

impl OpenStream {
    /// A stream counted in `gauge` (if metrics are on) until dropped.
    pub(crate) fn new(gauge: Option<&prometheus_client::metrics::gauge::Gauge>) -> Self {
        if let Some(gauge) = gauge {
            gauge.inc();
        }
        OpenStream(gauge.cloned())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

/// The recently sent event numbers of one stream, bounded.
#[derive(Debug, Default)]
struct Sent {
    numbers: std::collections::BTreeSet<u64>,
}

impl Sent {
    /// How many numbers are remembered; older ones are taken as sent.
    const WINDOW: usize = 4096;

    /// Records `seq`; whether it was new.
    fn insert(&mut self, seq: u64) -> bool {
        if self.numbers.len() >= Self::WINDOW
            && self.numbers.first().is_some_and(|&oldest| seq < oldest)
        {
            return false;
        }
        if !self.numbers.insert(seq) {
            return false;
        }
        if self.numbers.len() > Self::WINDOW {
            self.numbers.pop_first();
        }
        true
    }
}

impl Stream for Events {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(priming) = self.priming.take() {
            return Poll::Ready(Some(Ok(priming)));
        }
        if self.remaining == Some(0) {
            return Poll::Ready(None);
        }
        loop {
            match self.connection.frames.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    if frame.end {
                        return Poll::Ready(None);
                    }
                    if let Some(n) = self.remaining.as_mut() {
                        *n = n.saturating_sub(1);
                    }
                    if let Some(id) = &frame.id
                        && !self.sent.insert(id.seq)
                    {
                        continue; // already sent
                    }
                    self.keep_alive.reset();
                    return Poll::Ready(Some(Ok(encode(&frame))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    return match self.keep_alive.poll_tick(cx) {
                        Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(b":\n\n")))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.hub
            .hub()
            .detach(&self.connection.key, self.connection.number);
    }
}

/// One event: `id:` (if any), then one `data:` line (JSON has no newlines).
fn encode(frame: &Frame) -> Bytes {
    let mut out = String::with_capacity(frame.data.len() + 48);
    if let Some(id) = &frame.id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = write!(out, "data: {}\n\n", frame.data);
    Bytes::from(out)
}

/// The SSE response for `connection`. With `priming`, the stream opens with
/// an event carrying that id, an empty `data` field and a `retry` hint.
pub(crate) fn response(
    mut connection: Connection,
    hub: Arc<dyn HubRef>,
    priming: Option<(EventId, Duration)>,
    keep_alive: Duration,
    limit: Option<usize>,
    open: OpenStream,
) -> Response {
    connection.feed = None;
    let priming = priming.map(|(id, retry)| {
        Bytes::from(format!(
            "id: {id}\nretry: {}\ndata: \n\n",
            retry.as_millis()
        ))
    });
    let mut keep_alive = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let events = Events {
        priming,
        connection,
        hub,
        keep_alive,
        remaining: limit,
        sent: Sent::default(),
        _open: open,
    };
    let mut response = Body::from_stream(events).into_response();
    headers(&mut response);
    response
}

/// The headers of every SSE response: the type, no caching, and no
/// buffering in reverse proxies.
fn headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
}

/// A modern (2026-07-28) request's stream: no ids, no store, nothing to
/// resume. `first` messages, then whatever the still running handler
/// sends, then its response. Dropping the body (the client went away)
/// cancels the request through `cancel`.
pub(crate) fn plain(
    first: Vec<Message>,
    running: Option<(Handling, mpsc::Receiver<Box<Message>>)>,
    keep_alive: Duration,
    cancel: Option<CancellationToken>,
    open: OpenStream,
) -> Response {
    let mut ticks = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = Plain {
        queued: first.iter().map(data_event).collect(),
        done: running.is_none(),
        running,
        keep_alive: ticks,
        _cancel: cancel.map(CancellationToken::drop_guard),
        _open: open,
    };
    let mut response = Body::from_stream(stream).into_response();
    headers(&mut response);
    response
}

/// One event carrying a message: a single `data:` line.
fn data_event(message: &Message) -> Bytes {
    let json = message.to_json();
    let mut out = String::with_capacity(json.len() + 8);
    out.push_str("data: ");
    out.push_str(&json);
    out.push_str("\n\n");
    Bytes::from(out)
}

struct Plain {
    queued: VecDeque<Bytes>,
    running: Option<(Handling, mpsc::Receiver<Box<Message>>)>,
    done: bool,
    keep_alive: Interval,
    _cancel: Option<DropGuard>,
    _open: OpenStream,
}

impl Stream for Plain {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                self.keep_alive.reset();
                return Poll::Ready(Some(Ok(event)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let Some((handling, rx)) = self.running.as_mut() else {
                self.done = true;
                continue;
            };
            if let Poll::Ready(Some(message)) = rx.poll_recv(cx) {
                self.keep_alive.reset();
                return Poll::Ready(Some(Ok(data_event(&message))));
            }
            if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                let mut tail = Vec::new();
                while let Ok(message) = rx.try_recv() {
                    tail.push(data_event(&message));
                }
                if let Some(response) = response {
                    tail.push(data_event(&Message::Response(response)));
                }
                self.queued.extend(tail);
                self.running = None;
                self.done = true;
                continue;
            }
            return match self.keep_alive.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(b":\n\n")))),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sent;

    #[test]
    fn each_number_is_sent_once_even_out_of_order() {
        let mut sent = Sent::default();
        assert!(sent.insert(5));
        assert!(sent.insert(4), "a late, lower number is still sent");
        assert!(!sent.insert(5));
        assert!(!sent.insert(4));
        for seq in 6..6 + Sent::WINDOW as u64 {
            assert!(sent.insert(seq));
        }
        assert!(!sent.insert(1), "below the window counts as sent");
    }
}
