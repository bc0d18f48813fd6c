//! Streamable HTTP: one POST per message, JSON or SSE answers, a GET stream
//! for server-initiated messages, and resumption of broken streams with
//! `Last-Event-ID`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::BackoffBuilder;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::value::RawValue;
use session_core::wire::{ErrorObject, MODERN_PROTOCOL_VERSIONS, Message, RequestId, Response};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sse::SseParser;
use super::{Sending, Transport};
use crate::options::{ClientEvent, ClientOptions, ReinitPolicy};
use crate::router::{Router, Shut};
use crate::{Error, Result};

const SESSION_ID: &str = "mcp-session-id";
const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";

/// Whether `id` is a session id as the protocol allows: not empty, visible
/// ASCII only (0x21 to 0x7E), so it can be sent back as a header.
pub(crate) fn valid_session_id(id: &[u8]) -> bool {
    !id.is_empty() && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The session and revision a message goes out with, captured when it is
/// handed to the transport (so a 404 is judged by the session it was sent
/// in, not by whatever the session is when the answer arrives).
#[derive(Debug, Clone, Default)]
struct Context {
    session: Option<String>,
    version: Option<String>,
}

impl Context {
    /// Whether the message goes out in the 2026-07-28 era.
    fn is_modern(&self) -> bool {
        self.version
            .as_deref()
            .is_some_and(|v| MODERN_PROTOCOL_VERSIONS.contains(&v))
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // Both were checked when they were stored; a value that still does
        // not fit a header is left out rather than panicking.
        if let Some(Ok(value)) = self.session.as_deref().map(HeaderValue::from_str) {
            headers.insert(SESSION_ID, value);
        }
        if let Some(Ok(value)) = self.version.as_deref().map(HeaderValue::from_str) {
            headers.insert(PROTOCOL_VERSION, value);
        }
        headers
    }
}

/// The JSON-RPC error of an error answer's body, if it holds one.
fn rpc_error(body: &[u8]) -> Option<ErrorObject> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::from_value(value.get("error")?.clone()).ok()
}

/// How one SSE response ended.
#[derive(Debug)]
enum Ended {
    /// The server ended it.
    Finished,
    /// The connection broke.
    Broken(reqwest::Error),
    /// The client stopped.
    Stopped,
}

/// State shared with the stream tasks.
#[derive(Debug)]
struct Shared {
    http: reqwest::Client,
    url: reqwest::Url,
    router: Arc<Router>,
    session: RwLock<Option<String>>,
    version: RwLock<Option<String>>,
    max_reconnects: u32,
    min_backoff: Duration,
    max_backoff: Duration,
    options: ClientOptions,
    /// Cancelled when the client closes or disconnects.
    stopped: CancellationToken,
}

/// The Streamable HTTP transport.
#[derive(Debug)]
pub(crate) struct HttpTransport {
    shared: Arc<Shared>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl HttpTransport {
    /// A transport to `url`, optionally continuing `session`.
    pub(crate) fn new(
        url: &str,
        session: Option<String>,
        router: Arc<Router>,
        options: &ClientOptions,
    ) -> Result<Self> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| Error::transport(format!("invalid URL {url}"), e))?;
        if let Some(session) = &session
            && !valid_session_id(session.as_bytes())
        {
            return Err(Error::InvalidArgument(format!(
                "{session:?} is not a session id (visible ASCII only)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            // Small writes must not wait for ACKs (Nagle against delayed ACK).
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| Error::transport("cannot build the HTTP client", e))?;
        Ok(HttpTransport {
            shared: Arc::new(Shared {
                http,
                url,
                router,
                session: RwLock::new(session),
                version: RwLock::new(None),
                max_reconnects: options.max_reconnects,
                min_backoff: options.min_backoff,
                max_backoff: options.max_backoff,
                options: options.clone(),
                stopped: CancellationToken::new(),
            }),
            listener: Mutex::new(None),
        })
    }
}

impl Shared {
    /// The session and revision as they are now.
    fn context(&self) -> Context {
        Context {
            session: self.session.read().clone(),
            version: self.version.read().clone(),
        }
    }

    fn emit(&self, event: ClientEvent) {
        if let Some(handler) = &self.options.on_event {
            handler(&event);
        }
    }

    /// Delays between reconnection attempts: capped exponential with jitter.
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.max_reconnects as usize)
            .with_jitter()
            .build()
    }

