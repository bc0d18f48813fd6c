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
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use serde_json::value::RawValue;
use session_core::wire::{ErrorObject, Message, RequestId, code};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Transport;
use super::sse::SseParser;
use crate::options::{ClientEvent, ClientOptions};
use crate::router::Router;
use crate::{Error, Result};

const SESSION_ID: &str = "mcp-session-id";
const PROTOCOL_VERSION: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";

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
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(session) = self.session.read().as_deref()
            && let Ok(value) = session.parse()
        {
            headers.insert(SESSION_ID, value);
        }
        if let Some(version) = self.version.read().as_deref()
            && let Ok(value) = version.parse()
        {
            headers.insert(PROTOCOL_VERSION, value);
        }
        headers
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

    /// An error for a non-success answer.
    async fn refusal(&self, response: reqwest::Response) -> Error {
        let status = response.status();
        let had_session = self.session.read().clone();
        let body = response.text().await.unwrap_or_default();
        if status == StatusCode::NOT_FOUND
            && let Some(session) = had_session
        {
            return Error::SessionNotFound { session };
        }
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Error::Http {
            status: status.as_u16(),
            message,
        }
    }

    /// Opens a GET stream, resuming after `last` if given.
    async fn get(&self, last: Option<&str>) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .get(self.url.clone())
            .headers(self.headers())
            .header(ACCEPT, "text/event-stream");
        if let Some(last) = last {
            request = request.header(LAST_EVENT_ID, last);
        }
        request
            .send()
            .await
            .map_err(|e| Error::transport("GET failed", e))
    }

    /// Reads one SSE response to its end, delivering messages. Returns the
    /// last event id and retry hint seen.
    async fn read_events(
        &self,
        response: reqwest::Response,
        last_id: &mut Option<String>,
        retry: &mut Option<Duration>,
    ) {
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = self.stopped.cancelled() => return,
            };
            let Some(Ok(chunk)) = chunk else {
                return;
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
    /// `request`, resumes it with GET and `Last-Event-ID`, waiting the
    /// server's `retry` (or a backoff) between attempts.
    async fn follow(self: Arc<Self>, response: reqwest::Response, request: Option<RequestId>) {
        let (mut last_id, mut retry) = (None, None);
        self.read_events(response, &mut last_id, &mut retry).await;
        let mut delays = self.backoff();
        let mut attempts = 0;
        loop {
            let Some(id) = request.as_ref().filter(|id| self.router.is_waiting(id)) else {
                return;
            };
            if self.stopped.is_cancelled() {
                return;
            }
            let Some(last) = last_id.clone() else {
                self.router.fail(
                    id,
                    ErrorObject::new(
                        code::INTERNAL_ERROR,
                        "the response stream ended before the response, without an event id to resume from",
                    ),
                );
                return;
            };
            let Some(delay) = retry
                .or_else(|| delays.next())
                .filter(|_| attempts < self.max_reconnects)
            else {
                self.router.fail(
                    id,
                    ErrorObject::new(
                        code::INTERNAL_ERROR,
                        format!(
                            "the response stream could not be resumed after {attempts} attempts"
                        ),
                    ),
                );
                return;
            };
            attempts += 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stopped.cancelled() => return,
            }
            match self.get(Some(&last)).await {
                Ok(response) if response.status().is_success() => {
                    self.emit(ClientEvent::StreamResumed {
                        last_event_id: last.clone(),
                        attempts,
                    });
                    self.read_events(response, &mut last_id, &mut retry).await;
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    self.router.fail(
                        id,
                        ErrorObject::new(code::SESSION_NOT_FOUND, "the session is gone"),
                    );
                    return;
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "resuming the stream failed");
                }
                Err(e) => tracing::debug!("resuming the stream failed: {e}"),
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
            match self.get(last_id.as_deref()).await {
                Ok(response) if response.status().is_success() => {
                    failures = 0;
                    delays = self.backoff();
                    self.read_events(response, &mut last_id, &mut retry).await;
                }
                Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    return; // The server offers no GET stream.
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    self.emit(ClientEvent::ListenFailed {
                        reason: "the session is gone (404)".into(),
                    });
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

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, message: Message) -> Result<()> {
        let shared = &self.shared;
        if shared.stopped.is_cancelled() {
            return Err(Error::Closed);
        }
        let (request_id, initialize) = match &message {
            Message::Request(r) => (Some(r.id.clone()), r.method == "initialize"),
            _ => (None, false),
        };
        let response = shared
            .http
            .post(shared.url.clone())
            .headers(shared.headers())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(message.to_json())
            .send()
            .await
            .map_err(|e| Error::transport(format!("POST to {} failed", shared.url), e))?;
        if initialize
            && let Some(session) = response
                .headers()
                .get(SESSION_ID)
                .and_then(|v| v.to_str().ok())
        {
            *shared.session.write() = Some(session.to_string());
        }
        let status = response.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        if !status.is_success() {
            return Err(shared.refusal(response).await);
        }
        let kind = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if kind.starts_with("text/event-stream") {
            tokio::spawn(shared.clone().follow(response, request_id));
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
                    shared.router.deliver(message);
                }
            }
            return Ok(());
        }
        let message = Message::parse(&body)
            .map_err(|e| Error::Protocol(format!("a malformed answer: {}", e.error)))?;
        shared.router.deliver(message);
        Ok(())
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

    async fn close(&self, terminate: bool) -> Result<()> {
        self.shared.stopped.cancel();
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
        let session = self.shared.session.read().clone();
        if !terminate || session.is_none() {
            return Ok(());
        }
        let response = self
            .shared
            .http
            .delete(self.shared.url.clone())
            .headers(self.shared.headers())
            .send()
            .await
            .map_err(|e| Error::transport("DELETE failed", e))?;
        let status = response.status();
        // 405: the server does not let clients end sessions; 404: already gone.
        if status.is_success()
            || status == StatusCode::METHOD_NOT_ALLOWED
            || status == StatusCode::NOT_FOUND
        {
            Ok(())
        } else {
            Err(self.shared.refusal(response).await)
        }
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.shared.stopped.cancel();
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }
}
