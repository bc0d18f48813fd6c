//! The message-level dispatcher: every message of both eras, from both
//! transports, enters through [`Dispatcher::handle`].
//!
//! ```text
//!  HTTP POST ─┐                      ┌─ initialize ─────────────► legacy::initialize (a session)
//!  stdio line ┴─► Dispatcher::handle ┼─ _meta envelope ─────────► modern::request (no session)
//!                  (Message, Origin) └─ anything else ──────────► legacy::in_session
//!                        │                                              │
//!                        └────────────── Outcome ◄─────── methods::route (both eras)
//! ```
//!
//! The dispatcher decides the era of each message, applies that era's rules
//! (and turns every refusal into a [`Rejection`]), and runs the method. It
//! never sees a header: a transport describes what it knows besides the
//! body in an [`Origin`], and writes the [`Outcome`] its own way (HTTP as
//! JSON or SSE, stdio as lines).

mod legacy;
mod listen;
mod methods;
mod mirror;
mod modern;
mod mrtr;
mod tasks;

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use session_core::wire::{
    ErrorObject, Implementation, LoggingLevel, Message, Request, RequestId, Response, code,
};
use session_core::{Handles, SessionId, SessionManager, SessionRecord, StreamId, Tasks};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ServerConfig;
use crate::context::{Outbox, Pending, untouched};
use crate::error::Rejection;
use crate::hub::Hub;
pub(crate) use crate::metrics::SessionEvent;
use crate::registry::Registry;

pub(crate) use listen::{Change, Listeners};
use modern::SERVER_INFO_KEY;
pub(crate) use modern::supported_versions;
pub(crate) use mrtr::StateKey;
pub(crate) use tasks::LeaseHook;
pub(crate) use tasks::TaskLink;

/// The transport a message came by: the few rules that differ between them
/// (the words of a refusal, whether headers mirror the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Streamable HTTP: sessions are named by `MCP-Session-Id`.
    Http,
    /// stdio: the process is the (legacy) session.
    Stdio,
}

/// What a transport knows of a message besides its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub(crate) transport: Transport,
    /// The authenticated principal, if any.
    pub(crate) principal: Option<&'a str>,
    /// The legacy session the message names, as sent (`MCP-Session-Id`;
    /// on stdio, the process's session). A value that is not visible ASCII
    /// comes as [`NOT_TEXT`].
    pub(crate) session: Option<&'a str>,
    /// The revision the transport declares (`MCP-Protocol-Version`), as
    /// [`NOT_TEXT`] when it is not visible ASCII.
    pub(crate) protocol_version: Option<&'a str>,
    /// Body fields the transport mirrors (`Mcp-Method`, `Mcp-Name`,
    /// `Mcp-Param-*`), to be checked against the body; `None` where the
    /// transport mirrors nothing (stdio).
    pub(crate) mirrored: Option<&'a Mirrored<'a>>,
    /// Where a modern request can be cancelled by id
    /// (`notifications/cancelled` on stdio); `None`: only by dropping it.
    pub(crate) scope: Option<u64>,
    /// Whether the transport can carry a legacy answer (on HTTP: `Accept`
    /// lists both JSON and SSE).
    pub(crate) acceptable: bool,
    /// The HTTP `traceparent` header, read only when request spans are on.
    pub(crate) traceparent: Option<&'a str>,
}

/// What a transport declares for a value it could not read as visible
/// ASCII: itself not visible ASCII, so every check refuses it.
pub(crate) const NOT_TEXT: &str = "\u{7f}";

/// Body fields an HTTP request mirrors into headers (revision 2026-07-28),
/// as sent.
#[derive(Debug, Default, Clone)]
pub(crate) struct Mirrored<'a> {
    /// `Mcp-Method`.
    pub(crate) method: Option<&'a [u8]>,
    /// `Mcp-Name` (possibly in the Base64 sentinel form).
    pub(crate) name: Option<&'a [u8]>,
    /// `Mcp-Param-{Name}` headers: the name part (lowercase), the value.
    pub(crate) params: Vec<(&'a str, &'a [u8])>,
}

