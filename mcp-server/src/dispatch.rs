//! The MCP dispatcher: typed messages in, typed messages out. It knows
//! sessions and methods, and nothing of HTTP or stdio.

use futures_util::FutureExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use session_core::wire::{
    CancelledParams, ErrorObject, GetPromptParams, InitializeParams, InitializeResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    MODERN_PROTOCOL_VERSION, Notification, ReadResourceParams, Request, Response,
    SESSION_STATE_CAPABILITY, SUPPORTED_PROTOCOL_VERSIONS, SessionStateResult, SessionUpdateParams,
    SetLevelParams, code, negotiate, parse_params, to_raw,
};
use session_core::{NewSession, SessionRecord, SessionStatus};

use crate::context::{Outbox, RequestContext, SessionHandle};
use crate::error::{Rejection, session_error_object};
use crate::server::Shared;

/// The parts of `params._meta` the dispatcher reads.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Meta {
    #[serde(rename = "progressToken")]
    pub(crate) progress_token: Option<Value>,
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    pub(crate) protocol_version: Option<String>,
}

/// `tools/call` parameters with the arguments left unparsed, so a typed
/// tool reads them straight into its own type.
#[derive(Debug, Deserialize)]
struct RawCall {
    name: String,
    arguments: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
struct WithMeta {
    #[serde(rename = "_meta")]
    meta: Option<Meta>,
}

/// Reads `params._meta`, ignoring anything malformed (the method's own
/// parameter check reports that).
pub(crate) fn meta(params: Option<&RawValue>) -> Meta {
    params
        .filter(|p| p.get().contains("\"_meta\""))
        .and_then(|p| serde_json::from_str::<WithMeta>(p.get()).ok())
        .and_then(|w| w.meta)
        .unwrap_or_default()
}

/// Whether a message asks for the sessionless revision: `server/discover`,
/// or a `_meta` protocol version. Returns the revision asked for.
pub(crate) fn modern_revision(method: &str, params: Option<&RawValue>) -> Option<String> {
    if let Some(version) = meta(params).protocol_version {
        return Some(version);
    }
    (method == "server/discover").then(|| MODERN_PROTOCOL_VERSION.to_string())
}

impl Shared {
    /// The `initialize` result for each supported revision, serialized once.
    pub(crate) fn initialize_results(&self) -> Vec<(&'static str, Box<RawValue>)> {
        SUPPORTED_PROTOCOL_VERSIONS
            .iter()
            .map(|version| {
                let result = InitializeResult {
                    protocol_version: (*version).to_string(),
                    capabilities: self.capabilities(),
                    server_info: self.info.clone(),
                    instructions: self.instructions.clone(),
                };
                (*version, to_raw(&result))
            })
            .collect()
    }

    /// The capabilities announced in `initialize`.
    fn capabilities(&self) -> Value {
        let mut caps = json!({"tools": {"listChanged": false}, "logging": {}});
        if self.registry.completion.is_some() {
            caps["completions"] = json!({});
        }
        if !self.registry.resources.is_empty() || !self.registry.templates.is_empty() {
            caps["resources"] = json!({"subscribe": true, "listChanged": false});
        }
        if !self.registry.prompts.is_empty() {
            caps["prompts"] = json!({"listChanged": false});
        }
        if self.config.session_state_extension {
            caps["experimental"] = json!({ SESSION_STATE_CAPABILITY: {} });
        }
        caps
    }

