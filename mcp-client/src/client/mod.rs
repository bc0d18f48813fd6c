//! The client: handshake, requests with timeouts and cancellation, and the
//! session it keeps alive by itself; the 2026-07-28 era in [`era`].

mod era;
mod methods;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use session_core::RawJson;
use session_core::wire::{
    CallToolResult, GetPromptResult, Implementation, InitializeParams, InitializeResult,
    LATEST_PROTOCOL_VERSION, ListPromptsResult, ListResourcesResult, ListToolsResult,
    MODERN_PROTOCOL_VERSIONS, Message, Notification, Prompt, ReadResourceResult, Request,
    RequestId, Resource, SESSION_STATE_CAPABILITY, SUPPORTED_PROTOCOL_VERSIONS, SessionStateResult,
    Tool, code, is_supported, to_raw,
};
use tokio::sync::Notify;

use crate::modern::{
    self, Envelope, INPUT_KINDS, META_SERVER_INFO, ParamHeader, Reply, TASKS_EXTENSION,
};
use crate::options::{ClientEvent, ClientOptions, ProtocolMode, ReinitPolicy, RequestOptions};
use crate::router::{Failure, Router};
use crate::transport::Transport;
use crate::transport::http::HttpTransport;
use crate::transport::stdio::StdioTransport;
use crate::{Error, Result};

/// What the server said in `initialize` (legacy era) or `server/discover`
/// (2026-07-28 era).
#[derive(Debug, Clone)]
pub struct ServerDetails {
    /// The negotiated protocol revision (the one requests carry in the
    /// 2026-07-28 era).
    pub protocol_version: String,
    /// The server's capabilities.
    pub capabilities: Value,
    /// Who the server is.
    pub server_info: Implementation,
    /// Guidance for the model.
    pub instructions: Option<String>,
}

/// An MCP client over Streamable HTTP or stdio.
///
/// Cloning is cheap; clones share the connection and the session. When the
/// server loses the session (HTTP 404), the client starts a new one by
/// itself (see [`ReinitPolicy`]) and reports the new id through
/// [`ClientEvent::SessionReplaced`] and [`Client::session_id`]. Requests
/// made while the new session is being set up wait for it.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Arc<dyn Transport>,
    router: Arc<Router>,
    options: ClientOptions,
    server: RwLock<Option<ServerDetails>>,
    /// The revision sent as `MCP-Protocol-Version`.
    protocol_version: RwLock<Option<String>>,
    next_id: AtomicI64,
    /// Messages take it (shared) while the transport captures the session
    /// they go out in; a new handshake holds it (exclusive), so nothing goes
    /// out between forgetting the old session and completing the new one.
    gate: tokio::sync::RwLock<()>,
    /// A new handshake failed: the next request tries again first.
    broken: AtomicBool,
    /// The 2026-07-28 era's revision, once the client speaks it (no
    /// session then).
    modern: RwLock<Option<String>>,
    /// The `Mcp-Param-*` headers of each tool, from `tools/list`.
    tool_headers: RwLock<HashMap<String, Vec<ParamHeader>>>,
    /// Where the era verdict is kept (the server URL), if anywhere.
    era_key: Option<String>,
}

/// The era each server URL was found to speak, for the life of the
/// process: `Some(version)` modern, `None` legacy.
fn era_cache() -> &'static Mutex<HashMap<String, Option<String>>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Option<String>>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

impl Inner {
    fn emit(&self, event: ClientEvent) {
        if let Some(handler) = &self.options.on_event {
            handler(&event);
        }
    }

    /// Sends `notifications/cancelled` for `id` in the background, bounded
    /// by the request timeout.
    fn cancel_later(&self, id: &RequestId, reason: &str) {
        // In the 2026-07-28 era over HTTP, dropping the response stream is
        // the cancellation; there is no notification to send.
        if self.modern.read().is_some() && self.era_key.is_some() {
            return;
        }
        let sending = self.transport.send(cancelled(id, reason), HeaderMap::new());
        let bound = self.options.request_timeout;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(bound, sending).await;
            });
        }
    }
}

impl std::fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