/// What became of a message.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Taken; nothing to answer (a notification, a client's response).
    Accepted,
    /// A legacy session began: the `initialize` response and the session
    /// (boxed: a rare outcome need not make every one larger).
    Started(Box<Started>),
    /// One answer, ready now.
    Reply(Response),
    /// A request is running: what it sends, then its response.
    Running(Running),
    /// The answers to a batch's requests, in order (JSON texts).
    Batch(Vec<String>),
    /// Refused, with the id of the request if it could be read.
    Rejected {
        rejection: Rejection,
        id: Option<RequestId>,
    },
}

impl Outcome {
    fn rejected(rejection: Rejection, id: Option<&RequestId>) -> Self {
        Outcome::Rejected {
            rejection,
            id: id.cloned(),
        }
    }
}

/// What `initialize` produced.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) response: Response,
    pub(crate) session: Option<SessionRecord>,
}

/// The era a running request is served in.
#[derive(Debug, Clone)]
pub(crate) enum Era {
    /// In a legacy session, whose stream events are stored for resumption.
    Legacy {
        session: SessionId,
        /// The revision the session negotiated.
        version: String,
    },
    /// Sessionless (2026-07-28): nothing is stored; dropping the answer
    /// cancels the request.
    Modern,
}

/// A boxed handler run: its response, or `None` when it was cancelled.
pub(crate) type Handling =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Response>> + Send>>;

/// A request being handled.
pub(crate) struct Running {
    pub(crate) era: Era,
    /// The handler; polling it runs the request.
    pub(crate) handling: Handling,
    /// What the handler sends before its response (progress, logs,
    /// requests to the client).
    pub(crate) messages: mpsc::Receiver<Box<Message>>,
    /// Cancels a modern request (its answer's receiver is gone); legacy
    /// requests run on, their events stored for a resumed stream.
    pub(crate) cancel: Option<CancellationToken>,
    /// Whether the answer only makes sense as a stream
    /// (`subscriptions/listen`): never cut to one JSON body.
    pub(crate) streams_only: bool,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("era", &self.era).finish()
    }
}

/// Everything one server shares between its transports and tasks.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    info: Implementation,
    instructions: Option<String>,
    registry: Registry,
    manager: Arc<SessionManager>,
    handles: Arc<Handles>,
    tasks: Arc<Tasks>,
    hub: Hub,
    inflight: InFlight,
    levels: Mutex<foldhash::HashMap<SessionId, LoggingLevel>>,
    /// Resource URIs each legacy session subscribed to on this process.
    subscriptions: Mutex<foldhash::HashMap<SessionId, std::collections::BTreeSet<String>>>,
    pending: Arc<Pending>,
    /// `initialize` results by revision, serialized once.
    initialize_results: Vec<(&'static str, Box<RawValue>)>,
    /// What every modern result carries, serialized once.
    modern: modern::Prepared,
    /// `subscriptions/listen` streams on this process.
    listeners: Arc<Listeners>,
    /// The tasks running on this process.
    task_runtime: Arc<tasks::TaskRuntime>,
    /// The key that seals `requestState` (from the handle store).
    state_key: StateKey,
    config: ServerConfig,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
    /// Numbers the scopes of modern requests (see [`Origin::scope`]).
    next_scope: std::sync::atomic::AtomicU64,
    /// The last readiness verdict; locked while a probe runs.
    ready: tokio::sync::Mutex<Verdict>,
    /// The server's metrics, unless they are off.
    metrics: Option<Arc<crate::Metrics>>,
}

/// What [`Dispatcher::new`] is built from.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) info: Implementation,
    pub(crate) instructions: Option<String>,
    pub(crate) registry: Registry,
    pub(crate) manager: Arc<SessionManager>,
    pub(crate) handles: Arc<Handles>,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) hub: Hub,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Option<Arc<crate::Metrics>>,
}

