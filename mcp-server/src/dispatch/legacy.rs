//! The legacy era (2025-03-26 … 2025-11-25): `initialize` creates a session
//! in the store, and every later message names it.

use std::sync::Arc;

use futures_util::FutureExt as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use session_core::wire::{
    CancelledParams, ErrorObject, InitializeParams, InitializeResult, Message, Notification,
    Request, Response, SESSION_STATE_CAPABILITY, SUPPORTED_PROTOCOL_VERSIONS, code, negotiate,
    parse_params, to_raw,
};
use session_core::{NewSession, SessionId, SessionRecord, SessionStatus, StreamId};
use tokio::sync::mpsc;

use super::{
    Dispatcher, Era, Origin, Outcome, Running, Scope, Started, Transport, id_in_use, meta,
    request_id,
};
use crate::context::{ContextParts, Outbox, RequestContext, SessionHandle, untouched};
use crate::error::{Rejection, session_error_object};
use crate::metrics::SessionEvent;

/// A stdio session lasts as long as its process, however quiet.
const STDIO_IDLE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// `MCP-Session-Id` as sent, checked: `Ok(None)` when absent.
pub(super) fn session_id(value: Option<&str>) -> Result<Option<SessionId>, Rejection> {
    value
        .map(SessionId::parse)
        .transpose()
        .map_err(|e| Rejection::InvalidSessionId(e.to_string()))
}

/// The declared legacy revision, checked: absent is fine (2025-03-26 is
/// assumed on HTTP), one this server does not speak is refused.
pub(super) fn declared_version(value: Option<&str>) -> Result<Option<&str>, Rejection> {
    match value {
        Some(version) if !session_core::wire::is_supported(version) => {
            Err(Rejection::UnsupportedVersion {
                requested: version.to_string(),
            })
        }
        version => Ok(version),
    }
}

impl Dispatcher {
    /// The `initialize` result for each supported revision.
    pub(super) fn initialize_results(&self) -> Vec<(&'static str, Box<RawValue>)> {
        SUPPORTED_PROTOCOL_VERSIONS
            .iter()
            .map(|version| (*version, self.initialize_result(version)))
            .collect()
    }

    fn initialize_result(&self, version: &str) -> Box<RawValue> {
        to_raw(&InitializeResult {
            protocol_version: version.to_string(),
            capabilities: self.capabilities(false),
            server_info: self.info.clone(),
            instructions: self.instructions.clone(),
        })
    }

    /// The capabilities announced: in `initialize` (legacy) or in
    /// `server/discover` (modern, with `extensions`).
    pub(super) fn capabilities(&self, modern: bool) -> Value {
        let registry = &self.registry;
        let mut caps = json!({"tools": {"listChanged": modern}, "logging": {}});
        if registry.completion.is_some() {
            caps["completions"] = json!({});
        }
        if !registry.resources.is_empty() || !registry.templates.is_empty() {
            caps["resources"] = json!({"subscribe": true, "listChanged": modern});
        }
        if !registry.prompts.is_empty() {
            caps["prompts"] = json!({"listChanged": modern});
        }
        if modern {
            caps["extensions"] = json!({ super::tasks::TASKS_EXTENSION: {} });
        } else if self.config.session_state_extension {
            caps["experimental"] = json!({ SESSION_STATE_CAPABILITY: {} });
        }
        caps
    }

    /// `initialize`: negotiates the revision and creates the session, bound
    /// to the origin's principal if there is one. Invalid parameters get an
    /// error response and no session.
    pub(super) async fn initialize(&self, request: Request, origin: &Origin<'_>) -> Outcome {
        if origin.transport == Transport::Stdio && origin.session.is_some() {
            let error = ErrorObject::new(code::INVALID_REQUEST, "already initialized");
            return Outcome::Reply(Response::error(Some(request.id), error));
        }
        // A session id sent with `initialize` is ignored: ids are minted
        // here only (reusing a client's would be session fixation).
        let params: InitializeParams = match parse_params(request.params.as_deref()) {
            Ok(params) => params,
            Err(error) => return Outcome::Reply(Response::error(Some(request.id), error)),
        };
        let version = negotiate(&params.protocol_version);
        let mut new = NewSession::new()
            .protocol_version(version)
            .client_info_raw(params.client_info)
            .capabilities_raw(params.capabilities)
            .initializing(self.config.sessions.handshake_timeout);
        if let Some(principal) = origin.principal {
            new = new.owner(principal);
        }
        if origin.transport == Transport::Stdio {
            new = new.idle_timeout(STDIO_IDLE_TIMEOUT);
        }
        let record = match self.manager.create(new).await {
            Ok(record) => record,
            // What the client sent is too large to keep: its fault, not
            // the server's.
            Err(
                e @ (session_core::Error::MetaTooLarge { .. }
                | session_core::Error::StateTooLarge { .. }
                | session_core::Error::RecordTooLarge { .. }),
            ) => {
                let error = session_error_object(&e);
                return Outcome::Reply(Response::error(Some(request.id), error));
            }
            Err(e) => {
                if matches!(e, session_core::Error::LimitReached { .. }) {
                    self.count_sessions(SessionEvent::Rejected, 1);
                }
                return Outcome::rejected(Rejection::from_session(&e), Some(&request.id));
            }
        };
        self.count_sessions(SessionEvent::Created, 1);
        let result = self
            .initialize_results
            .iter()
            .find(|(v, _)| *v == version)
            .map_or_else(|| self.initialize_result(version), |(_, r)| r.clone());
        tracing::debug!(session = %record.id(), version, "session created");
        Outcome::Started(Box::new(Started {
            response: Response::ok(request.id, result),
            session: Some(record),
        }))
    }

