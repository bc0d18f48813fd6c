//! POST: one JSON-RPC message (or a 2025-03-26 batch) to the dispatcher,
//! its outcome written as JSON or SSE.
//!
//! A legacy request's SSE stream goes through the hub, so its events are
//! stored and a broken stream resumes with `Last-Event-ID`; a modern
//! request's stream is plain (2026-07-28 has no resumption), and closing it
//! cancels the request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use session_core::wire::{Message, ParseError, Response as RpcResponse, code, primes_sse};
use session_core::{EventId, SessionId, StreamId};
use tokio::sync::mpsc;

use super::headers::{self, Accept, Head, SESSION_ID};
use super::{App, RequestBody, answered, json, principal, reject, reject_with_id, sse};
use crate::config::ResponseMode;
use crate::dispatch::{
    Era, Handling, Mirrored, NOT_TEXT, Origin, Outcome, Running, Started, Transport,
};
use crate::error::Rejection;
use crate::hub::Attach;

/// What the rest of a POST needs of its headers, once [`head`] has checked
/// them (the header map itself is dropped there).
#[derive(Debug)]
pub(super) struct PostHead {
    accept: Accept,
    session_id: Option<HeaderValue>,
    protocol_version: Option<HeaderValue>,
    /// The headers of a request that mirrors body fields in some: only
    /// modern clients send them, so only their requests pay for the box.
    mirrored: Option<Box<http::HeaderMap>>,
    /// When the head arrived, if metrics are on.
    started: Option<std::time::Instant>,
    /// The era its `MCP-Protocol-Version` names, for the metrics.
    era: &'static str,
    /// Its `traceparent`, when request spans are on.
    traceparent: Option<HeaderValue>,
    /// The scopes of its token, when authorization is on.
    granted: Option<crate::auth::GrantedScopes>,
}

/// What a request without mirrored headers declares.
static NOTHING_MIRRORED: Mirrored<'static> = Mirrored {
    method: None,
    name: None,
    params: Vec::new(),
};

/// The checks of a POST that need only its head: origin and host, content
/// type, declared length. Returns what the rest of the request needs.
pub(super) fn head<B: RequestBody>(
    app: &App,
    request: http::Request<B>,
    started: Option<std::time::Instant>,
) -> Result<(PostHead, Option<String>, B), Rejection> {
    let (parts, body) = request.into_parts();
    let head = Head::scan(&parts.headers);
    app.guard.check(&head)?;
    headers::check_content_type(head.content_type)?;
    let limit = app.config.max_body_bytes;
    if head.content_length().is_some_and(|len| len > limit) {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    let principal = principal(&parts.extensions);
    let (accept, mirrors) = (head.accept, head.mirrors());
    let session_id = head.session_id.cloned();
    let protocol_version = head.protocol_version.cloned();
    let era = super::era_label(protocol_version.as_ref());
    let granted = parts
        .extensions
        .get::<crate::auth::GrantedScopes>()
        .cloned();
    let traceparent = app
        .dispatcher
        .config()
        .request_spans
        .then(|| parts.headers.get("traceparent").cloned())
        .flatten();
    let head = PostHead {
        accept,
        session_id,
        protocol_version,
        mirrored: mirrors.then(|| Box::new(parts.headers)),
        started,
        era,
        traceparent,
        granted,
    };
    Ok((head, principal, body))
}

/// A header value as text; one that is not visible ASCII as [`NOT_TEXT`].
pub(super) fn text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or(NOT_TEXT)
}