impl Dispatcher {
    pub(crate) fn new(parts: Parts) -> Arc<Self> {
        let Parts {
            info,
            instructions,
            registry,
            manager,
            handles,
            tasks,
            hub,
            config,
            metrics,
        } = parts;
        let listeners = Arc::new(Listeners::default());
        let task_runtime = Arc::new(tasks::TaskRuntime::new(
            tasks.clone(),
            listeners.clone(),
            hub.events().clone(),
            config.task_poll_interval,
            config.task_lease,
            metrics.clone(),
        ));
        let mut dispatcher = Dispatcher {
            modern: modern::Prepared::default(),
            info,
            instructions,
            registry,
            manager,
            handles,
            tasks,
            hub,
            inflight: InFlight::default(),
            levels: Mutex::default(),
            subscriptions: Mutex::default(),
            pending: Arc::default(),
            initialize_results: Vec::new(),
            listeners,
            task_runtime,
            state_key: StateKey::default(),
            config,
            shutdown: CancellationToken::new(),
            next_scope: std::sync::atomic::AtomicU64::new(1),
            ready: tokio::sync::Mutex::new(None),
            metrics,
        };
        dispatcher.initialize_results = dispatcher.initialize_results();
        dispatcher.modern = modern::Prepared::new(&dispatcher);
        Arc::new(dispatcher)
    }

    /// Handles one message. A request whose method is `initialize` starts a
    /// legacy session; one carrying the `_meta` envelope
    /// (`io.modelcontextprotocol/protocolVersion`) is served in the modern
    /// era without a session; anything else belongs to the legacy session
    /// the origin names.
    pub(crate) async fn handle(self: &Arc<Self>, message: Message, origin: &Origin<'_>) -> Outcome {
        if !self.config.request_spans {
            return self.handle_message(message, origin).await;
        }
        use tracing::Instrument as _;
        let modern = matches!(
            match &message {
                Message::Request(r) => modern::probe(&r.method, r.params.as_deref(), origin),
                Message::Notification(n) => modern::probe(&n.method, n.params.as_deref(), origin),
                Message::Response(_) => modern::Probe::Legacy,
            },
            modern::Probe::Modern
        );
        let span = crate::trace::request_span(&message, modern, origin.session, origin.traceparent);
        let outcome = self
            .handle_message(message, origin)
            .instrument(span.clone())
            .await;
        match outcome {
            Outcome::Running(mut running) => {
                let handling = running.handling;
                running.handling = Box::pin(
                    async move {
                        let response = handling.await;
                        tracing::info!(cancelled = response.is_none(), "request handled");
                        response
                    }
                    .instrument(span),
                );
                Outcome::Running(running)
            }
            outcome => {
                span.in_scope(|| tracing::info!("request handled"));
                outcome
            }
        }
    }

    /// [`handle`](Self::handle), outside any request span.
    async fn handle_message(self: &Arc<Self>, message: Message, origin: &Origin<'_>) -> Outcome {
        // On stdio a 2026-07-28 client cancels with a plain notification
        // (notifications carry no envelope): it reaches the connection's
        // modern requests whatever era it is taken for.
        if let (Message::Notification(note), Some(scope)) = (&message, origin.scope)
            && note.method == "notifications/cancelled"
            && let Ok(params) = session_core::wire::parse_params::<
                session_core::wire::CancelledParams,
            >(note.params.as_deref())
        {
            self.inflight
                .cancel(Scope::Connection(scope), &params.request_id);
        }
        let envelope = match &message {
            Message::Request(r) => modern::probe(&r.method, r.params.as_deref(), origin),
            Message::Notification(n) => modern::probe(&n.method, n.params.as_deref(), origin),
            Message::Response(_) => modern::Probe::Legacy,
        };
        match envelope {
            modern::Probe::Legacy if !origin.acceptable => Outcome::rejected(
                Rejection::NotAcceptable(
                    "Accept must list both application/json and text/event-stream".into(),
                ),
                request_id(&message),
            ),
            modern::Probe::Legacy => match message {
                Message::Request(request) if request.method == "initialize" => {
                    Box::pin(self.initialize(request, origin)).await
                }
                message => self.in_session(message, origin).await,
            },
            modern::Probe::Modern => Box::pin(self.modern(message, origin)).await,
        }
    }