    /// An error for a non-success answer to a message sent in `sent`.
    /// Only a 404 to a message that carried a session id means the session
    /// is gone.
    async fn refusal(response: reqwest::Response, sent: Option<String>) -> Error {
        let status = response.status();
        if status == StatusCode::NOT_FOUND
            && let Some(session) = sent
        {
            return Error::SessionNotFound { session };
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Error::Http {
            status: status.as_u16(),
            message,
        }
    }

    /// Opens a GET stream in `context`, resuming after `last` if given. The
    /// answer's headers must arrive within the connect timeout.
    async fn get(&self, context: &Context, last: Option<&str>) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .get(self.url.clone())
            .headers(context.headers())
            .header(ACCEPT, "text/event-stream");
        if let Some(last) = last {
            request = request.header(LAST_EVENT_ID, last);
        }
        let bound = self.options.connect_timeout;
        match tokio::time::timeout(bound, request.send()).await {
            Ok(sent) => sent.map_err(|e| Error::transport("GET failed", e)),
            Err(_) => Err(Error::Transport {
                message: format!("GET got no answer within {bound:?}"),
                source: None,
            }),
        }
    }

    /// Reads one SSE response to its end, delivering messages and keeping
    /// the last event id and retry hint seen.
    async fn read_events(
        &self,
        response: reqwest::Response,
        last_id: &mut Option<String>,
        retry: &mut Option<Duration>,
    ) -> Ended {
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = self.stopped.cancelled() => return Ended::Stopped,
            };
            let chunk = match chunk {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Ended::Broken(e),
                None => return Ended::Finished,
            };
            for event in parser.push(&chunk) {
                if let Some(id) = event.id {
                    *last_id = Some(id);
                }
                if let Some(ms) = event.retry {
                    *retry = Some(Duration::from_millis(ms));
                }
                if event.data.trim().is_empty() {
                    continue;
                }
                match Message::parse(event.data.as_bytes()) {
                    Ok(message) => self.router.deliver(message),
                    Err(e) => tracing::warn!("an SSE event that is not JSON-RPC: {}", e.error),
                }
            }
        }
    }

    /// Reads a POST's SSE answer; if it breaks before the response to
    /// `request`, resumes it with GET and `Last-Event-ID` in the session the
    /// POST went out in, waiting the server's `retry` (or a backoff) between
    /// attempts. A request that cannot be completed fails with a typed
    /// error: the session is gone, the stream broke, the server misbehaved.
    async fn follow(
        self: Arc<Self>,
        response: reqwest::Response,
        request: Option<RequestId>,
        context: Context,
    ) {
        let (mut last_id, mut retry) = (None, None);
        let mut ended = self.read_events(response, &mut last_id, &mut retry).await;
        let mut delays = self.backoff();
        let mut attempts = 0;
        let mut last_failure: Option<Box<dyn std::error::Error + Send + Sync>> = None;
        loop {
            let Some(id) = request.as_ref().filter(|id| self.router.is_waiting(id)) else {
                return;
            };
            if matches!(ended, Ended::Stopped) || self.stopped.is_cancelled() {
                return;
            }
            let Some(last) = last_id.clone() else {
                let error = match ended {
                    Ended::Broken(e) => Error::transport(
                        "the response stream broke before the response, without an event id to resume from",
                        e,
                    ),
                    _ => Error::Protocol(
                        "the response stream ended before the response, without an event id to resume from"
                            .into(),
                    ),
                };
                self.router.fail(id, error);
                return;
            };
            if let Ended::Broken(e) = ended {
                last_failure = Some(e.into());
            }
            let Some(delay) = retry
                .or_else(|| delays.next())
                .filter(|_| attempts < self.max_reconnects)
            else {
                self.router.fail(
                    id,
                    Error::Transport {
                        message: format!(
                            "the response stream could not be resumed after {attempts} attempts"
                        ),
                        source: last_failure,
                    },
                );
                return;
            };
            attempts += 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stopped.cancelled() => return,
            }
            ended = Ended::Finished;
            match self.get(&context, Some(&last)).await {
                Ok(response) if response.status().is_success() => {
                    self.emit(ClientEvent::StreamResumed {
                        last_event_id: last.clone(),
                        attempts,
                    });
                    ended = self.read_events(response, &mut last_id, &mut retry).await;
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    let error = Self::refusal(response, context.session.clone()).await;
                    self.router.fail(id, error);
                    return;
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "resuming the stream failed");
                    last_failure = Some(format!("HTTP {}", response.status()).into());
                }
                Err(e) => {
                    tracing::debug!("resuming the stream failed: {e}");
                    last_failure = Some(Box::new(e));
                }
            }
        }
    }

    /// The GET stream: reconnects with backoff (or the server's `retry`),
    /// resuming with `Last-Event-ID`, until stopped or out of attempts.
    async fn listen(self: Arc<Self>) {
        let (mut last_id, mut retry) = (None::<String>, None);
        let mut delays = self.backoff();
        let mut failures = 0u32;
        loop {
            if self.stopped.is_cancelled() {
                return;
            }
            let context = self.context();
            match self.get(&context, last_id.as_deref()).await {
                Ok(response) if response.status().is_success() => {
                    failures = 0;
                    delays = self.backoff();
                    self.read_events(response, &mut last_id, &mut retry).await;
                }
                Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    return; // The server offers no GET stream.
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    // The same recovery as a request's 404, unless the
                    // policy is to leave the session alone.
                    match context.session {
                        Some(session) if self.options.reinit != ReinitPolicy::Surface => {
                            self.router.session_lost(session);
                        }
                        _ => self.emit(ClientEvent::ListenFailed {
                            reason: "the session is gone (404)".into(),
                        }),
                    }
                    return;
                }
                Ok(response) => {
                    failures += 1;
                    tracing::debug!(status = %response.status(), "GET stream refused");
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!("GET stream failed: {e}");
                }
            }
            let delay = if failures == 0 {
                retry.or_else(|| delays.next())
            } else {
                delays.next().map(|d| retry.map_or(d, |r| r.max(d)))
            };
            let Some(delay) = delay.filter(|_| failures <= self.max_reconnects) else {
                self.emit(ClientEvent::ListenFailed {
                    reason: format!("gave up after {failures} failed reconnection attempts"),
                });
                return;
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stopped.cancelled() => return,
            }
        }
    }
}