    /// A message in the legacy session the origin names.
    pub(super) async fn in_session(
        self: &Arc<Self>,
        message: Message,
        origin: &Origin<'_>,
    ) -> Outcome {
        let id = request_id(&message);
        if let Err(rejection) = declared_version(origin.protocol_version) {
            return Outcome::rejected(rejection, id);
        }
        let session = match session_id(origin.session) {
            Ok(Some(session)) => session,
            Ok(None) => return Box::pin(self.without_session(message, origin)).await,
            Err(rejection) => return Outcome::rejected(rejection, id),
        };
        let session = match self.manager.resume(&session, origin.principal).await {
            Ok(session) => session,
            // stdio answers `ping` whatever became of its session.
            Err(e) if e.is_gone() && origin.transport == Transport::Stdio => {
                return Box::pin(self.without_session(message, origin)).await;
            }
            // The store failed, perhaps only at recording activity (see
            // `Dispatcher::resolve`). Boxed: rare, and this future is part
            // of every legacy request's.
            Err(e) if e.is_unavailable() => {
                return Box::pin(self.in_session_untouched(&session, message, origin, e)).await;
            }
            Err(e) => return Outcome::rejected(Rejection::from_session(&e), id),
        };
        match message {
            Message::Notification(note) => Box::pin(self.notified(&session, &note)).await,
            message => self.deliver(session, message),
        }
    }

    /// [`in_session`](Self::in_session) after the store failed with
    /// `failure` while resolving the session: served if the session reads.
    async fn in_session_untouched(
        self: &Arc<Self>,
        session: &SessionId,
        message: Message,
        origin: &Origin<'_>,
        failure: session_core::Error,
    ) -> Outcome {
        let session = match untouched(&self.manager, session, Some(origin.principal), failure).await
        {
            Ok(session) => session,
            Err(e) => return Outcome::rejected(Rejection::from_session(&e), request_id(&message)),
        };
        match message {
            Message::Notification(note) => self.notified(&session, &note).await,
            message => self.deliver(session, message),
        }
    }

    /// A notification in the live legacy `session`, answered.
    async fn notified(&self, session: &SessionRecord, note: &Notification) -> Outcome {
        match self.notification(session, note).await {
            Ok(()) => Outcome::Accepted,
            Err(rejection) => Outcome::rejected(rejection, None),
        }
    }

    /// Delivers a response or a request to the live legacy `session`.
    fn deliver(self: &Arc<Self>, session: SessionRecord, message: Message) -> Outcome {
        match message {
            Message::Notification(_) => Outcome::Accepted, // see `notified`
            Message::Response(response) => {
                if !self.pending.answer(session.id(), response) {
                    tracing::debug!(session = %session.id(), "an answer nobody here waits for");
                }
                Outcome::Accepted
            }
            Message::Request(request) => Outcome::Running(self.start(session, request)),
        }
    }

    /// A legacy message naming no session.
    async fn without_session(&self, message: Message, origin: &Origin<'_>) -> Outcome {
        match (message, origin.transport) {
            // stdio answers `ping` before `initialize`.
            (Message::Request(request), Transport::Stdio) if request.method == "ping" => {
                Outcome::Reply(Response::ok(request.id, to_raw(&json!({}))))
            }
            // A session that ended is told apart from none at all.
            (Message::Request(request), Transport::Stdio) if origin.session.is_some() => {
                Outcome::Rejected {
                    rejection: Rejection::SessionNotFound("the session is over"),
                    id: Some(request.id),
                }
            }
            (Message::Request(request), Transport::Stdio) => Outcome::Rejected {
                rejection: Rejection::NotInitialized,
                id: Some(request.id),
            },
            (Message::Request(request), Transport::Http) => Outcome::Rejected {
                rejection: Rejection::MissingSessionId,
                id: Some(request.id),
            },
            (_, Transport::Stdio) => Outcome::Accepted,
            (_, Transport::Http) => Outcome::rejected(Rejection::MissingSessionId, None),
        }
    }