    /// Handles a JSON-RPC batch (revision 2025-03-26 only, in a legacy
    /// session): each item in order, as [`handle`](Self::handle) would;
    /// what the batch's requests send goes to `side`.
    pub(crate) async fn handle_batch(
        self: &Arc<Self>,
        items: Vec<Box<RawValue>>,
        origin: &Origin<'_>,
        side: impl Fn(&SessionId) -> Outbox,
    ) -> Outcome {
        Box::pin(self.batch(items, origin, side)).await
    }

    /// The legacy session `id` names, for `principal`: what a GET stream
    /// or a DELETE acts on.
    pub(crate) async fn session(
        &self,
        id: &SessionId,
        principal: Option<&str>,
    ) -> Result<SessionRecord, Rejection> {
        self.resolve(id, principal)
            .await
            .map_err(|e| Rejection::from_session(&e))
    }

    /// Resolves the legacy session `id` for `principal`, recording activity
    /// on it ([`SessionManager::resume`]). When the store fails, the
    /// session is read once more without writing: if that read works, the
    /// failure was the activity write (the store refuses writes but serves
    /// reads), and the request is served anyway. A request that writes
    /// will meet the failure itself; one that only reads must not.
    pub(crate) async fn resolve(
        &self,
        id: &SessionId,
        principal: Option<&str>,
    ) -> Result<SessionRecord, session_core::Error> {
        match self.manager.resume(id, principal).await {
            Err(e) if e.is_unavailable() => {
                Box::pin(untouched(&self.manager, id, Some(principal), e)).await
            }
            resolved => resolved,
        }
    }

    /// Whether the server can serve now: the session store, the handle
    /// store and the event store all report
    /// [`readiness`](session_core::SessionStore::readiness) `Ok` within
    /// [`READY_PROBE_LIMIT`], and the server is not shutting down. The
    /// verdict is kept for [`READY_CACHE`], and concurrent callers share
    /// one probe, so a flood of probes does not reach the stores.
    pub(crate) async fn readiness(&self) -> Result<(), Arc<str>> {
        if self.is_shutting_down() {
            return Err(Arc::from("the server is shutting down"));
        }
        let mut cached = self.ready.lock().await;
        if let Some((at, verdict)) = &*cached
            && at.elapsed() < READY_CACHE
        {
            return verdict.clone();
        }
        let verdict = self.probe_stores().await;
        *cached = Some((tokio::time::Instant::now(), verdict.clone()));
        verdict
    }