impl Shared {
    /// The `subscriptions/listen` stream (2026-07-28 era): POSTs the request
    /// (a new id each time), hands the notifications it carries to the
    /// router, and when the stream ends or breaks sends it again after a
    /// capped, jittered backoff (started over after a stream that worked),
    /// until stopped or out of attempts. A JSON-RPC refusal (the server
    /// does not offer it) ends it.
    async fn listen_modern(self: Arc<Self>, params: serde_json::Value, headers: HeaderMap) {
        let mut delays = self.backoff();
        let mut failures = 0u32;
        let mut round = 0u64;
        loop {
            if self.stopped.is_cancelled() {
                return;
            }
            round += 1;
            let body = serde_json::json!({
                "jsonrpc": "2.0",
                "id": format!("listen-{round}"),
                "method": "subscriptions/listen",
                "params": params,
            });
            let sent = self
                .http
                .post(self.url.clone())
                .headers(self.context().headers())
                .headers(headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream")
                .body(body.to_string())
                .send();
            let response = tokio::select! {
                response = sent => response,
                () = self.stopped.cancelled() => return,
            };
            match response {
                Ok(response) if response.status().is_success() => {
                    let (mut last_id, mut retry) = (None, None);
                    let opened = tokio::time::Instant::now();
                    let ended = self.read_events(response, &mut last_id, &mut retry).await;
                    if matches!(ended, Ended::Stopped) {
                        return;
                    }
                    // A stream that lasted starts the backoff over; one
                    // that ended at once (a JSON answer, an error in a
                    // 200) counts as a failure, so it is not re-sent ten
                    // times a second forever.
                    if opened.elapsed() >= self.max_backoff.max(Duration::from_secs(1)) {
                        failures = 0;
                        delays = self.backoff();
                    } else {
                        failures += 1;
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    // Refused for good (the server does not offer it) only
                    // on a 4xx; a 5xx (a replica draining) is retried.
                    if status.is_client_error()
                        && let Some(error) = rpc_error(&body)
                    {
                        self.emit(ClientEvent::ListenFailed {
                            reason: format!("subscriptions/listen refused: {error}"),
                        });
                        return;
                    }
                    failures += 1;
                    tracing::debug!(%status, "subscriptions/listen refused");
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!("subscriptions/listen failed: {e}");
                }
            }
            let Some(delay) = delays.next().filter(|_| failures <= self.max_reconnects) else {
                self.emit(ClientEvent::ListenFailed {
                    reason: format!("gave up after {failures} failed reconnection attempts"),
                });
                return;
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stopped.cancelled() => return,
            }
        }
    }

    /// POSTs one message in `context` and hands what comes back to the
    /// router.
    async fn post(
        self: Arc<Self>,
        message: Message,
        headers: HeaderMap,
        request_id: Option<RequestId>,
        initialize: bool,
        context: Context,
    ) -> Result<()> {
        if self.stopped.is_cancelled() {
            return Err(Error::Closed);
        }
        let response = self
            .http
            .post(self.url.clone())
            .headers(context.headers())
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(message.to_json())
            .send()
            .await
            .map_err(|e| Error::transport(format!("POST to {} failed", self.url), e))?;
        let status = response.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        if !status.is_success() {
            if context.is_modern()
                && status.is_client_error()
                && let Some(id) = &request_id
            {
                // The 2026-07-28 era answers its errors (an unsupported
                // revision, a header mismatch, an unknown method) with a
                // 4xx and the JSON-RPC error: that error is the answer.
                let body = response.bytes().await.unwrap_or_default();
                if let Some(error) = rpc_error(&body) {
                    self.router.deliver(Message::Response(Response {
                        id: Some(id.clone()),
                        outcome: Err(error),
                    }));
                    return Ok(());
                }
                return Err(Error::Http {
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            return Err(Self::refusal(response, context.session).await);
        }
        if initialize && let Some(value) = response.headers().get(SESSION_ID) {
            if !valid_session_id(value.as_bytes()) {
                return Err(Error::Protocol(format!(
                    "the server issued a session id that is not visible ASCII: {:?}",
                    String::from_utf8_lossy(value.as_bytes())
                )));
            }
            *self.session.write() = Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let kind = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if kind.starts_with("text/event-stream") {
            // Resuming this stream happens in the session the POST went out
            // in; for `initialize`, the one it just created.
            let context = if initialize { self.context() } else { context };
            tokio::spawn(self.clone().follow(response, request_id, context));
            return Ok(());
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::transport("reading the answer failed", e))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let items: Vec<Box<RawValue>> = serde_json::from_slice(&body)
                .map_err(|e| Error::Protocol(format!("a malformed batch answer: {e}")))?;
            for item in items {
                if let Ok(message) = Message::from_raw(&item) {
                    self.router.deliver(message);
                }
            }
            return Ok(());
        }
        let message = Message::parse(&body)
            .map_err(|e| Error::Protocol(format!("a malformed answer: {}", e.error)))?;
        self.router.deliver(message);
        Ok(())
    }
}

#[async_trait]
impl Transport for HttpTransport {
    fn send(&self, message: Message, headers: HeaderMap) -> Sending {
        let (request_id, initialize) = match &message {
            Message::Request(r) => (Some(r.id.clone()), r.method == "initialize"),
            _ => (None, false),
        };
        // `initialize` starts a session: it goes out in none.
        let context = if initialize {
            Context::default()
        } else {
            self.shared.context()
        };
        Box::pin(
            self.shared
                .clone()
                .post(message, headers, request_id, initialize, context),
        )
    }

    fn session_id(&self) -> Option<String> {
        self.shared.session.read().clone()
    }

    fn reset_session(&self) {
        *self.shared.session.write() = None;
        *self.shared.version.write() = None;
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }

    async fn established(&self, protocol_version: &str, listen: bool) {
        *self.shared.version.write() = Some(protocol_version.to_string());
        if listen && self.shared.session.read().is_some() {
            let task = tokio::spawn(self.shared.clone().listen());
            if let Some(old) = self.listener.lock().replace(task) {
                old.abort();
            }
        }
    }

    async fn listen_modern(&self, params: serde_json::Value, headers: HeaderMap) {
        let task = tokio::spawn(self.shared.clone().listen_modern(params, headers));
        if let Some(old) = self.listener.lock().replace(task) {
            old.abort();
        }
    }

    async fn close(&self, terminate: bool) -> Result<()> {
        self.shared.stopped.cancel();
        self.shared.router.shut(Shut::Closed);
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
        let context = self.shared.context();
        if !terminate || context.session.is_none() {
            return Ok(());
        }
        // Bounded like a request: a server that never answers must not keep
        // the caller (the CLI's `close`) waiting forever.
        let bound = self.shared.options.request_timeout;
        let response = match self
            .shared
            .http
            .delete(self.shared.url.clone())
            .headers(context.headers())
            .timeout(bound)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Err(Error::Timeout {
                    method: "DELETE".into(),
                    after: bound,
                });
            }
            Err(e) => return Err(Error::transport("DELETE failed", e)),
        };
        let status = response.status();
        // 405: the server does not let clients end sessions; 404: already gone.
        if status.is_success()
            || status == StatusCode::METHOD_NOT_ALLOWED
            || status == StatusCode::NOT_FOUND
        {
            Ok(())
        } else {
            Err(Shared::refusal(response, context.session).await)
        }
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.shared.stopped.cancel();
        self.shared.router.shut(Shut::Closed);
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }
}