    /// Starts a request in `session`.
    pub(super) fn start(self: &Arc<Self>, session: SessionRecord, request: Request) -> Running {
        let era = Era::Legacy {
            session: session.id().clone(),
            version: session.meta().protocol_version.clone().unwrap_or_default(),
        };
        let (tx, rx) = mpsc::channel(16);
        let handling = Box::pin(self.clone().request(session, request, Outbox(tx)));
        Running {
            era,
            handling,
            messages: rx,
            cancel: None,
            streams_only: false,
        }
    }

    /// Handles a notification in a session. Refused only when the store
    /// is unavailable to record what it says (`notifications/initialized`
    /// that cannot activate the session): the client sends it again.
    pub(super) async fn notification(
        &self,
        session: &SessionRecord,
        note: &Notification,
    ) -> Result<(), Rejection> {
        match note.method.as_str() {
            "notifications/initialized" => {
                if session.stored_status() == SessionStatus::Initializing
                    && let Err(e) = self.manager.activate_from(session.clone()).await
                {
                    if e.is_unavailable() {
                        return Err(Rejection::from_session(&e));
                    }
                    tracing::debug!(session = %session.id(), "cannot activate: {e}");
                }
            }
            "notifications/cancelled" => {
                if let Ok(params) = parse_params::<CancelledParams>(note.params.as_deref()) {
                    let scope = Scope::Session(session.id().clone());
                    let cancelled = self.inflight.cancel(scope, &params.request_id);
                    tracing::debug!(session = %session.id(), request = %params.request_id, cancelled, "cancel");
                }
            }
            other => tracing::trace!(method = other, "notification ignored"),
        }
        Ok(())
    }