    async fn probe_stores(&self) -> Result<(), Arc<str>> {
        let probes = futures_util::future::join4(
            self.manager.store().readiness(),
            self.handles.manager().store().readiness(),
            self.tasks.manager().store().readiness(),
            self.hub.events().readiness(),
        );
        let Ok((sessions, handles, tasks, events)) =
            tokio::time::timeout(READY_PROBE_LIMIT, probes).await
        else {
            return Err(Arc::from(format!(
                "the stores did not answer the readiness probe within {READY_PROBE_LIMIT:?}"
            )));
        };
        let reasons: Vec<String> = [
            ("session", sessions),
            ("handle", handles),
            ("task", tasks),
            ("event", events),
        ]
        .into_iter()
        .filter_map(|(store, probe)| {
            probe
                .err()
                .map(|e| format!("{store} store: {}", crate::error::describe(&e)))
        })
        .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Arc::from(reasons.join("; ")))
        }
    }

    /// Ends a legacy session (HTTP DELETE, stdin closing).
    pub(crate) async fn end_session(&self, session: SessionRecord) -> Result<(), Rejection> {
        Box::pin(self.manager.close_from(session))
            .await
            .map(|_| self.count_sessions(SessionEvent::Closed, 1))
            .map_err(|e| Rejection::from_session(&e))
    }

    /// Ends a legacy session known only by id (stdin closing).
    pub(crate) async fn end_session_by_id(&self, id: &SessionId) {
        if self.manager.close(id).await.is_ok() {
            self.count_sessions(SessionEvent::Closed, 1);
        }
    }

    /// Counts `n` sessions to which `event` happened, if metrics are on.
    pub(crate) fn count_sessions(&self, event: SessionEvent, n: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.sessions(event, n);
        }
    }

    /// A fresh scope for modern requests of one connection.
    pub(crate) fn new_scope(&self) -> u64 {
        self.next_scope
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The live streams of legacy sessions.
    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// An outbox whose messages go to the legacy session's own stream (its
    /// GET stream), stored for resumption.
    pub(crate) fn standalone_outbox(self: &Arc<Self>, session: &SessionId) -> Outbox {
        let (tx, rx) = mpsc::channel::<Box<Message>>(16);
        self.forward_to_standalone(session, rx);
        Outbox(tx)
    }

    /// Sends what arrives on `rx` to the legacy session's GET stream.
    pub(crate) fn forward_to_standalone(
        self: &Arc<Self>,
        session: &SessionId,
        mut rx: mpsc::Receiver<Box<Message>>,
    ) {
        let dispatcher = self.clone();
        let session = session.clone();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let data: Arc<str> = Arc::from(message.to_json());
                if let Err(e) = dispatcher
                    .hub
                    .publish(&session, &StreamId::standalone(), data)
                    .await
                {
                    crate::hub::unstored(&session, "an event", &e);
                }
            }
        });
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Resolves when shutdown begins.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn manager(&self) -> &Arc<SessionManager> {
        &self.manager
    }

    pub(crate) fn tasks(&self) -> &Arc<Tasks> {
        &self.tasks
    }

    pub(crate) fn handles(&self) -> &Arc<Handles> {
        &self.handles
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The scopes a token must carry to call tool `name`.
    pub(crate) fn tool_scopes(&self, name: &str) -> &[String] {
        self.registry.tool_scopes(name)
    }

    /// Every scope some tool requires.
    pub(crate) fn all_tool_scopes(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .registry
            .tool_scopes
            .values()
            .flatten()
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The server's metrics, unless they are off.
    pub(crate) fn metrics(&self) -> Option<&Arc<crate::Metrics>> {
        self.metrics.as_ref()
    }

    /// The metrics in the Prometheus text format, with what is read at
    /// scrape time: the live sessions, handles and tasks (each store's
    /// count, bounded to a second: a count that takes longer is left as it
    /// was) and the file stores' group-commit statistics. `None` when
    /// metrics are off.
    pub(crate) async fn scrape(&self) -> Option<String> {
        let metrics = self.metrics.as_ref()?;
        let stores = [
            ("sessions", self.manager.store()),
            ("handles", self.handles.manager().store()),
            ("tasks", self.tasks.manager().store()),
        ];
        let bound = std::time::Duration::from_secs(1);
        for (kind, store) in stores {
            match tokio::time::timeout(bound, store.count()).await {
                Ok(Ok(count)) => metrics.set_live(kind, count),
                Ok(Err(e)) => tracing::debug!(store = kind, "cannot count for the metrics: {e}"),
                Err(_) => {
                    tracing::debug!(store = kind, "counting for the metrics took over {bound:?}")
                }
            }
        }
        let mut commits: Vec<(&'static str, session_core::GroupCommitStats)> = stores
            .iter()
            .filter_map(|(kind, store)| store.group_commit_stats().map(|s| (*kind, s)))
            .collect();
        if let Some(stats) = self.hub.events().group_commit_stats() {
            commits.push(("events", stats));
        }
        Some(metrics.render(&commits))
    }

    pub(crate) fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    pub(crate) fn requests_in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// How many tasks run on this process.
    pub(crate) fn tasks_running(&self) -> usize {
        self.task_runtime.running()
    }

    /// A change announced by another replica: a task that ended there
    /// (cancelled) stops its worker here.
    pub(crate) fn heard(&self, change: &Change) {
        self.task_runtime.heard(change);
    }
}

/// How long the readiness probe waits for the stores.
pub(crate) const READY_PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a readiness verdict is reused.
pub(crate) const READY_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// A readiness verdict and when it was reached.
type Verdict = Option<(tokio::time::Instant, Result<(), Arc<str>>)>;

/// What a GET stream or a DELETE names, checked: the session (required)
/// and the declared revision, which must be a legacy one (2026-07-28 has
/// neither: 405).
pub(crate) fn session_of_stream(
    session: Option<&str>,
    protocol_version: Option<&str>,
) -> Result<SessionId, Rejection> {
    if protocol_version.is_some_and(|v| session_core::wire::MODERN_PROTOCOL_VERSIONS.contains(&v)) {
        return Err(Rejection::MethodNotAllowed);
    }
    legacy::declared_version(protocol_version)?;
    legacy::session_id(session)?.ok_or(Rejection::MissingSessionId)
}

/// The parts of `params` every request may carry in `_meta`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Meta {
    #[serde(rename = "progressToken")]
    pub(crate) progress_token: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct WithMeta {
    #[serde(rename = "_meta")]
    meta: Option<Meta>,
}

/// Whether `params` mentions `"_meta"`: a search with a prepared finder,
/// since every request of both eras asks.
pub(crate) fn mentions_meta(params: &RawValue) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"_meta\""));
    FINDER.find(params.get().as_bytes()).is_some()
}

