//! The server: what it offers, its sessions, and the background work that
//! keeps them tidy.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use session_core::wire::{
    CallToolResult, GetPromptResult, Implementation, LoggingLevel, Prompt, ReadResourceResult,
    RequestId, Resource, ResourceTemplate, Tool,
};
use session_core::{
    EventStore, ManagerConfig, SessionHook, SessionId, SessionManager, SessionRecord, SessionStore,
};
use session_store::{MemoryEventStore, MemoryStore, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::context::Pending;
use crate::hub::Hub;
use crate::registry::{HandlerResult, Registry};
use crate::{RequestContext, ServerConfig};

/// An MCP server: tools, resources and prompts, over durable sessions.
///
/// Build one with [`McpServer::builder`], then serve it with
/// [`McpServer::serve_http`] or [`McpServer::serve_stdio`]. Cloning is cheap;
/// clones share everything.
#[derive(Debug, Clone)]
pub struct McpServer {
    pub(crate) shared: Arc<Shared>,
}

/// State shared by every transport and task of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) info: Implementation,
    pub(crate) instructions: Option<String>,
    pub(crate) registry: Registry,
    pub(crate) manager: Arc<SessionManager>,
    pub(crate) hub: Hub,
    pub(crate) inflight: InFlight,
    pub(crate) levels: Mutex<foldhash::HashMap<SessionId, LoggingLevel>>,
    /// Resource URIs each session subscribed to on this process.
    pub(crate) subscriptions:
        Mutex<foldhash::HashMap<SessionId, std::collections::BTreeSet<String>>>,
    pub(crate) pending: Arc<Pending>,
    /// `initialize` results by revision, serialized once.
    pub(crate) initialize_results:
        std::sync::OnceLock<Vec<(&'static str, Box<serde_json::value::RawValue>)>>,
    pub(crate) config: ServerConfig,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
}

/// Requests being handled on this process, by session and request id, with
/// the token that cancels each.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    map: Mutex<foldhash::HashMap<(SessionId, RequestId), CancellationToken>>,
}

impl InFlight {
    /// Registers a request; the returned guard unregisters it when dropped.
    /// `None` if a request with that id is already in flight in the session.
    pub(crate) fn start(
        &self,
        session: &SessionId,
        request: &RequestId,
    ) -> Option<InFlightGuard<'_>> {
        let token = CancellationToken::new();
        let key = (session.clone(), request.clone());
        match self.map.lock().entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => return None,
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(token.clone()),
        };
        Some(InFlightGuard {
            owner: self,
            key,
            token,
        })
    }

    /// Cancels one request; whether it was in flight here.
    pub(crate) fn cancel(&self, session: &SessionId, request: &RequestId) -> bool {
        let key = (session.clone(), request.clone());
        self.map
            .lock()
            .get(&key)
            .map(CancellationToken::cancel)
            .is_some()
    }

    /// Cancels every request of a session.
    pub(crate) fn cancel_session(&self, session: &SessionId) {
        for ((s, _), token) in self.map.lock().iter() {
            if s == session {
                token.cancel();
            }
        }
    }

    /// Cancels everything.
    pub(crate) fn cancel_all(&self) {
        for token in self.map.lock().values() {
            token.cancel();
        }
    }

    /// Sessions with a request in flight.
    pub(crate) fn busy_sessions(&self) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = self.map.lock().keys().map(|(s, _)| s.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Unregisters an in-flight request when dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard<'a> {
    owner: &'a InFlight,
    key: (SessionId, RequestId),
    pub(crate) token: CancellationToken,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.owner.map.lock().remove(&self.key);
    }
}

/// Releases what a session holds on this process when it ends: its open
/// streams, its requests in flight, its buffered events.
#[derive(Debug)]
struct Release(std::sync::Weak<Shared>);

impl Release {
    fn release(&self, record: &SessionRecord) {
        if let Some(shared) = self.0.upgrade() {
            shared.release(record.id());
        }
    }
}

impl SessionHook for Release {
    fn on_closed(&self, record: &SessionRecord) {
        self.release(record);
    }

    fn on_expired(&self, record: &SessionRecord) {
        self.release(record);
    }
}