/// The scopes a `tools/call` in `body` (one message or a batch) needs that
/// `granted` lacks, if any.
///
/// The body is read as loosely as the dispatcher reads it, so that no
/// shape it would run escapes the check: every item of a batch that is a
/// `tools/call` counts (whatever the other items are), and a call whose
/// `params` are positional (an array the dispatcher would also take) needs
/// every tool scope there is.
fn lacking_scopes(
    app: &App,
    granted: &crate::auth::GrantedScopes,
    body: &[u8],
) -> Option<Vec<String>> {
    let all = app.dispatcher.all_tool_scopes();
    if all.is_empty() {
        return None;
    }
    // Not JSON: the dispatcher refuses it too.
    let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items = match &parsed {
        serde_json::Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut needed: Vec<String> = Vec::new();
    let mut add = |scopes: &[String]| {
        for scope in scopes {
            if !needed.contains(scope) {
                needed.push(scope.clone());
            }
        }
    };
    for item in items {
        if item["method"] != "tools/call" {
            continue;
        }
        match &item["params"] {
            serde_json::Value::Object(params) => {
                if let Some(name) = params.get("name").and_then(serde_json::Value::as_str) {
                    add(app.dispatcher.tool_scopes(name));
                }
            }
            serde_json::Value::Array(_) => add(&all),
            _ => {}
        }
    }
    granted.missing(&needed).then_some(needed)
}

fn parse_rejection(e: ParseError) -> Rejection {
    if e.error.code == code::PARSE_ERROR {
        Rejection::Parse(e.error.message)
    } else {
        Rejection::InvalidRequest(e.error.message)
    }
}

/// A POST past [`head`]: reads the body and answers the message in it.
///
/// An `async` block rather than an `async fn`: the block keeps its captures
/// once, where an `async fn` would hold its arguments twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
pub(super) fn post<B: RequestBody>(
    app: Arc<App>,
    head: PostHead,
    principal: Option<String>,
    body: B,
) -> impl Future<Output = Response> + Send {
    async move {
        let started = head.started;
        let mut method = "unread";
        let response = 'answer: {
            // The body has the header timeout from the head on: a connection
            // reading a body counts as busy, and must not stay so forever.
            let deadline = app.config.header_timeout;
            let body =
                match tokio::time::timeout(deadline, read_body(body, app.config.max_body_bytes))
                    .await
                {
                    Ok(Ok(body)) => body,
                    Ok(Err(rejection)) => break 'answer reject(&rejection),
                    Err(_) => break 'answer reject(&Rejection::RequestTimeout(deadline)),
                };
            let mirrored = head.mirrored.as_deref().map(headers::mirrored);
            let origin = Origin {
                transport: Transport::Http,
                principal: principal.as_deref(),
                session: head.session_id.as_ref().map(text),
                protocol_version: head.protocol_version.as_ref().map(text),
                mirrored: Some(mirrored.as_ref().unwrap_or(&NOTHING_MIRRORED)),
                scope: None,
                acceptable: head.accept.check_post().is_ok(),
                traceparent: head.traceparent.as_ref().map(text),
            };
            if let Some(needed) = head
                .granted
                .as_ref()
                .and_then(|granted| lacking_scopes(&app, granted, &body))
                && let Some(auth) = &app.config.auth
            {
                // The server's own scopes too: a client stepping up with
                // only the tool's would lose them.
                let mut scopes = auth.required_scope_list().to_vec();
                scopes.extend(
                    needed
                        .into_iter()
                        .filter(|s| !auth.required_scope_list().contains(s)),
                );
                break 'answer auth.challenge(&crate::auth::Refusal::InsufficientScope(scopes));
            }
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                method = "batch";
                break 'answer Box::pin(batch(&app, &origin, &body)).await;
            }
            let message = match Message::parse(&body) {
                Ok(message) => message,
                Err(e) => {
                    let id = e.id.clone();
                    break 'answer reject_with_id(&parse_rejection(e), id);
                }
            };
            if started.is_some() {
                method = match &message {
                    Message::Request(request) => crate::metrics::method_label(&request.method),
                    Message::Notification(note) => crate::metrics::method_label(&note.method),
                    Message::Response(_) => "response",
                };
            }
            let outcome = app.dispatcher.handle(message, &origin).await;
            answer(&app, outcome, head.accept).await
        };
        app.record(head.era, method, &response, started);
        response
    }
}

/// A JSON-RPC batch (revision 2025-03-26): what its requests send goes to
/// the session's GET stream.
async fn batch(app: &Arc<App>, origin: &Origin<'_>, body: &[u8]) -> Response {
    if !origin.acceptable {
        return reject(&not_acceptable());
    }
    let items: Vec<Box<RawValue>> = match serde_json::from_slice(body) {
        Ok(items) => items,
        Err(e) => return reject(&Rejection::Parse(e.to_string())),
    };
    let dispatcher = app.dispatcher.clone();
    let side = move |session: &SessionId| dispatcher.standalone_outbox(session);
    match app.dispatcher.handle_batch(items, origin, side).await {
        Outcome::Batch(responses) if responses.is_empty() => StatusCode::ACCEPTED.into_response(),
        Outcome::Batch(responses) => {
            let status = if responses.iter().all(|r| store_failed(r)) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let mut answer = json(status, format!("[{}]", responses.join(",")));
            super::retry_after(&mut answer);
            answer
        }
        Outcome::Rejected { rejection, id } => reject_with_id(&rejection, id),
        other => {
            tracing::error!(?other, "a batch answered with a single outcome");
            reject(&Rejection::InvalidRequest(
                "the batch could not be answered".into(),
            ))
        }
    }
}