/// Sends `notifications/cancelled` for a request whose caller stopped
/// waiting (the future was dropped), if it was sent and may be cancelled.
struct Pending {
    inner: Arc<Inner>,
    id: RequestId,
    /// The message was handed to the transport.
    sent: AtomicBool,
    /// The request has its outcome; nothing to cancel.
    finished: AtomicBool,
    /// `initialize` must not be cancelled.
    cancellable: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished.load(Ordering::Acquire) || !self.inner.router.forget(&self.id) {
            return;
        }
        if self.cancellable && self.sent.load(Ordering::Acquire) {
            self.inner
                .cancel_later(&self.id, "the caller stopped waiting");
        }
    }
}

fn cancelled(id: &RequestId, reason: &str) -> Message {
    Message::Notification(Notification {
        method: "notifications/cancelled".into(),
        params: Some(to_raw(&json!({"requestId": id, "reason": reason}))),
    })
}

/// Whether a failed send lost a request that may have reached the server:
/// the connection broke after it was made (not a refused connection, not a
/// request that could not be built).
fn lost_in_flight(e: &Error) -> bool {
    let Error::Transport {
        source: Some(source),
        ..
    } = e
    else {
        return false;
    };
    source
        .downcast_ref::<reqwest::Error>()
        .is_some_and(|e| e.is_request() && !e.is_connect() && !e.is_builder() && !e.is_timeout())
}

fn notification(method: &str, params: &Value) -> Message {
    Message::Notification(Notification {
        method: method.into(),
        params: Some(to_raw(params)),
    })
}

/// How one attempt at a request ended.
enum Attempt<R> {
    /// With a result or a failure other than a lost session.
    Answered(Result<R>),
    /// The server answered 404 in the session the request went out in.
    /// `delivered`: the request reached the server (the 404 came while
    /// resuming its response stream), so it may have run.
    SessionGone { session: String, delivered: bool },
    /// The request reached the server and its response stream broke
    /// before the response (the 2026-07-28 era re-issues it).
    Broken(Error),
}

impl Client {
    /// Connects to an MCP server over Streamable HTTP and completes the
    /// handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the handshake (`initialize`, then
    /// `notifications/initialized`) takes longer than `connect_timeout`,
    /// [`Error::VersionMismatch`] if the server chooses a revision this
    /// client does not speak, [`Error::Protocol`] if it issues a session id
    /// that is not visible ASCII, [`Error::Transport`] or [`Error::Http`] if
    /// it cannot be reached.
    pub async fn connect_http(url: &str, options: ClientOptions) -> Result<Client> {
        let router = Arc::new(Router::new(options.clone()));
        let transport = HttpTransport::new(url, None, router.clone(), &options)?;
        let client = Client::with(Arc::new(transport), router, options, Some(url.to_string()));
        client.start().await?;
        Ok(client)
    }

    /// Continues session `session_id` at `url`, as another process or a new
    /// connection, without a new handshake: the session keeps its state.
    /// If the session is gone, the first request finds out (404) and, by the
    /// client's [`ReinitPolicy`], starts a new one.
    ///
    /// Requests carry `MCP-Protocol-Version` 2025-11-25 (the latest this
    /// client speaks), whatever the session negotiated: nothing in the
    /// protocol tells a resuming client the session's revision. Servers that
    /// hold requests to the negotiated revision need
    /// [`resume_http_as`](Self::resume_http_as) with the revision
    /// [`protocol_version`](Self::protocol_version) reported when the
    /// session started.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] for an invalid URL, [`Error::InvalidArgument`]
    /// for a session id that is not visible ASCII.
    pub async fn resume_http(
        url: &str,
        session_id: &str,
        options: ClientOptions,
    ) -> Result<Client> {
        Client::resume_http_as(url, session_id, LATEST_PROTOCOL_VERSION, options).await
    }

    /// As [`resume_http`](Self::resume_http), for a session that negotiated
    /// `protocol_version`.
    ///
    /// # Errors
    ///
    /// As [`resume_http`](Self::resume_http), and
    /// [`Error::InvalidArgument`] for a revision this client does not speak.
    pub async fn resume_http_as(
        url: &str,
        session_id: &str,
        protocol_version: &str,
        options: ClientOptions,
    ) -> Result<Client> {
        if !is_supported(protocol_version) {
            return Err(Error::InvalidArgument(format!(
                "protocol version {protocol_version:?}; this client speaks {SUPPORTED_PROTOCOL_VERSIONS:?}"
            )));
        }
        let router = Arc::new(Router::new(options.clone()));
        let transport =
            HttpTransport::new(url, Some(session_id.to_string()), router.clone(), &options)?;
        let client = Client::with(Arc::new(transport), router, options, None);
        *client.inner.protocol_version.write() = Some(protocol_version.to_string());
        client
            .inner
            .transport
            .established(protocol_version, client.inner.options.listen)
            .await;
        Ok(client)
    }