    /// Handles a request in a session. Returns `None` when the request was
    /// cancelled: its response must not be sent.
    ///
    /// An `async` block rather than an `async fn`: the block keeps its
    /// captures once, where an `async fn` would hold its arguments twice.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn's future holds its arguments twice"
    )]
    fn request(
        self: Arc<Self>,
        session: SessionRecord,
        request: Request,
        outbox: Outbox,
    ) -> impl std::future::Future<Output = Option<Response>> + Send {
        async move {
            if session.stored_status() == SessionStatus::Initializing && request.method != "ping" {
                // A client that skips `notifications/initialized` still gets
                // served; its session must not die at the handshake deadline.
                let _ = Box::pin(self.manager.activate(session.id())).await;
            }
            let Some(guard) = self
                .inflight
                .start(Scope::Session(session.id().clone()), &request.id)
            else {
                return Some(id_in_use(request.id));
            };
            let meta = meta(request.params.as_deref());
            let principal = session.owner().map(str::to_string);
            let handle = SessionHandle::new(self.manager.clone(), session);
            let session_id = handle.id().clone();
            let level = self.log_level(&session_id);
            let ctx = RequestContext::new(ContextParts {
                task: None,
                request_id: request.id.clone(),
                session: Some(handle),
                progress_token: meta.progress_token,
                cancel: guard.token.clone(),
                outbox,
                log_level: Some(level),
                pending: self.pending.clone(),
                principal,
                handles: self.handles.clone(),
                modern: None,
            });
            // A handler that panics fails its request, not the connection.
            let routed =
                std::panic::AssertUnwindSafe(self.route(&ctx, &request, None)).catch_unwind();
            let outcome = tokio::select! {
                outcome = routed => outcome.unwrap_or_else(|_| {
                    tracing::error!(session = %session_id, method = %request.method, "the handler panicked");
                    Err(ErrorObject::new(code::INTERNAL_ERROR, "Internal error: the handler failed"))
                }),
                () = guard.token.cancelled() => return None,
            };
            if guard.token.is_cancelled() {
                return None;
            }
            Some(Response {
                id: Some(request.id),
                outcome,
            })
        }
    }

    /// A JSON-RPC batch (revision 2025-03-26 only): handled in order,
    /// answered with the responses of its requests.
    pub(super) async fn batch(
        self: &Arc<Self>,
        items: Vec<Box<RawValue>>,
        origin: &Origin<'_>,
        side: impl Fn(&SessionId) -> Outbox,
    ) -> Outcome {
        if items.is_empty() {
            return Outcome::rejected(Rejection::InvalidRequest("empty batch".into()), None);
        }
        let version = match declared_version(origin.protocol_version) {
            Ok(version) => version,
            Err(rejection) => return Outcome::rejected(rejection, None),
        };
        let session = match session_id(origin.session) {
            Ok(Some(id)) => match self.resolve(&id, origin.principal).await {
                Ok(session) => session,
                Err(e) => return Outcome::rejected(Rejection::from_session(&e), None),
            },
            Ok(None) => return Outcome::rejected(Rejection::MissingSessionId, None),
            Err(rejection) => return Outcome::rejected(rejection, None),
        };
        let negotiated = session.meta().protocol_version.as_deref().unwrap_or("");
        if version.unwrap_or(negotiated) != "2025-03-26" {
            return Outcome::rejected(
                Rejection::InvalidRequest(
                    "batches are allowed only in protocol revision 2025-03-26".into(),
                ),
                None,
            );
        }
        let mut responses = Vec::new();
        for item in items {
            match Message::from_raw(&item) {
                Ok(Message::Request(request)) if request.method == "initialize" => {
                    return Outcome::rejected(
                        Rejection::InvalidRequest("initialize must not be part of a batch".into()),
                        None,
                    );
                }
                Ok(Message::Request(request)) => {
                    let outbox = side(session.id());
                    if let Some(r) = self.clone().request(session.clone(), request, outbox).await {
                        responses.push(Message::Response(r).to_json());
                    }
                }
                Ok(Message::Notification(note)) => {
                    // A batch answers its requests only.
                    let _ = self.notification(&session, &note).await;
                }
                Ok(Message::Response(response)) => {
                    self.pending.answer(session.id(), response);
                }
                Err(e) => {
                    responses.push(Message::Response(Response::error(e.id, e.error)).to_json())
                }
            }
        }
        Outcome::Batch(responses)
    }

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

    pub(super) fn log_level(&self, session: &SessionId) -> session_core::wire::LoggingLevel {
        self.levels
            .lock()
            .get(session)
            .copied()
            .unwrap_or(session_core::wire::LoggingLevel::Debug)
    }

    /// `logging/setLevel` in a session.
    pub(super) fn set_log_level(
        &self,
        session: &SessionId,
        level: session_core::wire::LoggingLevel,
    ) {
        self.levels.lock().insert(session.clone(), level);
    }

    /// `resources/subscribe` (or unsubscribe) in a session.
    pub(super) fn subscribe(&self, session: &SessionId, uri: String, on: bool) {
        let mut subscriptions = self.subscriptions.lock();
        if on {
            subscriptions
                .entry(session.clone())
                .or_default()
                .insert(uri);
        } else if let Some(uris) = subscriptions.get_mut(session) {
            uris.remove(&uri);
            if uris.is_empty() {
                subscriptions.remove(session);
            }
        }
    }

    /// Tells legacy sessions subscribed to `uri` that it changed, on their
    /// GET streams; returns how many.
    pub(crate) async fn tell_subscribed_sessions(&self, uri: &str) -> usize {
        let sessions: Vec<SessionId> = self
            .subscriptions
            .lock()
            .iter()
            .filter(|(_, uris)| uris.contains(uri))
            .map(|(session, _)| session.clone())
            .collect();
        let note = Message::Notification(Notification {
            method: "notifications/resources/updated".into(),
            params: Some(to_raw(&json!({ "uri": uri }))),
        });
        let data: Arc<str> = Arc::from(note.to_json());
        for session in &sessions {
            if let Err(e) = self
                .hub
                .publish(session, &StreamId::standalone(), data.clone())
                .await
            {
                crate::hub::unstored(session, "a resource update", &e);
            }
        }
        sessions.len()
    }

    /// One round of upkeep: keep sessions with requests in flight alive,
    /// expire idle sessions (hooks release what they hold) and handles.
    pub(crate) async fn upkeep(&self) {
        for id in self.inflight.busy_sessions() {
            // A long request must not lose its session to idle expiry.
            let _ = self.manager.touch(&id).await;
        }
        match self.manager.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                self.count_sessions(SessionEvent::Expired, n as u64);
                tracing::info!(expired = n, "swept expired sessions");
            }
            Err(e) => tracing::warn!("sweeping expired sessions failed: {e}"),
        }
        match self.handles.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "swept expired handles"),
            Err(e) => tracing::warn!("sweeping expired handles failed: {e}"),
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

    /// Sweeps the task store: tasks past their TTL, and leases that lapsed
    /// (whose hook fails the task, or runs it again). Runs every third of
    /// the task lease, apart from [`upkeep`](Self::upkeep).
    pub(crate) async fn sweep_tasks(&self) {
        match self.tasks().sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "swept expired tasks and lapsed leases"),
            Err(e) => tracing::warn!("sweeping expired tasks failed: {e}"),
        }
    }

    /// Cancels every request in flight.
    pub(crate) fn cancel_all(&self) {
        self.inflight.cancel_all();
    }
}
