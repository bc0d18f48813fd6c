//! The server: what it offers, its sessions, and the background work that
//! keeps them tidy.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use session_core::wire::{
    CallToolResult, GetPromptResult, Implementation, Prompt, ReadResourceResult, Resource,
    ResourceTemplate, Tool,
};
use session_core::{
    EventStore, Handles, ManagerConfig, SessionHook, SessionManager, SessionRecord, SessionStore,
    Tasks,
};
use session_store::{MemoryEventStore, MemoryStore, SystemClock};

use crate::TaskSupport;
use crate::dispatch::{Change, Dispatcher, LeaseHook, Parts};
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
    pub(crate) dispatcher: Arc<Dispatcher>,
}

/// Releases what a session holds on this process when it ends: its open
/// streams, its requests in flight, its buffered events.
#[derive(Debug)]
struct Release(std::sync::Weak<Dispatcher>);

impl Release {
    fn release(&self, record: &SessionRecord) {
        if let Some(dispatcher) = self.0.upgrade() {
            dispatcher.release(record.id());
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

impl McpServer {
    /// Starts building a server.
    pub fn builder() -> McpServerBuilder {
        McpServerBuilder::default()
    }

    /// The session manager behind the server (legacy sessions).
    pub fn sessions(&self) -> &Arc<SessionManager> {
        self.dispatcher.manager()
    }

    /// The handles tools mint and use (SEP-2567), in their own store.
    pub fn handles(&self) -> &Arc<Handles> {
        self.dispatcher.handles()
    }

    /// How many tasks run on this process now (their handlers working in
    /// the background).
    pub fn tasks_running(&self) -> usize {
        self.dispatcher.tasks_running()
    }

    /// The server's durable tasks (the `io.modelcontextprotocol/tasks`
    /// extension), in the task store.
    pub fn tasks(&self) -> &Arc<Tasks> {
        self.dispatcher.tasks()
    }

    /// The server's settings.
    pub fn config(&self) -> &ServerConfig {
        self.dispatcher.config()
    }

    /// Requests being handled right now.
    pub fn requests_in_flight(&self) -> usize {
        self.dispatcher.requests_in_flight()
    }

    /// `subscriptions/listen` streams open on this process.
    pub fn listen_streams(&self) -> usize {
        self.dispatcher.listeners().len()
    }

    /// Tells clients that the resource at `uri` changed: legacy sessions
    /// subscribed to it (`resources/subscribe`) get a
    /// `notifications/resources/updated` on their GET stream (stored for
    /// resumption like any event), and `subscriptions/listen` streams that
    /// asked for it get one too, on every replica sharing the store.
    /// Returns how many sessions and streams on this process were told.
    ///
    /// Legacy subscriptions are held by the process that received them,
    /// like log levels; with replicas, call this on each (listen streams
    /// hear of it everywhere from one call).
    pub async fn notify_resource_updated(&self, uri: &str) -> usize {
        let sessions = self.dispatcher.tell_subscribed_sessions(uri).await;
        let change = Change::ResourceUpdated { uri: uri.into() };
        sessions + self.announce(change).await
    }

    /// Tells `subscriptions/listen` streams that opted in, on every replica
    /// sharing the store, that the tool list changed. Returns how many
    /// streams on this process were told.
    pub async fn notify_tools_list_changed(&self) -> usize {
        self.announce(Change::ToolsListChanged).await
    }

    /// As [`notify_tools_list_changed`](Self::notify_tools_list_changed),
    /// for the prompt list.
    pub async fn notify_prompts_list_changed(&self) -> usize {
        self.announce(Change::PromptsListChanged).await
    }

    /// As [`notify_tools_list_changed`](Self::notify_tools_list_changed),
    /// for the resource list.
    pub async fn notify_resources_list_changed(&self) -> usize {
        self.announce(Change::ResourcesListChanged).await
    }

    async fn announce(&self, change: Change) -> usize {
        let events = self.dispatcher.hub().events().clone();
        self.dispatcher.listeners().announce(&events, change).await
    }

    /// Starts the background work: every `sweep_interval` the sweeper
    /// expires idle sessions and handles and releases what they held, every
    /// third of the task lease it sweeps the task store (failing or
    /// re-running tasks whose worker was lost), and a
    /// follower delivers the changes other replicas announce to this
    /// process's listeners. Both stop at [`McpServer::shutdown`].
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let dispatcher = self.dispatcher.clone();
        tokio::spawn(async move {
            let stop = dispatcher.shutdown_token().clone();
            let follower = {
                let dispatcher = dispatcher.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let events = dispatcher.hub().events().clone();
                    let heard = |change: &Change| dispatcher.heard(change);
                    dispatcher.listeners().follow(events, stop, &heard).await;
                })
            };
            // The first round comes one interval after start, not at once:
            // a restart serves its first requests before it clears what
            // expired while it was down (which reads as expired anyway).
            let period = dispatcher.config().sweep_interval;
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Tasks are swept more often: a lapsed lease (a lost worker) is
            // seen within a third of the lease.
            let config = dispatcher.config();
            let every = (config.task_lease / 3)
                .min(period)
                .max(std::time::Duration::from_millis(10));
            let mut tasks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tasks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => dispatcher.upkeep().await,
                    _ = tasks.tick() => dispatcher.sweep_tasks().await,
                    () = stop.cancelled() => break,
                }
            }
            follower.abort();
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
    /// refused (503), the sweeper stops, idle streams end, listen streams
    /// are answered and end.
    pub(crate) fn begin_shutdown(&self) {
        self.dispatcher.shutdown_token().cancel();
        self.dispatcher.hub().close_idle();
    }

    /// The rest of [`shutdown`](Self::shutdown): requests in flight get
    /// `grace` to finish, then are cancelled; every stream ends.
    pub(crate) async fn drain(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.dispatcher.requests_in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.dispatcher.cancel_all();
        // Let cancelled requests unwind and their streams flush.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.dispatcher.hub().close_all();
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
    handle_store: Option<Arc<dyn SessionStore>>,
    task_store: Option<Arc<dyn SessionStore>>,
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

    /// The store of handles (default: a [`MemoryStore`]). It must not be
    /// the sessions' store: give a [`FileStore`](session_store::FileStore)
    /// its own directory, a Redis store its own prefix.
    pub fn handle_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.handle_store = Some(store);
        self
    }

    /// The store of tasks (default: a [`MemoryStore`]). Like the handle
    /// store, a store of its own: not the sessions' nor the handles'.
    pub fn task_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.task_store = Some(store);
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

    /// Requires `scopes` of the bearer token of whoever calls tool `name`
    /// (with [`HttpConfig::auth`](crate::HttpConfig::auth) set): a token
    /// without them gets 403 `insufficient_scope` naming them, as the
    /// specification's step-up authorization has it. Without
    /// authorization (and on stdio) nothing is checked.
    pub fn tool_scopes(mut self, name: &str, scopes: &[&str]) -> Self {
        self.registry.tool_scopes.insert(
            name.to_string(),
            scopes.iter().map(|s| s.to_string()).collect(),
        );
        self
    }

    /// Lets tool `name` (added before or after) run as a task (the
    /// `io.modelcontextprotocol/tasks` extension); see [`TaskSupport`].
    pub fn task_support(mut self, name: &str, support: TaskSupport) -> Self {
        self.registry.task_support.insert(name.to_string(), support);
        self
    }

    /// Declares tool `name` safe to run again from the start: when the
    /// worker of one of its tasks is lost (its process died, its lease
    /// lapsed), a live replica runs it again with the same arguments, for
    /// the same principal, instead of failing the task. Only for tools
    /// whose effects bear repeating (a side effect done twice is the
    /// tool's to accept).
    pub fn rerun_safe(mut self, name: &str) -> Self {
        self.registry.rerun_safe.insert(name.to_string());
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
        let metrics = self.config.metrics.then(|| Arc::new(crate::Metrics::new()));
        // With metrics on, every store operation is timed.
        let metered = |store: Arc<dyn SessionStore>, name: &'static str| match &metrics {
            Some(metrics) => crate::metered::MeteredStore::wrap(store, name, metrics.clone()),
            None => store,
        };
        let store = metered(
            self.store
                .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>),
            "sessions",
        );
        let handle_store = metered(
            self.handle_store
                .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>),
            "handles",
        );
        let task_store = metered(
            self.task_store
                .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>),
            "tasks",
        );
        let events: Arc<dyn EventStore> = self.events.unwrap_or_else(|| {
            Arc::new(MemoryEventStore::new(
                self.config.events_per_stream,
                self.config.streams_per_session,
            ))
        });
        let events = match &metrics {
            Some(metrics) => crate::metered::MeteredEvents::wrap(events, metrics.clone()),
            None => events,
        };
        let clock = Arc::new(SystemClock);
        let manager = Arc::new(SessionManager::new(
            store,
            clock.clone(),
            self.config.sessions.clone(),
        ));
        let handles = Arc::new(Handles::new(
            handle_store,
            clock.clone(),
            self.config.handles.clone(),
        ));
        let tasks = Arc::new(Tasks::new(task_store, clock, self.config.tasks.clone()));
        let dispatcher = Dispatcher::new(Parts {
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
            handles,
            tasks,
            hub: Hub::new(events),
            config: self.config,
            metrics,
        });
        manager.add_hook(Arc::new(Release(Arc::downgrade(&dispatcher))));
        dispatcher
            .tasks()
            .manager()
            .add_hook(Arc::new(LeaseHook(Arc::downgrade(&dispatcher))));
        McpServer { dispatcher }
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