    /// Handles `initialize`: negotiates the revision and creates the
    /// session, bound to `principal` if there is one. Returns the response
    /// and the new session; invalid parameters get an error response and no
    /// session.
    pub(crate) async fn initialize(
        &self,
        request: &Request,
        principal: Option<&str>,
        idle_timeout: Option<std::time::Duration>,
    ) -> Result<(Option<SessionRecord>, Response), Rejection> {
        let params: InitializeParams = match parse_params(request.params.as_deref()) {
            Ok(params) => params,
            Err(error) => return Ok((None, Response::error(Some(request.id.clone()), error))),
        };
        let version = negotiate(&params.protocol_version);
        let mut new = NewSession::new()
            .protocol_version(version)
            .client_info_raw(params.client_info)
            .capabilities_raw(params.capabilities)
            .initializing(self.config.sessions.handshake_timeout);
        if let Some(principal) = principal {
            new = new.owner(principal);
        }
        if let Some(idle_timeout) = idle_timeout {
            new = new.idle_timeout(idle_timeout);
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
                return Ok((None, Response::error(Some(request.id.clone()), error)));
            }
            Err(e) => return Err(Rejection::from_session(&e)),
        };
        let result = self
            .initialize_results
            .get()
            .and_then(|all| all.iter().find(|(v, _)| *v == version))
            .map(|(_, result)| result.clone())
            .unwrap_or_else(|| {
                to_raw(&InitializeResult {
                    protocol_version: version.to_string(),
                    capabilities: self.capabilities(),
                    server_info: self.info.clone(),
                    instructions: self.instructions.clone(),
                })
            });
        tracing::debug!(session = %record.id(), version, "session created");
        Ok((Some(record), Response::ok(request.id.clone(), result)))
    }

    /// Handles a notification in a session.
    pub(crate) async fn notification(&self, session: &SessionRecord, note: &Notification) {
        match note.method.as_str() {
            "notifications/initialized" => {
                if session.stored_status() == SessionStatus::Initializing
                    && let Err(e) = self.manager.activate_from(session.clone()).await
                {
                    tracing::debug!(session = %session.id(), "cannot activate: {e}");
                }
            }
            "notifications/cancelled" => {
                if let Ok(params) = parse_params::<CancelledParams>(note.params.as_deref()) {
                    let cancelled = self.inflight.cancel(session.id(), &params.request_id);
                    tracing::debug!(session = %session.id(), request = %params.request_id, cancelled, "cancel");
                }
            }
            other => tracing::trace!(method = other, "notification ignored"),
        }
    }

