//! The client: handshake, requests with timeouts and cancellation, and the
//! session it keeps alive by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use session_core::wire::{
    CallToolResult, GetPromptResult, Implementation, InitializeParams, InitializeResult,
    LATEST_PROTOCOL_VERSION, ListPromptsResult, ListResourcesResult, ListToolsResult, Message,
    Notification, Prompt, ReadResourceResult, Request, RequestId, Resource,
    SESSION_STATE_CAPABILITY, SUPPORTED_PROTOCOL_VERSIONS, SessionStateResult, Tool, code,
    is_supported, to_raw,
};
use tokio::sync::Notify;

use crate::options::{ClientEvent, ClientOptions, ReinitPolicy, RequestOptions};
use crate::router::Router;
use crate::transport::Transport;
use crate::transport::http::HttpTransport;
use crate::transport::stdio::StdioTransport;
use crate::{Error, Result};

/// What the server said in `initialize`.
#[derive(Debug, Clone)]
pub struct ServerDetails {
    /// The negotiated protocol revision.
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
/// [`ClientEvent::SessionReplaced`] and [`Client::session_id`].
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
    next_id: AtomicI64,
    /// Held while a new session is being set up after a 404.
    reinit: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for dyn Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

/// Sends `notifications/cancelled` for a request whose caller stopped
/// waiting (timeout, or the future was dropped), unless disarmed.
struct Pending {
    inner: Arc<Inner>,
    id: RequestId,
    armed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed || !self.inner.router.forget(&self.id) {
            return;
        }
        let (transport, id) = (self.inner.transport.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = transport
                    .send(cancelled(&id, "the caller stopped waiting"))
                    .await;
            });
        }
    }
}

fn cancelled(id: &RequestId, reason: &str) -> Message {
    Message::Notification(Notification {
        method: "notifications/cancelled".into(),
        params: Some(to_raw(&json!({"requestId": id, "reason": reason}))),
    })
}

impl Client {
    /// Connects to an MCP server over Streamable HTTP and completes the
    /// handshake.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the handshake takes longer than
    /// `connect_timeout`, [`Error::VersionMismatch`] if the server chooses a
    /// revision this client does not speak, [`Error::Transport`] or
    /// [`Error::Http`] if it cannot be reached.
    pub async fn connect_http(url: &str, options: ClientOptions) -> Result<Client> {
        let router = Arc::new(Router::new(options.clone()));
        let transport = HttpTransport::new(url, None, router.clone(), &options)?;
        let client = Client::with(Arc::new(transport), router, options);
        client.handshake().await?;
        Ok(client)
    }

    /// Continues session `session_id` at `url`, as another process or a new
    /// connection, without a new handshake: the session keeps its state.
    /// If the session is gone, the first request finds out (404) and, by the
    /// client's [`ReinitPolicy`], starts a new one.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] for an invalid URL.
    pub async fn resume_http(
        url: &str,
        session_id: &str,
        options: ClientOptions,
    ) -> Result<Client> {
        let router = Arc::new(Router::new(options.clone()));
        let transport =
            HttpTransport::new(url, Some(session_id.to_string()), router.clone(), &options)?;
        let client = Client::with(Arc::new(transport), router, options);
        client
            .inner
            .transport
            .established(LATEST_PROTOCOL_VERSION, client.inner.options.listen)
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
        let client = Client::with(Arc::new(transport), router, options);
        client.handshake().await?;
        Ok(client)
    }

