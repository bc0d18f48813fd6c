//! The Streamable HTTP transport: one endpoint for POST, GET and DELETE.
//!
//! A thin adapter: it checks headers, resolves the session named by
//! `MCP-Session-Id`, hands typed messages to the dispatcher, and writes what
//! comes back as JSON or SSE. Every refusal goes through [`Rejection`].

mod headers;
mod serve;
mod sse;

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http;
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use futures_util::future::Either;
use serde_json::value::RawValue;
use session_core::wire::{
    Message, ParseError, Request as RpcRequest, Response as RpcResponse, primes_sse,
};
use session_core::{EventId, SessionId, SessionRecord, StreamId};
use tokio::sync::mpsc;
use tower_service::Service;

use crate::config::{HttpConfig, ResponseMode};
use crate::context::Outbox;
use crate::dispatch::modern_revision;
use crate::error::{Error, Rejection};
use crate::hub::{Attach, Hub};
use crate::server::{McpServer, Shared};
use headers::{Accept, Guard, Head, SESSION_ID};

/// The authenticated principal of a request, put into the request's
/// extensions by authentication middleware in front of the MCP endpoint.
///
/// A session created by a request with a principal is bound to it: requests
/// (including DELETE) from another principal, or from none, get the same 404
/// as an unknown session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// What the handlers share.
#[derive(Debug)]
struct App {
    shared: Arc<Shared>,
    config: HttpConfig,
    guard: Guard,
    /// Whether the handler checks the path itself (served without a
    /// router); a router checks it before the handler runs.
    check_path: bool,
}