impl Shared {
    /// Drops everything this process holds for `session`.
    pub(crate) fn release(&self, session: &SessionId) {
        self.hub.drop_session(session);
        self.inflight.cancel_session(session);
        self.levels.lock().remove(session);
        self.subscriptions.lock().remove(session);
        // Even with no stream here, the store may hold events of it: from
        // before a restart, or from another replica; the store tells.
        if !self.hub.events().may_hold(session) {
            return;
        }
        let events = self.hub.events().clone();
        let session = session.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = events.remove_session(&session).await {
                    tracing::warn!(%session, "cannot drop the session's events: {e}");
                }
            });
        }
    }

    pub(crate) fn log_level(&self, session: &SessionId) -> LoggingLevel {
        self.levels
            .lock()
            .get(session)
            .copied()
            .unwrap_or(LoggingLevel::Debug)
    }

    /// One round of upkeep: keep sessions with requests in flight alive,
    /// expire idle ones (hooks release what they hold).
    pub(crate) async fn upkeep(&self) {
        for id in self.inflight.busy_sessions() {
            // A long request must not lose its session to idle expiry.
            let _ = self.manager.touch(&id).await;
        }
        match self.manager.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "swept expired sessions"),
            Err(e) => tracing::warn!("sweeping expired sessions failed: {e}"),
        }
        // Streams of sessions ended elsewhere (another replica), or past
        // their deadline, end here too. An open stream is not activity: it
        // is read without touching the session.
        let now = self.manager.clock().now();
        for id in self.hub.sessions() {
            let live = match self.manager.store().load(&id).await {
                Ok(Some(record)) => !record.status_at(now).is_terminal(),
                Ok(None) => false,
                Err(_) => true, // a store failure is not a verdict
            };
            if !live {
                self.release(&id);
            }
        }
    }
}

impl McpServer {
    /// Starts building a server.
    pub fn builder() -> McpServerBuilder {
        McpServerBuilder::default()
    }

    /// The session manager behind the server.
    pub fn sessions(&self) -> &Arc<SessionManager> {
        &self.shared.manager
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Requests being handled right now.
    pub fn requests_in_flight(&self) -> usize {
        self.shared.inflight.len()
    }

    /// Tells every session subscribed to `uri` (`resources/subscribe`) that
    /// the resource changed: a `notifications/resources/updated` on the
    /// session's GET stream (stored for resumption like any event). Returns
    /// how many sessions were told.
    ///
    /// Subscriptions are held by the process that received them, like log
    /// levels; with replicas, call this on each.
    pub async fn notify_resource_updated(&self, uri: &str) -> usize {
        let sessions: Vec<SessionId> = self
            .shared
            .subscriptions
            .lock()
            .iter()
            .filter(|(_, uris)| uris.contains(uri))
            .map(|(session, _)| session.clone())
            .collect();
        let note = session_core::wire::Message::Notification(session_core::wire::Notification {
            method: "notifications/resources/updated".into(),
            params: Some(session_core::wire::to_raw(
                &serde_json::json!({ "uri": uri }),
            )),
        });
        let data: Arc<str> = Arc::from(note.to_json());
        for session in &sessions {
            if let Err(e) = self
                .shared
                .hub
                .publish(session, &session_core::StreamId::standalone(), data.clone())
                .await
            {
                tracing::warn!(%session, "cannot store a resource update: {e}");
            }
        }
        sessions.len()
    }

    /// Starts the background sweeper: every `sweep_interval` it expires idle
    /// sessions and releases what they held. Stops at [`McpServer::shutdown`].
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // The first round comes one interval after start, not at once:
            // a restart serves its first requests before it clears what
            // expired while it was down (which reads as expired anyway).
            let period = shared.config.sweep_interval;
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => shared.upkeep().await,
                    () = shared.shutdown.cancelled() => break,
                }
            }
        })
    }

    /// Shuts down: the sweeper stops, idle streams (GET) end, requests in
    /// flight get up to `grace` to finish and send their responses, and
    /// those still running then are cancelled.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        self.drain(grace).await;
    }

    /// The first step of [`shutdown`](Self::shutdown): new requests are
    /// refused (503), the sweeper stops, idle streams end.
    pub(crate) fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.hub.close_idle();
    }

    /// The rest of [`shutdown`](Self::shutdown): requests in flight get
    /// `grace` to finish, then are cancelled; every stream ends.
    pub(crate) async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.inflight.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.inflight.cancel_all();
        // Let cancelled requests unwind and their streams flush.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.shared.hub.close_all();
    }
}

/// Builds an [`McpServer`].
///
/// ```
/// use mcp_server::{McpServer, tool};
/// use session_core::wire::CallToolResult;
///
/// let server = McpServer::builder()
///     .name("example")
///     .typed_tool(
///         tool("shout", "Repeats the text in capitals", serde_json::json!({
///             "type": "object",
///             "properties": {"text": {"type": "string"}},
///             "required": ["text"]
///         })),
///         |_ctx, args: serde_json::Map<String, serde_json::Value>| async move {
///             let text = args["text"].as_str().unwrap_or_default().to_uppercase();
///             Ok(CallToolResult::text(text))
///         },
///     )
///     .build();
/// # let _ = server;
/// ```
#[derive(Debug, Default)]
pub struct McpServerBuilder {
    name: Option<String>,
    version: Option<String>,
    instructions: Option<String>,
    registry: Registry,
    store: Option<Arc<dyn SessionStore>>,
    events: Option<Arc<dyn EventStore>>,
    config: ServerConfig,
}