/// Whether a batch's answer (a JSON-RPC response, as text) is a store
/// failure. A batch is answered with 503 only when every answer in it is
/// one: a batch some of whose requests took effect is answered 200, each
/// failure in its place.
fn store_failed(response: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: i64,
    }
    serde_json::from_str::<Answer>(response)
        .ok()
        .and_then(|a| a.error)
        .is_some_and(|e| e.code == Rejection::STORE_UNAVAILABLE)
}

pub(super) fn not_acceptable() -> Rejection {
    Rejection::NotAcceptable("Accept must list both application/json and text/event-stream".into())
}

/// Writes an outcome. A legacy request's answer, the hot path, is awaited
/// inline; everything else is written by [`answer_other`], out of line.
async fn answer(app: &Arc<App>, outcome: Outcome, accept: Accept) -> Response {
    match outcome {
        Outcome::Running(Running {
            era: Era::Legacy { session, version },
            handling,
            messages,
            ..
        }) => legacy(app, handling, messages, session, version)
            .await
            .unwrap_or_else(|rejection| reject(&rejection)),
        Outcome::Running(running) => Box::pin(modern(app, running, accept)).await,
        other => answer_other(other),
    }
}

/// Writes an outcome that is ready now.
#[inline(never)]
fn answer_other(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Accepted => StatusCode::ACCEPTED.into_response(),
        Outcome::Started(started) => {
            let Started { response, session } = *started;
            let mut reply = json(StatusCode::OK, Message::Response(response).to_json());
            if let Some(value) = session.and_then(|r| HeaderValue::from_str(r.id().as_str()).ok()) {
                reply.headers_mut().insert(SESSION_ID, value);
            }
            reply
        }
        Outcome::Reply(response) => answered(StatusCode::OK, response),
        Outcome::Rejected { rejection, id } => reject_with_id(&rejection, id),
        Outcome::Batch(_) | Outcome::Running(_) => {
            reject(&Rejection::InvalidRequest("unexpected answer".into()))
        }
    }
}

/// Reads a request body of at most `limit` bytes. A body that arrives in
/// one frame (a small request's does) is taken as it is, without a copy.
async fn read_body<B: RequestBody>(mut body: B, limit: usize) -> Result<Bytes, Rejection> {
    let mut first = Bytes::new();
    let mut more: Option<Vec<u8>> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|e| Rejection::InvalidRequest(format!("cannot read the request body: {e}")))?;
        // Trailers carry nothing a message needs.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let read = first.len() + more.as_ref().map_or(0, Vec::len);
        if read + data.len() > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        if read == 0 {
            first = data;
        } else {
            // A second frame: from here on the pieces are joined.
            let joined = more.get_or_insert_with(|| {
                let mut joined = Vec::with_capacity(read + data.len());
                joined.extend_from_slice(&first);
                joined
            });
            joined.extend_from_slice(&data);
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(more.map_or(first, Bytes::from))
}

/// Answers a legacy request as JSON or SSE, by the response mode.
async fn legacy(
    app: &Arc<App>,
    mut handling: Handling,
    mut rx: mpsc::Receiver<Box<Message>>,
    session: SessionId,
    version: String,
) -> Result<Response, Rejection> {
    let mode = app.config.response_mode;
    if mode == ResponseMode::Json {
        // What the handler sends goes to the session's GET stream.
        app.dispatcher.forward_to_standalone(&session, rx);
        return Ok(json_or_nothing(handling.await));
    }
    let mut first = Vec::new();
    if mode == ResponseMode::Auto {
        tokio::select! {
            biased;
            response = &mut handling => {
                // Done before it said anything else: one JSON body,
                // unless a notification is still queued.
                while let Ok(message) = rx.try_recv() {
                    first.push(*message);
                }
                if first.is_empty() {
                    return Ok(json_or_nothing(response));
                }
                first.extend(response.map(Message::Response));
                return Box::pin(sse_stream(app, &session, &version, first, None)).await;
            }
            Some(message) = rx.recv() => first.push(*message),
        }
    }
    Box::pin(sse_stream(
        app,
        &session,
        &version,
        first,
        Some((handling, rx)),
    ))
    .await
}

