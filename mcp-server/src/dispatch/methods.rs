//! The methods both eras share, and those only one of them has.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use session_core::SessionRecord;
use session_core::wire::{
    ErrorObject, GetPromptParams, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, ReadResourceParams, Request, SessionStateResult,
    SessionUpdateParams, SetLevelParams, code, parse_params, to_raw,
};

use super::Dispatcher;
use super::modern::Cache;
use super::tasks::{declares_tasks, missing_tasks_capability};
use crate::RequestContext;
use crate::error::session_error_object;
use crate::registry::TaskSupport;

/// `tools/call` parameters with the arguments left unparsed, so a typed
/// tool reads them straight into its own type.
#[derive(Debug, Deserialize)]
pub(super) struct RawCall {
    pub(super) name: String,
    pub(super) arguments: Option<Box<RawValue>>,
}

/// The error for a method this server (or this era) does not have.
pub(super) fn not_found(method: &str) -> ErrorObject {
    ErrorObject::new(
        code::METHOD_NOT_FOUND,
        format!("Method not found: {method}"),
    )
}

impl Dispatcher {
    /// Runs a request's method. Branches that wait on the session manager
    /// await it boxed, so that this future (part of every request's) stays
    /// small; tool, resource and prompt handlers are boxed already.
    ///
    /// `call` is a `tools/call`'s name and arguments when the caller has
    /// read them already (the modern checks do).
    pub(super) async fn route(
        &self,
        ctx: &RequestContext,
        request: &Request,
        call: Option<RawCall>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let params = request.params.as_deref();
        let registry = &self.registry;
        let modern = ctx.is_modern();
        let has_resources = !registry.resources.is_empty() || !registry.templates.is_empty();
        match request.method.as_str() {
            "tools/list" => Ok(self.finish(
                ctx,
                &ListToolsResult {
                    tools: registry.tools.definitions(),
                    next_cursor: None,
                },
                Cache::List,
            )),
            "tools/call" => {
                let call: RawCall = match call {
                    Some(call) => call,
                    None => parse_params(params)?,
                };
                let Some(tool) = registry.tools.get(&call.name) else {
                    return Err(ErrorObject::new(
                        code::INVALID_PARAMS,
                        format!("Unknown tool: {}", call.name),
                    ));
                };
                let support = registry.task_support(&call.name);
                if modern && support != TaskSupport::Never {
                    if declares_tasks(&ctx.client_capabilities()) {
                        return Box::pin(self.call_as_task(
                            ctx,
                            &call.name,
                            tool.as_ref(),
                            call.arguments,
                        ))
                        .await;
                    }
                    if support == TaskSupport::Always {
                        return Err(missing_tasks_capability(&format!("the tool {}", call.name)));
                    }
                }
                let result = tool(ctx.clone(), call.arguments).await?;
                Ok(self.finish(ctx, &result, Cache::None))
            }
            "resources/list" if has_resources => Ok(self.finish(
                ctx,
                &ListResourcesResult {
                    resources: registry.resources.definitions(),
                    next_cursor: None,
                },
                Cache::List,
            )),
            "resources/templates/list" if has_resources => Ok(self.finish(
                ctx,
                &ListResourceTemplatesResult {
                    resource_templates: registry.templates.definitions(),
                    next_cursor: None,
                },
                Cache::List,
            )),
            "resources/read" => {
                let read: ReadResourceParams = parse_params(params)?;
                match registry.read(ctx.clone(), read.uri.clone()) {
                    Some(future) => Ok(self.finish(ctx, &future.await?, Cache::Read)),
                    // 2026-07-28 moved "not found" to Invalid Params.
                    None => Err(ErrorObject::new(
                        if modern {
                            code::INVALID_PARAMS
                        } else {
                            code::RESOURCE_NOT_FOUND
                        },
                        format!("Resource not found: {}", read.uri),
                    )
                    .with_data(json!({"uri": read.uri}))),
                }
            }
            "prompts/list" if !registry.prompts.is_empty() => Ok(self.finish(
                ctx,
                &ListPromptsResult {
                    prompts: registry.prompts.definitions(),
                    next_cursor: None,
                },
                Cache::List,
            )),
            "prompts/get" => {
                let get: GetPromptParams = parse_params(params)?;
                let Some(prompt) = registry.prompts.get(&get.name) else {
                    return Err(ErrorObject::new(
                        code::INVALID_PARAMS,
                        format!("Unknown prompt: {}", get.name),
                    ));
                };
                Ok(self.finish(ctx, &prompt(ctx.clone(), get.arguments).await?, Cache::None))
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
                Ok(self.finish_value(ctx, &complete(ctx.clone(), params).await?))
            }
            method @ ("tasks/get" | "tasks/update" | "tasks/cancel") if modern => {
                Box::pin(self.task_method(ctx, method, params)).await
            }
            method if modern => Err(not_found(method)),
            method => Box::pin(self.route_legacy(ctx, method, params)).await,
        }
    }

    /// The methods only a legacy session has.
    async fn route_legacy(
        &self,
        ctx: &RequestContext,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let registry = &self.registry;
        let has_resources = !registry.resources.is_empty() || !registry.templates.is_empty();
        match method {
            "ping" => Ok(to_raw(&json!({}))),
            "initialize" => Err(ErrorObject::new(
                code::INVALID_REQUEST,
                "the session is already initialized; start a new session without MCP-Session-Id",
            )),
            "resources/subscribe" | "resources/unsubscribe" if has_resources => {
                let target: ReadResourceParams = parse_params(params)?;
                let session = ctx.require_session()?.id().clone();
                self.subscribe(&session, target.uri, method == "resources/subscribe");
                Ok(to_raw(&json!({})))
            }
            "logging/setLevel" => {
                let set: SetLevelParams = parse_params(params)?;
                let session = ctx.require_session()?;
                self.set_log_level(session.id(), set.level);
                Ok(to_raw(&json!({})))
            }
            "session/get" if self.config.session_state_extension => {
                let session = ctx.require_session()?;
                let record = crate::context::current(&self.manager, session.id())
                    .await
                    .map_err(|e| session_error_object(&e))?;
                Ok(to_raw(&state_result(&record, self.manager.clock().now())))
            }
            "session/update" if self.config.session_state_extension => {
                let update: SessionUpdateParams = parse_params(params)?;
                let record = ctx.require_session()?.update_state(update.state).await?;
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
