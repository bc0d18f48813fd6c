//! The modern era (2026-07-28): no session; every request carries its
//! revision and the client's capabilities in `_meta`, and every result says
//! what it is (`resultType`) and who answered (`serverInfo` in `_meta`).
//!
//! A request is checked in the order the conformance suite pins down: the
//! envelope (-32602), the mirrored `MCP-Protocol-Version` (-32020), the
//! revision (-32022), the other mirrored headers (-32020), the method
//! (-32601); then it runs, and a handler that needs input the client has not
//! given ends in `input_required` ([`super::mrtr`]).

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::FutureExt as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use session_core::wire::{
    ErrorObject, LoggingLevel, MODERN_PROTOCOL_VERSIONS, Message, Request, RequestId, Response,
    SUPPORTED_PROTOCOL_VERSIONS, code, to_raw,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::listen::{Filter, SUBSCRIPTION_ID, tagged};
use super::methods::RawCall;
use super::mirror;
use super::mrtr::Binding;
use super::{Dispatcher, Era, Origin, Outcome, Running, Scope, id_in_use};
use crate::config::CacheHint;
use crate::context::{ContextParts, INPUT_REQUIRED, ModernParts, Outbox, RequestContext};
use crate::error::Rejection;

/// The `_meta` keys of the request envelope.
const VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
const CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";
pub(super) const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// Which era a message belongs to, decided from cheap signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Legacy,
    Modern,
}

/// The era of a message: modern when its `_meta` carries the envelope, when
/// the transport declares a modern revision, or when it is
/// `server/discover`; legacy otherwise.
pub(super) fn probe(method: &str, params: Option<&RawValue>, origin: &Origin<'_>) -> Probe {
    let declared_modern = || {
        origin
            .protocol_version
            .is_some_and(|v| MODERN_PROTOCOL_VERSIONS.contains(&v))
    };
    let enveloped = || params.is_some_and(|p| super::mentions_meta(p) && has_envelope_key(p.get()));
    if declared_modern() || method == "server/discover" || enveloped() {
        Probe::Modern
    } else {
        Probe::Legacy
    }
}

/// Whether `params` has the envelope's keys in its `_meta` (the text
/// mentions them; parsed to be sure, so an argument that merely contains
/// the words does not count).
fn has_envelope_key(params: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "_meta")]
        meta: Option<Map<String, Value>>,
    }
    serde_json::from_str::<Probe>(params)
        .ok()
        .and_then(|p| p.meta)
        .is_some_and(|meta| meta.contains_key(VERSION_KEY) || meta.contains_key(CAPABILITIES_KEY))
}

/// What every modern answer carries, serialized once.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// `{"io.modelcontextprotocol/serverInfo": …}`.
    meta: Option<Box<RawValue>>,
    /// The `server/discover` result.
    discover: Option<Box<RawValue>>,
}

impl Prepared {
    pub(super) fn new(dispatcher: &Dispatcher) -> Self {
        let meta = to_raw(&json!({ SERVER_INFO_KEY: dispatcher.info }));
        let mut discover = json!({
            "resultType": "complete",
            "supportedVersions": supported_versions(),
            "capabilities": dispatcher.capabilities(true),
            "_meta": { SERVER_INFO_KEY: dispatcher.info },
        });
        if let Some(instructions) = &dispatcher.instructions {
            discover["instructions"] = json!(instructions);
        }
        let hint = dispatcher.config.discover_cache;
        discover["ttlMs"] = json!(ttl_ms(hint));
        discover["cacheScope"] = json!(hint.scope.as_str());
        Prepared {
            meta: Some(meta),
            discover: Some(to_raw(&discover)),
        }
    }
}

/// Every revision this server speaks, newest first.
pub(crate) fn supported_versions() -> Vec<&'static str> {
    MODERN_PROTOCOL_VERSIONS
        .iter()
        .chain(SUPPORTED_PROTOCOL_VERSIONS)
        .copied()
        .collect()
}

fn ttl_ms(hint: CacheHint) -> u64 {
    u64::try_from(hint.ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A result of the modern era: the method's own fields, plus `resultType`,
/// `_meta.serverInfo` and, for cacheable results, the caching hints.
#[derive(Serialize)]
struct Modern<'a, T: Serialize> {
    #[serde(flatten)]
    result: &'a T,
    #[serde(rename = "resultType")]
    result_type: &'static str,
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<&'a RawValue>,
    #[serde(rename = "ttlMs", skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(rename = "cacheScope", skip_serializing_if = "Option::is_none")]
    cache_scope: Option<&'static str>,
}

/// Which caching hint a method's result carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    None,
    List,
    Read,
}