/// Opens a legacy SSE stream for a request: `first` messages, then whatever
/// the still running handler sends, then its response; every event stored
/// through the hub for resumption.
async fn sse_stream(
    app: &Arc<App>,
    session: &SessionId,
    version: &str,
    first: Vec<Message>,
    running: Option<(Handling, mpsc::Receiver<Box<Message>>)>,
) -> Result<Response, Rejection> {
    let dispatcher = app.dispatcher.clone();
    let stream = StreamId::generate();
    let connection = dispatcher
        .hub()
        .attach(session, &stream, None, Attach::Start)
        .await?;
    let priming = primes_sse(version).then(|| {
        (
            EventId {
                stream: stream.clone(),
                seq: 0,
            },
            app.config.sse_retry,
        )
    });
    let session = session.clone();
    let publisher = dispatcher.clone();
    tokio::spawn(async move {
        let publish = |message: Message| {
            let publisher = &publisher;
            let (session, stream) = (&session, &stream);
            async move {
                let data: Arc<str> = Arc::from(message.to_json());
                if let Err(e) = publisher.hub().publish(session, stream, data).await {
                    crate::hub::unstored(session, "an event", &e);
                }
            }
        };
        for message in first {
            publish(message).await;
        }
        if let Some((mut handling, mut rx)) = running {
            let response = loop {
                tokio::select! {
                    biased;
                    Some(message) = rx.recv() => publish(*message).await,
                    response = &mut handling => break response,
                }
            };
            while let Ok(message) = rx.try_recv() {
                publish(*message).await;
            }
            if let Some(response) = response {
                publish(Message::Response(response)).await;
            }
        }
        publisher.hub().finish(&session, &stream);
    });
    Ok(sse::response(
        connection,
        dispatcher,
        priming,
        app.config.keep_alive,
        None,
        app.open_stream(),
    ))
}

fn json_or_nothing(response: Option<RpcResponse>) -> Response {
    match response {
        Some(response) => answered(StatusCode::OK, response),
        // Cancelled: the protocol says not to answer.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The status of a modern JSON answer: 400 for the errors 2026-07-28 ties
/// to it (a missing client capability, found while the handler runs);
/// [`answered`] makes a store failure 503.
fn modern_status(response: &RpcResponse) -> StatusCode {
    match &response.outcome {
        Err(error) if error.code == code::MISSING_CLIENT_CAPABILITY => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// Answers a modern request: one JSON body when the handler sends nothing
/// first (or the client accepts no SSE), else a plain SSE stream that ends
/// with the response. Dropping the answer (the client went away) cancels
/// the request.
async fn modern(app: &Arc<App>, running: Running, accept: Accept) -> Response {
    let Running {
        mut handling,
        messages: mut rx,
        cancel,
        streams_only,
        ..
    } = running;
    // Until the stream's body takes the request over, dropping this future
    // (the client went away) cancels it.
    let cancel_on_drop = cancel.clone().map(|c| c.drop_guard());
    let mode = app.config.response_mode;
    if streams_only && !accept.sse() {
        return reject(&Rejection::NotAcceptable(
            "this method answers with a stream: Accept must list text/event-stream".into(),
        ));
    }
    let streams = accept.sse() && (mode != ResponseMode::Json || streams_only);
    let mut first = Vec::new();
    if !streams || (mode != ResponseMode::Sse && !streams_only) {
        loop {
            tokio::select! {
                biased;
                response = &mut handling => {
                    while let Ok(message) = rx.try_recv() {
                        first.push(*message);
                    }
                    let Some(response) = response else {
                        return StatusCode::NO_CONTENT.into_response();
                    };
                    if first.is_empty() || !streams {
                        return answered(modern_status(&response), response);
                    }
                    first.push(Message::Response(response));
                    return sse::plain(
                        first,
                        None,
                        app.config.keep_alive,
                        cancel,
                        app.open_stream(),
                    );
                }
                Some(message) = rx.recv() => {
                    if streams {
                        first.push(*message);
                        break;
                    }
                    // No stream to carry it (the client takes JSON only):
                    // dropped, so the handler never waits on a full channel.
                }
            }
        }
    }
    // From here the stream's body owns the request: it ends when the
    // client goes away, and so does the request.
    if let Some(guard) = cancel_on_drop {
        guard.disarm();
    }
    sse::plain(
        first,
        Some((handling, rx)),
        app.config.keep_alive,
        cancel,
        app.open_stream(),
    )
}