/// Reads `params._meta.progressToken`, ignoring anything malformed (the
/// method's own parameter check reports that).
pub(crate) fn meta(params: Option<&RawValue>) -> Meta {
    params
        .filter(|p| mentions_meta(p))
        .and_then(|p| serde_json::from_str::<WithMeta>(p.get()).ok())
        .and_then(|w| w.meta)
        .unwrap_or_default()
}

/// Who a request is scoped to for cancellation: a legacy session, or a
/// connection (or single request) of the modern era.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Session(SessionId),
    Connection(u64),
}

/// Requests being handled on this process, by scope and request id, with
/// the token that cancels each.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    map: Mutex<foldhash::HashMap<(Scope, RequestId), CancellationToken>>,
}

impl InFlight {
    /// Registers a request; the returned guard unregisters it when dropped.
    /// `None` if a request with that id is already in flight in the scope.
    pub(crate) fn start(&self, scope: Scope, request: &RequestId) -> Option<InFlightGuard<'_>> {
        self.start_with(scope, request, CancellationToken::new())
    }

    /// [`start`](Self::start) with the token that cancels the request.
    pub(crate) fn start_with(
        &self,
        scope: Scope,
        request: &RequestId,
        token: CancellationToken,
    ) -> Option<InFlightGuard<'_>> {
        let key = (scope, request.clone());
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
    pub(crate) fn cancel(&self, scope: Scope, request: &RequestId) -> bool {
        self.map
            .lock()
            .get(&(scope, request.clone()))
            .map(CancellationToken::cancel)
            .is_some()
    }

    /// Cancels every request of a session.
    pub(crate) fn cancel_session(&self, session: &SessionId) {
        for ((scope, _), token) in self.map.lock().iter() {
            if matches!(scope, Scope::Session(s) if s == session) {
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
        let mut ids: Vec<SessionId> = self
            .map
            .lock()
            .keys()
            .filter_map(|(scope, _)| match scope {
                Scope::Session(s) => Some(s.clone()),
                Scope::Connection(_) => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// The answer to a request whose id is already in flight in its scope: the
/// id would make cancellation ambiguous, so ids must be unique among the
/// requests running at once.
pub(crate) fn id_in_use(id: RequestId) -> Response {
    let error = ErrorObject::new(
        code::INVALID_REQUEST,
        format!("Invalid Request: request id {id} is already in flight"),
    );
    Response::error(Some(id), error)
}

/// Unregisters an in-flight request when dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard<'a> {
    owner: &'a InFlight,
    key: (Scope, RequestId),
    pub(crate) token: CancellationToken,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.owner.map.lock().remove(&self.key);
    }
}

/// A request's id, for answering a refusal of it.
fn request_id(message: &Message) -> Option<&RequestId> {
    match message {
        Message::Request(Request { id, .. }) => Some(id),
        _ => None,
    }
}