    /// Starts `command` (program and arguments, split like a shell would) and
    /// speaks MCP over its stdin and stdout.
    ///
    /// # Errors
    ///
    /// As [`connect_http`](Self::connect_http), and [`Error::Transport`] if
    /// the process cannot be started.
    pub async fn connect_stdio(command: &str, options: ClientOptions) -> Result<Client> {
        let router = Arc::new(Router::new(options.clone()));
        let transport = StdioTransport::spawn(command, router.clone())?;
        let client = Client::with(Arc::new(transport), router, options, None);
        client.start().await?;
        Ok(client)
    }

    fn with(
        transport: Arc<dyn Transport>,
        router: Arc<Router>,
        options: ClientOptions,
        era_key: Option<String>,
    ) -> Client {
        router.set_transport(Arc::downgrade(&transport));
        let inner = Arc::new(Inner {
            transport,
            router: router.clone(),
            options,
            server: RwLock::new(None),
            protocol_version: RwLock::new(None),
            next_id: AtomicI64::new(0),
            gate: tokio::sync::RwLock::new(()),
            broken: AtomicBool::new(false),
            modern: RwLock::new(None),
            tool_headers: RwLock::new(HashMap::new()),
            era_key,
        });
        // The GET stream found the session gone: recover as a request would.
        let weak = Arc::downgrade(&inner);
        router.on_session_lost(Box::new(move |session| {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let client = Client { inner };
            tokio::spawn(async move {
                if let Err(e) = client.reinitialize(Some(session)).await {
                    client.inner.emit(ClientEvent::ListenFailed {
                        reason: format!(
                            "the session is gone and a new one could not be started: {e}"
                        ),
                    });
                }
            });
        }));
        Client { inner }
    }

    /// The session id the server issued, if any.
    pub fn session_id(&self) -> Option<String> {
        self.inner.transport.session_id()
    }

    /// The protocol revision requests carry: the negotiated one, or for a
    /// resumed session the one it was resumed with.
    pub fn protocol_version(&self) -> Option<String> {
        self.inner.protocol_version.read().clone()
    }

    /// What the server said in `initialize`; `None` for a resumed session
    /// until a new handshake happens.
    pub fn server(&self) -> Option<ServerDetails> {
        self.inner.server.read().clone()
    }