impl Dispatcher {
    /// Serializes a method's result for the request's era.
    pub(super) fn finish<T: Serialize>(
        &self,
        ctx: &RequestContext,
        result: &T,
        cache: Cache,
    ) -> Box<RawValue> {
        if !ctx.is_modern() {
            return to_raw(result);
        }
        let hint = match cache {
            Cache::None => None,
            Cache::List => Some(self.config.list_cache),
            Cache::Read => Some(self.config.read_cache),
        };
        let modern = Modern {
            result,
            result_type: "complete",
            meta: self.modern.meta.as_deref(),
            ttl_ms: hint.map(ttl_ms),
            cache_scope: hint.map(|h| h.scope.as_str()),
        };
        to_raw(&modern)
    }

    /// [`finish`](Self::finish) for a result the handler built as JSON,
    /// which may carry `_meta` (merged) or not be an object (wrapped).
    pub(super) fn finish_value(&self, ctx: &RequestContext, result: &Value) -> Box<RawValue> {
        if ctx.is_modern() {
            self.finish_by_value(result, None)
        } else {
            to_raw(result)
        }
    }

    fn finish_by_value<T: Serialize>(&self, result: &T, hint: Option<CacheHint>) -> Box<RawValue> {
        let mut value = serde_json::to_value(result).unwrap_or(Value::Null);
        if !value.is_object() {
            value = json!({ "value": value });
        }
        let object = value.as_object_mut().expect("an object");
        object.insert("resultType".into(), json!("complete"));
        let meta = object
            .entry("_meta")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|meta| meta.insert(SERVER_INFO_KEY.into(), json!(self.info)));
        if meta.is_none() {
            object.insert("_meta".into(), json!({ SERVER_INFO_KEY: self.info }));
        }
        if let Some(hint) = hint {
            object.insert("ttlMs".into(), json!(ttl_ms(hint)));
            object.insert("cacheScope".into(), json!(hint.scope.as_str()));
        }
        to_raw(&value)
    }

    /// A message of the modern era.
    pub(super) async fn modern(self: &Arc<Self>, message: Message, origin: &Origin<'_>) -> Outcome {
        match message {
            Message::Request(request) => self.modern_request(request, origin).await,
            // Only stdio cancels by notification (`Dispatcher::handle` did);
            // on HTTP closing the response stream is the cancellation.
            Message::Notification(_) => Outcome::Accepted,
            Message::Response(_) => Outcome::rejected(
                Rejection::InvalidRequest("a 2026-07-28 client sends no responses".into()),
                None,
            ),
        }
    }

    async fn modern_request(self: &Arc<Self>, request: Request, origin: &Origin<'_>) -> Outcome {
        let checked = match self.check(&request, origin) {
            Ok(checked) => checked,
            Err(error) => return Outcome::rejected(Rejection::Protocol(error), Some(&request.id)),
        };
        match request.method.as_str() {
            "server/discover" => Outcome::Reply(Response::ok(
                request.id,
                self.modern
                    .discover
                    .clone()
                    .unwrap_or_else(|| to_raw(&json!({}))),
            )),
            "subscriptions/listen" => match Filter::parse(checked.params.as_ref()) {
                Ok(filter)
                    if filter.task_ids.is_some()
                        && !super::tasks::declares_tasks(&checked.capabilities) =>
                {
                    let error =
                        super::tasks::missing_tasks_capability("listening for notifications/tasks");
                    Outcome::Reply(Response::error(Some(request.id), error))
                }
                Ok(filter) => Outcome::Running(self.listen(request.id, filter, origin)),
                Err(error) => Outcome::Reply(Response::error(Some(request.id), error)),
            },
            _ => Outcome::Running(self.run_modern(request, checked, origin)),
        }
    }

    /// The checks every modern request passes before it runs.
    fn check(&self, request: &Request, origin: &Origin<'_>) -> Result<Checked, ErrorObject> {
        let invalid = |why: String| ErrorObject::new(code::INVALID_PARAMS, why);
        let params: Params<'_> = match request.params.as_deref() {
            Some(params) => serde_json::from_str(params.get())
                .map_err(|e| invalid(format!("Invalid params: {e}")))?,
            None => Params::default(),
        };
        let Some(meta) = &params.meta else {
            return Err(invalid(format!(
                "Invalid params: the request has no _meta; a 2026-07-28 request carries \
                 {VERSION_KEY} and {CAPABILITIES_KEY} in params._meta"
            )));
        };
        let version = match meta.version.map(text) {
            Some(Some(version)) => version,
            Some(None) => {
                return Err(invalid(format!(
                    "Invalid params: _meta.{VERSION_KEY} must be a string"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "Invalid params: _meta lacks {VERSION_KEY}"
                )));
            }
        };
        let capabilities = match meta.capabilities {
            Some(caps) if caps.get().starts_with('{') => {
                serde_json::from_str(caps.get()).unwrap_or(Value::Null)
            }
            Some(_) => {
                return Err(invalid(format!(
                    "Invalid params: _meta.{CAPABILITIES_KEY} must be an object"
                )));
            }
            None => {
                return Err(invalid(format!(
                    "Invalid params: _meta lacks {CAPABILITIES_KEY}"
                )));
            }
        };
        if let Some(mirrored) = origin.mirrored {
            match origin.protocol_version {
                Some(header) if header.trim() == version => {}
                Some(header) => {
                    return Err(mirror::mismatch(format!(
                        "MCP-Protocol-Version header value '{header}' does not match the body's {VERSION_KEY} '{version}'"
                    )));
                }
                None => {
                    return Err(mirror::mismatch(
                        "the MCP-Protocol-Version header is missing".into(),
                    ));
                }
            }
            if !MODERN_PROTOCOL_VERSIONS.contains(&&*version) {
                return Err(unsupported(&version));
            }
            mirror::check(
                &self.registry,
                &request.method,
                params.name.as_deref(),
                params.uri.as_deref(),
                params.task_id.as_deref(),
                params.arguments,
                mirrored,
            )?;
        } else if !MODERN_PROTOCOL_VERSIONS.contains(&&*version) {
            return Err(unsupported(&version));
        }
        if !self.serves(&request.method) {
            return Err(super::methods::not_found(&request.method));
        }
        let log_level = match meta.log_level {
            None => None,
            Some(level) => Some(serde_json::from_str(level.get()).map_err(|_| {
                invalid(format!(
                    "Invalid params: _meta.{LOG_LEVEL_KEY} must be a logging level (debug … emergency)"
                ))
            })?),
        };
        let input_responses = match params.input_responses {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(invalid(
                    "Invalid params: inputResponses must be an object".into(),
                ));
            }
        };
        let request_state = match params.request_state {
            None | Some(Value::Null) => None,
            Some(Value::String(state)) => Some(state),
            Some(_) => {
                return Err(invalid(
                    "Invalid params: requestState must be a string".into(),
                ));
            }
        };
        let call = match (request.method.as_str(), params.name) {
            ("tools/call", Some(name)) => Some(RawCall {
                name: name.into_owned(),
                arguments: params.arguments.map(ToOwned::to_owned),
            }),
            _ => None,
        };
        Ok(Checked {
            call,
            capabilities,
            log_level,
            progress_token: meta
                .progress_token
                .map(|token| serde_json::from_str(token.get()).unwrap_or(Value::Null)),
            input_responses,
            request_state,
            params: request
                .params
                .as_deref()
                .filter(|_| request.method == "subscriptions/listen")
                .and_then(|p| serde_json::from_str(p.get()).ok()),
        })
    }

    /// Whether this server answers `method` in the modern era.
    fn serves(&self, method: &str) -> bool {
        let registry = &self.registry;
        let resources = !registry.resources.is_empty() || !registry.templates.is_empty();
        match method {
            "server/discover" | "subscriptions/listen" | "tools/list" | "tools/call" => true,
            "tasks/get" | "tasks/update" | "tasks/cancel" => true,
            "completion/complete" => registry.completion.is_some(),
            "resources/list" | "resources/templates/list" | "resources/read" => resources,
            "prompts/list" | "prompts/get" => !registry.prompts.is_empty(),
            _ => false,
        }
    }

    /// Starts a modern request.
    fn run_modern(
        self: &Arc<Self>,
        request: Request,
        checked: Checked,
        origin: &Origin<'_>,
    ) -> Running {
        let (tx, rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let scope = origin.scope.unwrap_or_else(|| self.new_scope());
        let principal = origin.principal.map(str::to_string);
        let handling = Box::pin(self.clone().modern_run(
            request,
            checked,
            scope,
            principal,
            Outbox(tx),
            cancel.clone(),
        ));
        Running {
            era: Era::Modern,
            handling,
            messages: rx,
            cancel: Some(cancel),
            streams_only: false,
        }
    }

    /// Runs a checked modern request to its response (`None`: cancelled).
    ///
    /// An `async` block rather than an `async fn`: the block keeps its
    /// captures once, where an `async fn` would hold its arguments twice
    /// (and `Checked` is large).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn's future holds its arguments twice"
    )]
    fn modern_run(
        self: Arc<Self>,
        request: Request,
        checked: Checked,
        scope: u64,
        principal: Option<String>,
        outbox: Outbox,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = Option<Response>> + Send {
        async move {
            let Some(guard) =
                self.inflight
                    .start_with(Scope::Connection(scope), &request.id, cancel)
            else {
                return Some(id_in_use(request.id));
            };
            // Taken apart at once: what is not needed goes now, not at the end
            // (a whole `Checked` would be held across every await).
            let Checked {
                capabilities,
                log_level,
                progress_token,
                input_responses,
                request_state,
                params: _,
                call,
            } = checked;
            // What a requestState is bound to, read only for a multi
            // round-trip request.
            let target = || target_of(&request);
            let mut inputs = match &request_state {
                Some(state) => {
                    let now = self.manager.clock().now();
                    let target = target();
                    let binding = Binding {
                        method: &request.method,
                        target: &target,
                        principal: principal.as_deref(),
                    };
                    // Boxed: the key's first read from the store is a large
                    // future, and this one is part of every modern request's.
                    match Box::pin(self.state_key.open(&self.handles, state, binding, now)).await {
                        Ok(answers) => answers,
                        Err(error) => return Some(Response::error(Some(request.id), error)),
                    }
                }
                None => Map::new(),
            };
            drop(request_state);
            inputs.extend(input_responses);
            let ctx = RequestContext::new(ContextParts {
                task: None,
                request_id: request.id.clone(),
                session: None,
                progress_token,
                cancel: guard.token.clone(),
                outbox,
                log_level,
                pending: self.pending.clone(),
                principal,
                handles: self.handles.clone(),
                modern: Some(Box::new(ModernParts {
                    capabilities,
                    inputs,
                    asked: parking_lot::Mutex::default(),
                })),
            });
            // A handler that panics fails its request, not the connection.
            // Boxed: the method's future is large and this one small enough
            // for the allocator's fast path.
            let routed = std::panic::AssertUnwindSafe(Box::pin(self.route(&ctx, &request, call)))
                .catch_unwind();
            let outcome = tokio::select! {
                outcome = routed => outcome.unwrap_or_else(|_| {
                    tracing::error!(method = %request.method, "the handler panicked");
                    Err(ErrorObject::new(code::INTERNAL_ERROR, "Internal error: the handler failed"))
                }),
                () = guard.token.cancelled() => return None,
            };
            // A handler that ended because it was cancelled is not answered
            // either.
            if guard.token.is_cancelled() {
                return None;
            }
            let outcome = match outcome {
                Err(error) if error.code == INPUT_REQUIRED => {
                    let target = target();
                    let binding = Binding {
                        method: &request.method,
                        target: &target,
                        principal: ctx.principal(),
                    };
                    Box::pin(self.input_required(&ctx, &request, binding)).await
                }
                other => other,
            };
            Some(Response {
                id: Some(request.id),
                outcome,
            })
        }
    }

    /// The `input_required` result for a handler that asked for input.
    async fn input_required(
        &self,
        ctx: &RequestContext,
        request: &Request,
        binding: Binding<'_>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let allowed = matches!(
            request.method.as_str(),
            "tools/call" | "prompts/get" | "resources/read"
        );
        let Some((asked, known)) = ctx.take_asked().filter(|_| allowed) else {
            return Err(ErrorObject::new(
                code::INTERNAL_ERROR,
                format!(
                    "Internal error: the handler asked for input, which {} cannot request",
                    request.method
                ),
            ));
        };
        let expires = self
            .manager
            .clock()
            .now()
            .saturating_add(self.config.request_state_ttl);
        let state = self
            .state_key
            .seal(&self.handles, binding, expires, known.clone())
            .await?;
        let requests: Map<String, Value> = asked.into_iter().collect();
        Ok(to_raw(&json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": state,
            "_meta": self.modern.meta.as_deref(),
        })))
    }

    /// `subscriptions/listen`: acknowledges the filter (what this server
    /// honours of it), then delivers the changes asked for until the
    /// client goes away or the server shuts down, when it answers the
    /// request.
    fn listen(self: &Arc<Self>, id: RequestId, filter: Filter, origin: &Origin<'_>) -> Running {
        let registry = &self.registry;
        let resources = !registry.resources.is_empty() || !registry.templates.is_empty();
        let filter = filter.honoured(!registry.prompts.is_empty(), resources);
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let dispatcher = self.clone();
        let end = cancel.clone();
        let scope = origin.scope.unwrap_or_else(|| self.new_scope());
        let principal = origin.principal.map(str::to_string);
        let handling = Box::pin(async move {
            // In flight like any request: cancelled by id on stdio, waited
            // for (it ends at once) at shutdown.
            let Some(guard) = dispatcher.inflight.start(Scope::Connection(scope), &id) else {
                return Some(id_in_use(id));
            };
            let ack = tagged(
                "notifications/subscriptions/acknowledged",
                &id,
                json!({ "notifications": filter }),
            );
            if tx.send(Box::new(ack)).await.is_err() {
                return None;
            }
            let _registration =
                dispatcher
                    .listeners
                    .add(filter, id.clone(), principal, tx, end.clone());
            tokio::select! {
                () = end.cancelled() => None,
                () = guard.token.cancelled() => None,
                () = dispatcher.shutdown.cancelled() => {
                    let result = json!({
                        "resultType": "complete",
                        "_meta": { SUBSCRIPTION_ID: id },
                    });
                    Some(Response::ok(id, to_raw(&result)))
                }
            }
        });
        Running {
            era: Era::Modern,
            handling,
            messages: rx,
            cancel: Some(cancel),
            streams_only: true,
        }
    }
}