impl McpServerBuilder {
    /// The name in `serverInfo` (default: `mcp-server`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The version in `serverInfo` (default: this crate's version).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Instructions for the model, sent in the `initialize` result.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// The session store (default: a [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The event store for resumable streams (default: a
    /// [`MemoryEventStore`] sized by the config).
    pub fn event_store(mut self, events: Arc<dyn EventStore>) -> Self {
        self.events = Some(events);
        self
    }

    /// The settings.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a tool whose handler takes the raw arguments object.
    pub fn tool<F, Fut>(mut self, tool: Tool, handler: F) -> Self
    where
        F: Fn(RequestContext, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<CallToolResult>> + Send + 'static,
    {
        self.registry.add_tool(tool, handler);
        self
    }

    /// Adds a tool whose arguments are deserialized into `A`; arguments that
    /// do not fit are answered with a tool error (`isError: true`) naming
    /// what is wrong, so the model can correct itself.
    pub fn typed_tool<A, F, Fut>(mut self, tool: Tool, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(RequestContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<CallToolResult>> + Send + 'static,
    {
        self.registry.add_typed_tool(tool, handler);
        self
    }

    /// Adds a resource with a fixed URI.
    pub fn resource<F, Fut>(mut self, resource: Resource, handler: F) -> Self
    where
        F: Fn(RequestContext, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<ReadResourceResult>> + Send + 'static,
    {
        self.registry.add_resource(resource, handler);
        self
    }

    /// Adds a family of resources by URI template (`{name}` matches one path
    /// segment); the handler gets the URI and the template's variables.
    pub fn resource_template<F, Fut>(mut self, template: ResourceTemplate, handler: F) -> Self
    where
        F: Fn(RequestContext, String, HashMap<String, String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<ReadResourceResult>> + Send + 'static,
    {
        self.registry.add_template(template, handler);
        self
    }

    /// Adds a prompt.
    pub fn prompt<F, Fut>(mut self, prompt: Prompt, handler: F) -> Self
    where
        F: Fn(RequestContext, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<GetPromptResult>> + Send + 'static,
    {
        self.registry.add_prompt(prompt, handler);
        self
    }

    /// Adds a prompt whose arguments are read into `A`; arguments that do
    /// not fit are answered with an invalid-params error naming the problem.
    pub fn typed_prompt<A, F, Fut>(mut self, prompt: Prompt, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(RequestContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<GetPromptResult>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.registry.add_prompt(prompt, move |ctx, args| {
            let handler = handler.clone();
            async move {
                let args: A = serde_json::from_value(Value::Object(args)).map_err(|e| {
                    session_core::wire::ErrorObject::new(
                        session_core::wire::code::INVALID_PARAMS,
                        format!("Invalid prompt arguments: {e}"),
                    )
                })?;
                handler(ctx, args).await
            }
        });
        self
    }

    /// Answers `completion/complete` with `handler`, which gets the request's
    /// params (`ref`, `argument`, `context`) and returns the whole result
    /// (`{"completion": {"values": [...], ...}}`). The server announces the
    /// `completions` capability only when a handler is set.
    pub fn completion<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(RequestContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<Value>> + Send + 'static,
    {
        self.registry.set_completion(handler);
        self
    }

    /// Builds the server.
    pub fn build(self) -> McpServer {
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>);
        let events = self.events.unwrap_or_else(|| {
            Arc::new(MemoryEventStore::new(
                self.config.events_per_stream,
                self.config.streams_per_session,
            ))
        });
        let manager = Arc::new(SessionManager::new(
            store,
            Arc::new(SystemClock),
            self.config.sessions.clone(),
        ));
        let shared = Arc::new(Shared {
            info: Implementation {
                name: self.name.unwrap_or_else(|| "mcp-server".into()),
                version: self
                    .version
                    .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
                title: None,
            },
            instructions: self.instructions,
            registry: self.registry,
            manager: manager.clone(),
            hub: Hub::new(events),
            inflight: InFlight::default(),
            levels: Mutex::default(),
            subscriptions: Mutex::default(),
            pending: Arc::default(),
            initialize_results: std::sync::OnceLock::new(),
            config: self.config,
            shutdown: CancellationToken::new(),
        });
        let _ = shared.initialize_results.set(shared.initialize_results());
        manager.add_hook(Arc::new(Release(Arc::downgrade(&shared))));
        McpServer { shared }
    }
}

/// A tool definition: name, description and JSON Schema of the arguments.
pub fn tool(name: &str, description: &str, input_schema: Value) -> Tool {
    Tool {
        name: name.into(),
        title: None,
        description: Some(description.into()),
        input_schema,
        output_schema: None,
        annotations: None,
    }
}

impl ServerConfig {
    /// The session manager's settings.
    pub fn sessions(&self) -> &ManagerConfig {
        &self.sessions
    }
}