    fn with(transport: Arc<dyn Transport>, router: Arc<Router>, options: ClientOptions) -> Client {
        router.set_transport(Arc::downgrade(&transport));
        Client {
            inner: Arc::new(Inner {
                transport,
                router,
                options,
                server: RwLock::new(None),
                next_id: AtomicI64::new(0),
                reinit: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The session id the server issued, if any.
    pub fn session_id(&self) -> Option<String> {
        self.inner.transport.session_id()
    }

    /// What the server said in `initialize`; `None` for a resumed session
    /// until a new handshake happens.
    pub fn server(&self) -> Option<ServerDetails> {
        self.inner.server.read().clone()
    }

    async fn handshake(&self) -> Result<()> {
        let options = &self.inner.options;
        let params = InitializeParams {
            protocol_version: LATEST_PROTOCOL_VERSION.into(),
            capabilities: options.capabilities.clone(),
            client_info: serde_json::to_value(&options.client_info).unwrap_or(Value::Null),
        };
        let request = RequestOptions::default().timeout(options.connect_timeout);
        let result: InitializeResult = self.request_once("initialize", &params, &request).await?;
        if !is_supported(&result.protocol_version) {
            let _ = self.inner.transport.close(true).await;
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
        self.inner
            .transport
            .established(&result.protocol_version, false)
            .await;
        self.notify("notifications/initialized", Value::Object(Map::new()))
            .await?;
        self.inner
            .transport
            .established(&result.protocol_version, options.listen)
            .await;
        Ok(())
    }

    /// Starts a new session after the server lost `old` (unless another
    /// caller already did).
    async fn reinitialize(&self, old: Option<String>) -> Result<()> {
        let _guard = self.inner.reinit.lock().await;
        if self.session_id() != old {
            return Ok(()); // someone else already replaced it
        }
        self.inner.transport.reset_session();
        self.handshake().await?;
        let new = self.session_id();
        tracing::info!(?old, ?new, "the session was gone; started a new one");
        if let Some(handler) = &self.inner.options.on_event {
            handler(&ClientEvent::SessionReplaced { old, new });
        }
        Ok(())
    }

    /// Sends a notification.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`], [`Error::Http`], [`Error::SessionNotFound`].
    pub async fn notify(&self, method: &str, params: Value) -> Result<()> {
        let message = Message::Notification(Notification {
            method: method.into(),
            params: Some(to_raw(&params)),
        });
        self.inner.transport.send(message).await
    }

    /// Sends a request and decodes its result, recovering from a lost
    /// session by the client's [`ReinitPolicy`].
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] for the server's JSON-RPC error, [`Error::Timeout`]
    /// (after sending `notifications/cancelled`), [`Error::SessionNotFound`]
    /// by the policy, and transport failures.
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
        match self.request_once(method, params, &options).await {
            Err(Error::SessionNotFound { session }) => match self.inner.options.reinit {
                ReinitPolicy::Surface => Err(Error::SessionNotFound { session }),
                ReinitPolicy::Reinitialize => {
                    self.reinitialize(Some(session.clone())).await?;
                    Err(Error::SessionNotFound { session })
                }
                ReinitPolicy::RetryOnce => {
                    self.reinitialize(Some(session)).await?;
                    self.request_once(method, params, &options).await
                }
            },
            other => other,
        }
    }

    async fn request_once<P, R>(
        &self,
        method: &str,
        params: &P,
        options: &RequestOptions,
    ) -> Result<R>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let inner = &self.inner;
        let id = RequestId::Number(inner.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let mut params = serde_json::to_value(params).map_err(|e| {
            Error::Protocol(format!("cannot encode the parameters of {method}: {e}"))
        })?;
        let progress = options.on_progress.clone().map(|handler| {
            if let Value::Object(map) = &mut params {
                let meta = map.entry("_meta").or_insert_with(|| json!({}));
                meta["progressToken"] = json!(id);
            }
            (handler, Arc::new(Notify::new()))
        });
        let progressed = progress.as_ref().map(|(_, n)| n.clone());
        let answer = inner.router.wait_for(id.clone(), progress);
        let mut pending = Pending {
            inner: inner.clone(),
            id: id.clone(),
            armed: false,
        };
        let message = Message::Request(Request {
            id: id.clone(),
            method: method.into(),
            params: Some(to_raw(&params)),
        });
        // The timeout covers sending too: over HTTP a JSON answer arrives
        // while the POST is still in progress.
        pending.armed = true;
        let send = inner.transport.send(message);
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
                        pending.armed = false;
                        inner.router.forget(&id);
                        return Err(e);
                    }
                }
                outcome = &mut answer => break outcome,
                () = tokio::time::sleep_until(deadline.min(hard_limit)) => {
                    pending.armed = false;
                    inner.router.forget(&id);
                    let (transport, id) = (inner.transport.clone(), id.clone());
                    tokio::spawn(async move {
                        let _ = transport.send(cancelled(&id, "timeout")).await;
                    });
                    return Err(Error::Timeout { method: method.into(), after: started.elapsed() });
                }
                () = progress_arrived => deadline = tokio::time::Instant::now() + timeout,
            }
        };
        pending.armed = false;
        let raw = match outcome {
            Ok(Ok(raw)) => raw,
            Ok(Err(error)) if error.code == code::SESSION_NOT_FOUND => {
                return Err(Error::SessionNotFound {
                    session: self.session_id().unwrap_or_default(),
                });
            }
            Ok(Err(error)) => {
                return Err(Error::Rpc {
                    method: method.into(),
                    error,
                });
            }
            Err(_) => return Err(Error::Closed),
        };
        serde_json::from_str(raw.get())
            .map_err(|e| Error::Protocol(format!("a malformed result of {method}: {e}")))
    }

    /// `ping`.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn ping(&self) -> Result<()> {
        let _: Value = self
            .request("ping", &json!({}), RequestOptions::default())
            .await?;
        Ok(())
    }

    /// Every tool the server offers (all pages).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn list_tools(&self) -> Result<Vec<Tool>> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let page: ListToolsResult = self
                .request("tools/list", &params, RequestOptions::default())
                .await?;
            tools.extend(page.tools);
            match page.next_cursor {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(tools),
            }
        }
    }

    /// Calls a tool.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request). A tool that fails returns `Ok` with
    /// `is_error: Some(true)`.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<CallToolResult> {
        self.call_tool_with(name, arguments, RequestOptions::default())
            .await
    }

    /// Calls a tool with per-request options (timeout, progress).
    ///
    /// # Errors
    ///
    /// As [`call_tool`](Self::call_tool).
    pub async fn call_tool_with(
        &self,
        name: &str,
        arguments: Value,
        options: RequestOptions,
    ) -> Result<CallToolResult> {
        self.request(
            "tools/call",
            &json!({"name": name, "arguments": arguments}),
            options,
        )
        .await
    }

    /// Every resource the server offers (first page).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn list_resources(&self) -> Result<Vec<Resource>> {
        let page: ListResourcesResult = self
            .request("resources/list", &json!({}), RequestOptions::default())
            .await?;
        Ok(page.resources)
    }

    /// Reads a resource.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
        self.request(
            "resources/read",
            &json!({"uri": uri}),
            RequestOptions::default(),
        )
        .await
    }

    /// Every prompt the server offers (first page).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>> {
        let page: ListPromptsResult = self
            .request("prompts/list", &json!({}), RequestOptions::default())
            .await?;
        Ok(page.prompts)
    }

    /// Gets a prompt.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: Map<String, Value>,
    ) -> Result<GetPromptResult> {
        self.request(
            "prompts/get",
            &json!({"name": name, "arguments": arguments}),
            RequestOptions::default(),
        )
        .await
    }

    fn check_session_state(&self) -> Result<()> {
        // Unknown capabilities (a resumed session): try, the server says.
        let Some(server) = self.server() else {
            return Ok(());
        };
        if server.capabilities["experimental"][SESSION_STATE_CAPABILITY].is_object() {
            Ok(())
        } else {
            Err(Error::Unsupported(
                "the session-state extension (session/get)".into(),
            ))
        }
    }

    /// The session's state, through the server's session-state extension.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the server does not advertise
    /// `capabilities.experimental.sessionState`; as
    /// [`request`](Self::request).
    pub async fn session_state(&self) -> Result<SessionStateResult> {
        self.check_session_state()?;
        self.request("session/get", &json!({}), RequestOptions::default())
            .await
    }

    /// Merges `patch` into the session's state (a `null` removes a key).
    ///
    /// # Errors
    ///
    /// As [`session_state`](Self::session_state).
    pub async fn update_session_state(
        &self,
        patch: Map<String, Value>,
    ) -> Result<SessionStateResult> {
        self.check_session_state()?;
        self.request(
            "session/update",
            &json!({"state": patch}),
            RequestOptions::default(),
        )
        .await
    }

    /// Ends the session (HTTP DELETE; a 405 is accepted) or, over stdio,
    /// shuts the server down (stdin closed, then SIGTERM, then SIGKILL).
    ///
    /// # Errors
    ///
    /// [`Error::Http`] or [`Error::Transport`] if the DELETE fails.
    pub async fn close(self) -> Result<()> {
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