    /// Handles a request in a session. Returns `None` when the request was
    /// cancelled: its response must not be sent.
    pub(crate) async fn request(
        self: std::sync::Arc<Self>,
        session: SessionRecord,
        request: Request,
        outbox: Outbox,
    ) -> Option<Response> {
        if session.stored_status() == SessionStatus::Initializing && request.method != "ping" {
            // A client that skips `notifications/initialized` still gets
            // served; its session must not die at the handshake deadline.
            let _ = Box::pin(self.manager.activate(session.id())).await;
        }
        let Some(guard) = self.inflight.start(session.id(), &request.id) else {
            // The id would make cancellation ambiguous; ids must be unique
            // among a session's requests.
            let error = ErrorObject::new(
                code::INVALID_REQUEST,
                format!(
                    "Invalid Request: request id {} is already in use in this session",
                    request.id
                ),
            );
            return Some(Response::error(Some(request.id), error));
        };
        let meta = meta(request.params.as_deref());
        let handle = SessionHandle::new(self.manager.clone(), session);
        let session_id = handle.id().clone();
        let level = self.log_level(&session_id);
        let ctx = RequestContext::new(
            request.id.clone(),
            Some(handle),
            meta.progress_token,
            guard.token.clone(),
            outbox,
            level,
            self.pending.clone(),
        );
        // A handler that panics fails its request, not the connection.
        let routed = std::panic::AssertUnwindSafe(self.route(&ctx, &request)).catch_unwind();
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

    /// Runs a request's method. Branches that wait on the session manager
    /// await it boxed, so that this future (part of every request's) stays
    /// small; tool, resource and prompt handlers are boxed already.
    async fn route(
        &self,
        ctx: &RequestContext,
        request: &Request,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let params = request.params.as_deref();
        let registry = &self.registry;
        let not_found = |what: &str| {
            ErrorObject::new(code::METHOD_NOT_FOUND, format!("Method not found: {what}"))
        };
        match request.method.as_str() {
            "ping" => Ok(to_raw(&json!({}))),
            "initialize" => Err(ErrorObject::new(
                code::INVALID_REQUEST,
                "the session is already initialized; start a new session without MCP-Session-Id",
            )),
            "tools/list" => Ok(to_raw(&ListToolsResult {
                tools: registry.tools.definitions(),
                next_cursor: None,
            })),
            "tools/call" => {
                let call: RawCall = parse_params(params)?;
                let Some(tool) = registry.tools.get(&call.name) else {
                    return Err(ErrorObject::new(
                        code::INVALID_PARAMS,
                        format!("Unknown tool: {}", call.name),
                    ));
                };
                let result = tool(ctx.clone(), call.arguments).await?;
                Ok(to_raw(&result))
            }
            "resources/list"
                if !registry.resources.is_empty() || !registry.templates.is_empty() =>
            {
                Ok(to_raw(&ListResourcesResult {
                    resources: registry.resources.definitions(),
                    next_cursor: None,
                }))
            }
            "resources/templates/list"
                if !registry.resources.is_empty() || !registry.templates.is_empty() =>
            {
                Ok(to_raw(&ListResourceTemplatesResult {
                    resource_templates: registry.templates.definitions(),
                    next_cursor: None,
                }))
            }
            "resources/read" => {
                let read: ReadResourceParams = parse_params(params)?;
                match registry.read(ctx.clone(), read.uri.clone()) {
                    Some(future) => Ok(to_raw(&future.await?)),
                    None => Err(ErrorObject::new(
                        code::RESOURCE_NOT_FOUND,
                        format!("Resource not found: {}", read.uri),
                    )
                    .with_data(json!({"uri": read.uri}))),
                }
            }
            "resources/subscribe" | "resources/unsubscribe"
                if !registry.resources.is_empty() || !registry.templates.is_empty() =>
            {
                let target: ReadResourceParams = parse_params(params)?;
                let session = ctx.require_session()?.id().clone();
                let mut subscriptions = self.subscriptions.lock();
                if request.method == "resources/subscribe" {
                    subscriptions.entry(session).or_default().insert(target.uri);
                } else if let Some(uris) = subscriptions.get_mut(&session) {
                    uris.remove(&target.uri);
                    if uris.is_empty() {
                        subscriptions.remove(&session);
                    }
                }
                Ok(to_raw(&json!({})))
            }
            "prompts/list" if !registry.prompts.is_empty() => Ok(to_raw(&ListPromptsResult {
                prompts: registry.prompts.definitions(),
                next_cursor: None,
            })),
            "prompts/get" => {
                let get: GetPromptParams = parse_params(params)?;
                let Some(prompt) = registry.prompts.get(&get.name) else {
                    return Err(ErrorObject::new(
                        code::INVALID_PARAMS,
                        format!("Unknown prompt: {}", get.name),
                    ));
                };
                Ok(to_raw(&prompt(ctx.clone(), get.arguments).await?))
            }
            "completion/complete" => {
                let Some(complete) = &registry.completion else {
                    return Err(not_found("completion/complete"));
                };
                let params: Value = match params {
                    Some(p) => serde_json::from_str(p.get()).map_err(|e| {
                        ErrorObject::new(code::INVALID_PARAMS, format!("Invalid params: {e}"))
                    })?,
                    None => Value::Object(serde_json::Map::new()),
                };
                Ok(to_raw(&complete(ctx.clone(), params).await?))
            }
            "logging/setLevel" => {
                let set: SetLevelParams = parse_params(params)?;
                let session = ctx.require_session()?;
                self.levels.lock().insert(session.id().clone(), set.level);
                Ok(to_raw(&json!({})))
            }
            "session/get" if self.config.session_state_extension => {
                let session = ctx.require_session()?;
                let record = Box::pin(self.manager.get(session.id()))
                    .await
                    .map_err(|e| session_error_object(&e))?;
                Ok(to_raw(&state_result(&record, self.manager.clock().now())))
            }
            "session/update" if self.config.session_state_extension => {
                let update: SessionUpdateParams = parse_params(params)?;
                let record = Box::pin(ctx.require_session()?.update_state(update.state)).await?;
                Ok(to_raw(&state_result(&record, self.manager.clock().now())))
            }
            other => Err(not_found(other)),
        }
    }
}

/// The session-state extension's view of a record.
pub(crate) fn state_result(
    record: &SessionRecord,
    now: session_core::Timestamp,
) -> SessionStateResult {
    SessionStateResult {
        session_id: record.id().to_string(),
        status: record.status_at(now).to_string(),
        state: record.state().clone(),
        created_at: record.created_at().to_rfc3339(),
        last_activity: record.last_activity().to_rfc3339(),
        expires_at: record.expires_at().to_rfc3339(),
    }
}