impl sse::HubRef for Shared {
    fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl McpServer {
    /// An axum router serving the MCP endpoint at `config.path`. `listen` is
    /// the address the router will be served on: when it is loopback, the
    /// `Host` header is checked against loopback names (DNS rebinding
    /// defence).
    pub fn router(&self, config: HttpConfig, listen: SocketAddr) -> Router {
        let path = config.path.clone();
        Router::new().route_service(&path, Endpoint(self.app(config, listen, false)))
    }

    fn app(&self, config: HttpConfig, listen: SocketAddr, check_path: bool) -> Arc<App> {
        let guard = Guard {
            origins: config.allowed_origins.clone(),
            hosts: config.allowed_hosts.clone(),
            check_host: listen.ip().is_loopback() || !config.allowed_hosts.is_empty(),
        };
        Arc::new(App {
            shared: self.shared.clone(),
            config,
            guard,
            check_path,
        })
    }

    /// Serves the MCP endpoint on `listener` until `shutdown` resolves, then
    /// shuts down gracefully: stops accepting, ends open streams, lets
    /// requests in flight finish (cancelling them after 10 s).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the listener cannot tell its address. Failures to
    /// accept a connection are logged and retried, not returned.
    pub async fn serve_http(
        &self,
        listener: tokio::net::TcpListener,
        config: HttpConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = listener.local_addr().map_err(|source| Error::Io {
            action: "read the listening address".into(),
            source,
        })?;
        // One endpoint needs no path router: the path is checked in the
        // handler, which saves the router's work on every request.
        let endpoint = Endpoint(self.app(config, addr, true));
        let sweeper = self.spawn_sweeper();
        let connections = serve::accept_until(listener, endpoint, shutdown).await;
        // The listener is closed: refuse what still arrives on open
        // connections (503), end idle streams, and give the requests in
        // flight the grace to finish while the connections close.
        self.begin_shutdown();
        let server = self.clone();
        let drain = tokio::spawn(async move { server.drain(SHUTDOWN_GRACE).await });
        connections.close(SHUTDOWN_GRACE + CLOSE_MARGIN).await;
        // Requests whose client went away still finish (their events are
        // stored for a resume), within the grace.
        let _ = drain.await;
        sweeper.abort();
        Ok(())
    }
}

/// How long connections may stay open after the grace of their requests
/// (a response still being written to a slow client).
const CLOSE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long requests in flight may run on after shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The MCP endpoint as a tower service.
///
/// What the request head can settle is settled at once in
/// [`answer`](Endpoint::answer); only what has to wait (the body, the store,
/// the handler) goes into the returned future, which owns just the headers
/// and body it needs. Each request's
/// future is allocated and moved about by the HTTP stack, so its size costs
/// on every request: cold paths (GET, DELETE, batches, SSE) are boxed
/// inside it rather than held inline.
#[derive(Debug, Clone)]
struct Endpoint(Arc<App>);

type Answer = Result<Response, Infallible>;
type EndpointFuture = Either<Ready<Answer>, Pin<Box<dyn Future<Output = Answer> + Send>>>;

fn now(response: Response) -> EndpointFuture {
    Either::Left(std::future::ready(Ok(response)))
}

fn later(answer: impl Future<Output = Response> + Send + 'static) -> EndpointFuture {
    Either::Right(Box::pin(answer.map(Ok)))
}

impl Service<Request> for Endpoint {
    type Response = Response;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> EndpointFuture {
        self.answer(request)
    }
}

impl Endpoint {
    /// Answers one request (what [`Service::call`] does, without `&mut`),
    /// whatever its body type: `serve_http` passes hyper's own body, not
    /// boxed as axum's [`Body`] would be.
    fn answer<B: RequestBody>(&self, request: http::Request<B>) -> EndpointFuture {
        let app = &self.0;
        if app.check_path && request.uri().path() != app.config.path {
            return now(StatusCode::NOT_FOUND.into_response());
        }
        if app.shared.shutdown.is_cancelled() {
            return now(reject(&Rejection::Unavailable(
                "the server is shutting down".into(),
            )));
        }
        let app = app.clone();
        match *request.method() {
            Method::POST => match post_head(&app, request) {
                Ok((head, principal, body)) => later(post(app, head, principal, body)),
                Err(rejection) => now(reject(&rejection)),
            },
            Method::GET => {
                let (parts, _) = request.into_parts();
                later(async move {
                    get(&app, parts)
                        .await
                        .unwrap_or_else(|rejection| reject(&rejection))
                })
            }
            Method::DELETE => match delete_head(&app, request.headers(), request.extensions()) {
                Ok((id, principal)) => later(
                    delete(app, id, principal)
                        .map(|answer| answer.unwrap_or_else(|rejection| reject(&rejection))),
                ),
                Err(rejection) => now(reject(&rejection)),
            },
            _ => now(reject(&Rejection::MethodNotAllowed)),
        }
    }
}

/// The answer to a refused message: its status and a JSON-RPC error body.
fn reject(rejection: &Rejection) -> Response {
    reject_with_id(rejection, None)
}

/// [`reject`] for a request whose id could be read.
fn reject_with_id(rejection: &Rejection, id: Option<session_core::wire::RequestId>) -> Response {
    let body = RpcResponse::error(id, rejection.error_object());
    let mut response = json(rejection.status(), Message::Response(body).to_json());
    if *rejection == Rejection::MethodNotAllowed {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    }
    response
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A request body the endpoint can read.
pub(crate) trait RequestBody:
    HttpBody<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: HttpBody<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static
{
}

fn principal(extensions: &http::Extensions) -> Option<String> {
    extensions.get::<Principal>().map(|p| p.0.clone())
}

/// The session a request names (its `MCP-Session-Id`), for its principal.
async fn resolve(
    app: &App,
    session_id: Option<&HeaderValue>,
    principal: Option<&str>,
) -> Result<SessionRecord, Rejection> {
    let id = required_session_id(session_id)?;
    resume(app, &id, principal).await
}

/// `MCP-Session-Id`, which the request must carry.
fn required_session_id(value: Option<&HeaderValue>) -> Result<SessionId, Rejection> {
    headers::session_id(value)?.ok_or(Rejection::MissingSessionId)
}

/// Session `id` for `principal`, or the refusal that fits (404 and kin).
async fn resume(
    app: &App,
    id: &SessionId,
    principal: Option<&str>,
) -> Result<SessionRecord, Rejection> {
    app.shared
        .manager
        .resume(id, principal)
        .await
        .map_err(|e| Rejection::from_session(&e))
}

fn parse_rejection(e: ParseError) -> Rejection {
    if e.error.code == session_core::wire::code::PARSE_ERROR {
        Rejection::Parse(e.error.message)
    } else {
        Rejection::InvalidRequest(e.error.message)
    }
}

/// What the rest of a POST needs of its headers, once [`post_head`] has
/// checked them (the header map itself is dropped there).
#[derive(Debug)]
struct PostHead {
    accept: Accept,
    session_id: Option<HeaderValue>,
    protocol_version: Option<HeaderValue>,
}

/// The checks of a POST that need only its head: origin and host, content
/// type, declared length. Returns what the rest of the request needs.
fn post_head<B: RequestBody>(
    app: &App,
    request: http::Request<B>,
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
    let head = PostHead {
        accept: head.accept,
        session_id: head.session_id.cloned(),
        protocol_version: head.protocol_version.cloned(),
    };
    Ok((head, principal, body))
}

/// A POST past [`post_head`]: reads the body and answers the message in it.
///
/// An `async` block rather than an `async fn`: the block keeps its captures
/// once, where an `async fn` would hold its arguments twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
fn post<B: RequestBody>(
    app: Arc<App>,
    head: PostHead,
    principal: Option<String>,
    body: B,
) -> impl Future<Output = Response> + Send {
    async move {
        let body = match read_body(body, app.config.max_body_bytes).await {
            Ok(body) => body,
            Err(rejection) => return reject(&rejection),
        };
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let answer = match head.accept.check_post() {
                Ok(()) => Box::pin(batch(&app, &head, principal.as_deref(), &body)).await,
                Err(rejection) => Err(rejection),
            };
            return answer.unwrap_or_else(|rejection| reject(&rejection));
        }
        let message = match Message::parse(&body) {
            Ok(message) => message,
            Err(e) => {
                let id = e.id.clone();
                return reject_with_id(&parse_rejection(e), id);
            }
        };
        // A refusal of a request answers it by its id.
        let id = match &message {
            Message::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        match post_message(&app, &head, principal.as_deref(), message).await {
            Ok(response) => response,
            Err(rejection) => reject_with_id(&rejection, id),
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

async fn post_message(
    app: &Arc<App>,
    head: &PostHead,
    principal: Option<&str>,
    message: Message,
) -> Result<Response, Rejection> {
    // A sessionless (2026-07-28) client learns the supported versions
    // whatever it accepts, so it can fall back to `initialize`.
    if let Message::Request(request) = &message
        && request.method != "initialize"
        && let Some(requested) = modern_revision(&request.method, request.params.as_deref())
    {
        return Err(Rejection::UnsupportedVersion { requested });
    }
    head.accept.check_post()?;
    if let Message::Request(request) = &message
        && request.method == "initialize"
    {
        return Box::pin(initialize(app, request, principal)).await;
    }
    headers::protocol_version(head.protocol_version.as_ref())?;
    let session = resolve(app, head.session_id.as_ref(), principal).await?;
    match message {
        Message::Notification(note) => {
            Box::pin(app.shared.notification(&session, &note)).await;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Message::Response(response) => {
            if !app.shared.pending.answer(session.id(), response) {
                tracing::debug!(session = %session.id(), "an answer nobody here waits for");
            }
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Message::Request(request) => respond(app, session, request).await,
    }
}

async fn initialize(
    app: &App,
    request: &RpcRequest,
    principal: Option<&str>,
) -> Result<Response, Rejection> {
    // A session id sent with `initialize` is ignored: ids are minted here
    // only (reusing a client's would be session fixation).
    let (record, response) = app.shared.initialize(request, principal, None).await?;
    let mut reply = json(StatusCode::OK, Message::Response(response).to_json());
    if let Some(value) = record.and_then(|r| HeaderValue::from_str(r.id().as_str()).ok()) {
        reply.headers_mut().insert(SESSION_ID, value);
    }
    Ok(reply)
}

/// Answers one request as JSON or SSE, by the response mode.
///
/// The handler starts (boxed) before the returned future exists, so that
/// future holds only what waiting for the handler needs.
fn respond(
    app: &Arc<App>,
    session: SessionRecord,
    request: RpcRequest,
) -> impl Future<Output = Result<Response, Rejection>> + Send + '_ {
    let session_id = session.id().clone();
    let version = session.meta().protocol_version.clone().unwrap_or_default();
    let (tx, rx) = mpsc::channel(16);
    let mode = app.config.response_mode;
    let rx = if mode == ResponseMode::Json {
        // What the handler sends goes to the session's GET stream.
        forward_to_standalone(&app.shared, &session_id, rx);
        None
    } else {
        Some(rx)
    };
    let mut handling: Handling = Box::pin(app.shared.clone().request(session, request, Outbox(tx)));
    async move {
        let Some(mut rx) = rx else {
            return Ok(json_or_nothing(handling.await));
        };
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
                    return Box::pin(sse_stream(app, &session_id, &version, first, None)).await;
                }
                Some(message) = rx.recv() => first.push(*message),
            }
        }
        Box::pin(sse_stream(
            app,
            &session_id,
            &version,
            first,
            Some((handling, rx)),
        ))
        .await
    }
}

type Handling = std::pin::Pin<Box<dyn std::future::Future<Output = Option<RpcResponse>> + Send>>;

/// Opens an SSE stream for a request: `first` messages, then whatever the
/// still running handler sends, then its response.
async fn sse_stream(
    app: &Arc<App>,
    session: &session_core::SessionId,
    version: &str,
    first: Vec<Message>,
    running: Option<(Handling, mpsc::Receiver<Box<Message>>)>,
) -> Result<Response, Rejection> {
    let shared = app.shared.clone();
    let stream = StreamId::generate();
    let connection = shared
        .hub
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
    let hub_shared = shared.clone();
    tokio::spawn(async move {
        let publish = |message: Message| {
            let shared = &hub_shared;
            let (session, stream) = (&session, &stream);
            async move {
                let data: Arc<str> = Arc::from(message.to_json());
                if let Err(e) = shared.hub.publish(session, stream, data).await {
                    tracing::warn!(%session, "cannot store an event: {e}");
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
        hub_shared.hub.finish(&session, &stream);
    });
    Ok(sse::response(
        connection,
        shared,
        priming,
        app.config.keep_alive,
        None,
    ))
}

/// Sends what a JSON-only request emits to the session's GET stream.
fn forward_to_standalone(
    shared: &Arc<Shared>,
    session: &session_core::SessionId,
    mut rx: mpsc::Receiver<Box<Message>>,
) {
    let shared = shared.clone();
    let session = session.clone();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let data: Arc<str> = Arc::from(message.to_json());
            if let Err(e) = shared
                .hub
                .publish(&session, &StreamId::standalone(), data)
                .await
            {
                tracing::warn!(%session, "cannot store an event: {e}");
            }
        }
    });
}

fn json_or_nothing(response: Option<RpcResponse>) -> Response {
    match response {
        Some(response) => json(StatusCode::OK, Message::Response(response).to_json()),
        // Cancelled: the protocol says not to answer.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// A JSON-RPC batch (revision 2025-03-26 only): handled in order, answered
/// with an array of the responses.
async fn batch(
    app: &App,
    head: &PostHead,
    principal: Option<&str>,
    body: &[u8],
) -> Result<Response, Rejection> {
    let items: Vec<Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| Rejection::Parse(e.to_string()))?;
    if items.is_empty() {
        return Err(Rejection::InvalidRequest("empty batch".into()));
    }
    let version = headers::protocol_version(head.protocol_version.as_ref())?;
    let session = resolve(app, head.session_id.as_ref(), principal).await?;
    let negotiated = session.meta().protocol_version.as_deref().unwrap_or("");
    if version.unwrap_or(negotiated) != "2025-03-26" {
        return Err(Rejection::InvalidRequest(
            "batches are allowed only in protocol revision 2025-03-26".into(),
        ));
    }
    let mut responses = Vec::new();
    for item in items {
        match Message::from_raw(&item) {
            Ok(Message::Request(request)) if request.method == "initialize" => {
                return Err(Rejection::InvalidRequest(
                    "initialize must not be part of a batch".into(),
                ));
            }
            Ok(Message::Request(request)) => {
                let (tx, rx) = mpsc::channel(16);
                forward_to_standalone(&app.shared, session.id(), rx);
                let outbox = Outbox(tx);
                if let Some(r) = app
                    .shared
                    .clone()
                    .request(session.clone(), request, outbox)
                    .await
                {
                    responses.push(Message::Response(r).to_json());
                }
            }
            Ok(Message::Notification(note)) => app.shared.notification(&session, &note).await,
            Ok(Message::Response(response)) => {
                app.shared.pending.answer(session.id(), response);
            }
            Err(e) => {
                responses.push(Message::Response(RpcResponse::error(e.id, e.error)).to_json())
            }
        }
    }
    if responses.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    Ok(json(StatusCode::OK, format!("[{}]", responses.join(","))))
}

async fn get(app: &Arc<App>, request: http::request::Parts) -> Result<Response, Rejection> {
    let head = Head::scan(&request.headers);
    app.guard.check(&head)?;
    head.accept.check_get()?;
    headers::protocol_version(head.protocol_version)?;
    let session = resolve(
        app,
        head.session_id,
        principal(&request.extensions).as_deref(),
    )
    .await?;
    let last = match head.last_event_id {
        Some(value) => {
            let text = value.to_str().unwrap_or("");
            Some(EventId::parse(text).ok_or_else(|| Rejection::CannotResume(text.to_string()))?)
        }
        None => None,
    };
    let hub = &app.shared.hub;
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
            None => latest_event(&app.shared, session.id(), &standalone).await,
        };
        let request_stream = from.stream != standalone;
        let key = connection.key.clone();
        tokio::spawn(follow_store(
            app.shared.clone(),
            key,
            connection.number,
            feed,
            from,
            request_stream.then_some(app.config.follow_idle_timeout),
        ));
    }
    Ok(sse::response(
        connection,
        app.shared.clone(),
        None,
        app.config.keep_alive,
        limit,
    ))
}

/// The id of the last event appended to `stream` (position 0 if none), so
/// a fresh connection is fed only what comes after it.
async fn latest_event(
    shared: &Shared,
    session: &session_core::SessionId,
    stream: &StreamId,
) -> EventId {
    match shared.hub.events().latest(session, stream).await {
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
    shared: Arc<Shared>,
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
            || !shared.hub.is_attached(&key, number)
            || shared.shutdown.is_cancelled()
        {
            return;
        }
        match shared.hub.events().wait_after(&key.0, &last, 1_000).await {
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
                tracing::warn!(session = %key.0, "following a stream in the store failed: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The checks of a DELETE that need only its head. Returns the session it
/// names and the principal asking.
fn delete_head(
    app: &App,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> Result<(SessionId, Option<String>), Rejection> {
    let head = Head::scan(headers);
    app.guard.check(&head)?;
    headers::protocol_version(head.protocol_version)?;
    Ok((required_session_id(head.session_id)?, principal(extensions)))
}

/// A DELETE past [`delete_head`]: ends the session.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
fn delete(
    app: Arc<App>,
    id: SessionId,
    principal: Option<String>,
) -> impl Future<Output = Result<Response, Rejection>> + Send {
    async move {
        let session = resume(&app, &id, principal.as_deref()).await?;
        if !app.config.allow_delete {
            return Err(Rejection::MethodNotAllowed);
        }
        Box::pin(app.shared.manager.close_from(session))
            .await
            .map_err(|e| Rejection::from_session(&e))?;
        Ok(StatusCode::OK.into_response())
    }
}