/// What [`Dispatcher::check`] found in a valid request.
#[derive(Debug)]
struct Checked {
    capabilities: Value,
    log_level: Option<LoggingLevel>,
    progress_token: Option<Value>,
    input_responses: Map<String, Value>,
    request_state: Option<String>,
    /// The whole params, for methods that read more of them.
    params: Option<Value>,
    /// A `tools/call`'s name and arguments, read here once.
    call: Option<RawCall>,
}

/// The parts of a modern request's params the checks read, borrowed from
/// the request.
#[derive(Debug, Default, Deserialize)]
struct Params<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<Envelope<'a>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    /// `tasks/*`'s task (mirrored in `Mcp-Name`).
    #[serde(rename = "taskId", borrow, default)]
    task_id: Option<Cow<'a, str>>,
    #[serde(rename = "inputResponses", default)]
    input_responses: Option<Value>,
    #[serde(rename = "requestState", default)]
    request_state: Option<Value>,
}

/// The envelope in `params._meta`, its values as sent.
#[derive(Debug, Default, Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
    version: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", borrow, default)]
    capabilities: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/logLevel", borrow, default)]
    log_level: Option<&'a RawValue>,
    #[serde(rename = "progressToken", borrow, default)]
    progress_token: Option<&'a RawValue>,
}

/// A JSON string's text (borrowed unless it has escapes); `None` for any
/// other JSON value.
fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}

fn unsupported(version: &str) -> ErrorObject {
    ErrorObject::new(
        code::UNSUPPORTED_PROTOCOL_VERSION,
        format!("Unsupported protocol version: {version}"),
    )
    .with_data(json!({"supported": supported_versions(), "requested": version}))
}

/// What a request names: `params.name` (a tool or prompt) or `params.uri`
/// (a resource); what a `requestState` is bound to besides the method.
fn target_of(request: &Request) -> String {
    #[derive(Deserialize)]
    struct Named {
        name: Option<String>,
        uri: Option<String>,
    }
    request
        .params
        .as_deref()
        .and_then(|p| serde_json::from_str::<Named>(p.get()).ok())
        .and_then(|n| n.name.or(n.uri))
        .unwrap_or_default()
}