    /// `initialize`, then `notifications/initialized`, within
    /// `connect_timeout` as a whole.
    async fn handshake(&self) -> Result<()> {
        let options = &self.inner.options;
        let started = tokio::time::Instant::now();
        let budget = options.connect_timeout;
        let params = InitializeParams {
            protocol_version: LATEST_PROTOCOL_VERSION.into(),
            capabilities: Some(RawJson::from_value(&options.capabilities)),
            client_info: serde_json::value::to_raw_value(&options.client_info)
                .ok()
                .map(RawJson::from),
        };
        let request = RequestOptions::default().timeout(budget);
        let result: InitializeResult = match self
            .attempt("initialize", &params, &request, false, HeaderMap::new())
            .await
        {
            Attempt::Answered(result) => result?,
            Attempt::Broken(error) => return Err(error),
            Attempt::SessionGone { session, .. } => {
                return Err(Error::SessionNotFound { session });
            }
        };
        if !is_supported(&result.protocol_version) {
            let left = budget.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, self.inner.transport.close(true)).await;
            return Err(Error::VersionMismatch {
                server: result.protocol_version,
                supported: SUPPORTED_PROTOCOL_VERSIONS,
            });
        }
        *self.inner.server.write() = Some(ServerDetails {
            protocol_version: result.protocol_version.clone(),
            capabilities: result.capabilities,
            server_info: result.server_info,
            instructions: result.instructions,
        });
        *self.inner.protocol_version.write() = Some(result.protocol_version.clone());
        self.inner
            .transport
            .established(&result.protocol_version, false)
            .await;
        let initialized = self.inner.transport.send(
            notification("notifications/initialized", &Value::Object(Map::new())),
            HeaderMap::new(),
        );
        let left = budget.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, initialized).await {
            Ok(sent) => sent?,
            Err(_) => {
                return Err(Error::Timeout {
                    method: "notifications/initialized".into(),
                    after: started.elapsed(),
                });
            }
        }
        self.inner
            .transport
            .established(&result.protocol_version, options.listen)
            .await;
        Ok(())
    }

    /// Starts a new session after the server lost `gone` (unless another
    /// caller already did). Holds the gate: requests wait meanwhile.
    async fn reinitialize(&self, gone: Option<String>) -> Result<()> {
        let _closed = self.inner.gate.write().await;
        if !self.inner.broken.load(Ordering::Acquire) && self.session_id() != gone {
            return Ok(()); // someone else already replaced it
        }
        self.inner.transport.reset_session();
        if let Err(e) = self.handshake().await {
            self.inner.broken.store(true, Ordering::Release);
            return Err(e);
        }
        self.inner.broken.store(false, Ordering::Release);
        let new = self.session_id();
        tracing::info!(?gone, ?new, "the session was gone; started a new one");
        self.inner
            .emit(ClientEvent::SessionReplaced { old: gone, new });
        Ok(())
    }

    /// Sends a notification, within the request timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Transport`], [`Error::Http`],
    /// [`Error::SessionNotFound`] (a notification starts no new session).
    pub async fn notify(&self, method: &str, params: Value) -> Result<()> {
        let bound = self.inner.options.request_timeout;
        let sent = tokio::time::timeout(bound, async {
            let sending = {
                let _open = self.inner.gate.read().await;
                self.inner
                    .transport
                    .send(notification(method, &params), HeaderMap::new())
            };
            sending.await
        });
        sent.await.map_err(|_| Error::Timeout {
            method: method.into(),
            after: bound,
        })?
    }

    /// Sends a request and decodes its result, recovering from a lost
    /// session by the client's [`ReinitPolicy`].
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] for the server's JSON-RPC error (whatever its code),
    /// [`Error::Timeout`] (after sending `notifications/cancelled`),
    /// [`Error::SessionNotFound`] by the policy, [`Error::Transport`] when
    /// the connection or a response stream broke, [`Error::Protocol`] for a
    /// malformed answer, [`Error::Closed`] after
    /// [`close`](Self::close) or [`disconnect`](Self::disconnect).
    pub async fn request<P, R>(
        &self,
        method: &str,
        params: &P,
        options: RequestOptions,
    ) -> Result<R>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        if self.inner.modern.read().is_some() {
            let params = serde_json::to_value(params).map_err(|e| {
                Error::Protocol(format!("cannot encode the parameters of {method}: {e}"))
            })?;
            let value = self.modern_value(method, params, &options).await?;
            return serde_json::from_value(value)
                .map_err(|e| Error::Protocol(format!("a malformed result of {method}: {e}")));
        }
        if self.inner.broken.load(Ordering::Acquire) {
            self.reinitialize(self.session_id()).await?;
        }
        let (session, delivered) = match self
            .attempt(method, params, &options, true, HeaderMap::new())
            .await
        {
            Attempt::Answered(result) => return result,
            Attempt::Broken(error) => return Err(error),
            Attempt::SessionGone { session, delivered } => (session, delivered),
        };
        let policy = self.inner.options.reinit;
        if policy == ReinitPolicy::Surface {
            return Err(Error::SessionNotFound { session });
        }
        self.reinitialize(Some(session.clone())).await?;
        if policy != ReinitPolicy::RetryOnce || delivered {
            return Err(Error::SessionNotFound { session });
        }
        match self
            .attempt(method, params, &options, true, HeaderMap::new())
            .await
        {
            Attempt::Answered(result) => result,
            Attempt::Broken(error) => Err(error),
            Attempt::SessionGone { session, .. } => Err(Error::SessionNotFound { session }),
        }
    }

    /// One try at a request. `gated`: wait for a new handshake in progress
    /// (every request but the handshake's own). `headers` go with it over
    /// HTTP.
    async fn attempt<P, R>(
        &self,
        method: &str,
        params: &P,
        options: &RequestOptions,
        gated: bool,
        headers: HeaderMap,
    ) -> Attempt<R>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let inner = &self.inner;
        let id = RequestId::Number(inner.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let mut params = match serde_json::to_value(params) {
            Ok(params) => params,
            Err(e) => {
                return Attempt::Answered(Err(Error::Protocol(format!(
                    "cannot encode the parameters of {method}: {e}"
                ))));
            }
        };
        let progress = options.on_progress.clone().map(|handler| {
            if let Value::Object(map) = &mut params {
                let meta = map.entry("_meta").or_insert_with(|| json!({}));
                meta["progressToken"] = json!(id);
            }
            (handler, Arc::new(Notify::new()))
        });
        let progressed = progress.as_ref().map(|(_, n)| n.clone());
        let answer = inner.router.wait_for(id.clone(), progress);
        let pending = Pending {
            inner: inner.clone(),
            id: id.clone(),
            sent: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            cancellable: method != "initialize",
        };
        let message = Message::Request(Request {
            id: id.clone(),
            method: method.into(),
            params: Some(to_raw(&params)),
        });
        // The timeout covers waiting for a new handshake and sending too:
        // over HTTP a JSON answer arrives while the POST is in progress.
        let send = async {
            let sending = if gated {
                let _open = inner.gate.read().await;
                inner.transport.send(message, headers)
            } else {
                inner.transport.send(message, headers)
            };
            pending.sent.store(true, Ordering::Release);
            sending.await
        };
        let timeout = options.timeout.unwrap_or(inner.options.request_timeout);
        let started = tokio::time::Instant::now();
        let hard_limit = started
            + if options.reset_timeout_on_progress {
                options.max_total_timeout.unwrap_or(timeout * 10)
            } else {
                timeout
            };
        let mut deadline = started + timeout;
        let mut sent = false;
        tokio::pin!(send);
        tokio::pin!(answer);
        let outcome = loop {
            let progress_arrived = async {
                match &progressed {
                    Some(notify) if options.reset_timeout_on_progress => notify.notified().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut send, if !sent => {
                    sent = true;
                    if let Err(e) = result {
                        pending.finished.store(true, Ordering::Release);
                        inner.router.forget(&id);
                        return match e {
                            Error::SessionNotFound { session } => {
                                Attempt::SessionGone { session, delivered: false }
                            }
                            e if lost_in_flight(&e) => Attempt::Broken(e),
                            e => Attempt::Answered(Err(e)),
                        };
                    }
                }
                outcome = &mut answer => break outcome,
                () = tokio::time::sleep_until(deadline.min(hard_limit)) => {
                    pending.finished.store(true, Ordering::Release);
                    inner.router.forget(&id);
                    // The protocol forbids cancelling `initialize`.
                    if pending.cancellable && pending.sent.load(Ordering::Acquire) {
                        inner.cancel_later(&id, "timeout");
                    }
                    return Attempt::Answered(Err(Error::Timeout {
                        method: method.into(),
                        after: started.elapsed(),
                    }));
                }
                () = progress_arrived => deadline = tokio::time::Instant::now() + timeout,
            }
        };
        pending.finished.store(true, Ordering::Release);
        let raw = match outcome {
            Ok(Ok(raw)) => raw,
            Ok(Err(Failure::Server(error))) => {
                return Attempt::Answered(Err(Error::Rpc {
                    method: method.into(),
                    error,
                }));
            }
            Ok(Err(Failure::Local(Error::SessionNotFound { session }))) => {
                return Attempt::SessionGone {
                    session,
                    delivered: true,
                };
            }
            Ok(Err(Failure::Local(error @ Error::Transport { .. }))) => {
                return Attempt::Broken(error);
            }
            Ok(Err(Failure::Local(error))) => return Attempt::Answered(Err(error)),
            Err(_) => return Attempt::Answered(Err(Error::Closed)),
        };
        Attempt::Answered(
            serde_json::from_str(raw.get())
                .map_err(|e| Error::Protocol(format!("a malformed result of {method}: {e}"))),
        )
    }

    /// Ends the session (HTTP DELETE within the request timeout; a 404 or
    /// 405 is accepted) or, over stdio, shuts the server down (stdin
    /// closed, then SIGTERM, then SIGKILL, each after a bounded wait).
    /// Requests still waiting fail with [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// [`Error::Http`] or [`Error::Transport`] if the DELETE fails,
    /// [`Error::Timeout`] if it gets no answer in time.
    pub async fn close(self) -> Result<()> {
        // Not half-way through a new handshake: end the session it makes.
        let _open = self.inner.gate.read().await;
        self.inner.transport.close(true).await
    }

    /// Stops this client without ending the session: another client can
    /// [`resume`](Self::resume_http) it. Dropping the last clone does the
    /// same. Over stdio this shuts the server down, as there is nothing to
    /// resume.
    pub async fn disconnect(self) {
        let _ = self.inner.transport.close(false).await;
    }

    /// How long requests wait by default.
    pub fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }
}
