//! What a server offers: tools, resources, resource templates and prompts,
//! each with its handler.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use session_core::wire::{
    CallToolResult, ErrorObject, GetPromptResult, Prompt, ReadResourceResult, Resource,
    ResourceTemplate, Tool,
};

use crate::RequestContext;

/// What a handler returns: its result, or a JSON-RPC error for the client.
pub type HandlerResult<T> = Result<T, ErrorObject>;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = HandlerResult<T>> + Send>>;
pub(crate) type ToolFn =
    dyn Fn(RequestContext, Option<Box<RawValue>>) -> BoxFuture<CallToolResult> + Send + Sync;
type ResourceFn = dyn Fn(RequestContext, String) -> BoxFuture<ReadResourceResult> + Send + Sync;
type TemplateFn = dyn Fn(RequestContext, String, HashMap<String, String>) -> BoxFuture<ReadResourceResult>
    + Send
    + Sync;
type PromptFn =
    dyn Fn(RequestContext, Map<String, Value>) -> BoxFuture<GetPromptResult> + Send + Sync;
pub(crate) type CompletionFn = dyn Fn(RequestContext, Value) -> BoxFuture<Value> + Send + Sync;

/// Whether a tool may run as a task (the `io.modelcontextprotocol/tasks`
/// extension, 2026-07-28): answered at once with a durable task that the
/// client polls (`tasks/get`), while the handler runs on in the background.
/// The handler needs no task code: its result, its errors, its questions
/// ([`RequestContext::input`]) and its cancellation go through the task.
///
/// A task is created only for a request that declared the extension in its
/// own client capabilities, and only once the handler has to wait: a
/// handler that finishes when first polled answers the request directly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskSupport {
    /// Never a task (the default).
    #[default]
    Never,
    /// A task when the request declared the extension; otherwise the
    /// handler runs within the request.
    WhenDeclared,
    /// Always a task: a modern request that did not declare the extension
    /// gets -32021 (`requiredCapabilities` naming it). A legacy session has
    /// no tasks; there the handler runs within the request.
    Always,
}

/// One kind of offering: definitions in registration order, found by key.
pub(crate) struct Table<D, H: ?Sized> {
    entries: Vec<(D, Arc<H>)>,
    by_key: HashMap<String, usize>,
}

impl<D, H: ?Sized> Default for Table<D, H> {
    fn default() -> Self {
        Table {
            entries: Vec::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<D: Clone, H: ?Sized> Table<D, H> {
    /// Adds or replaces the entry under `key`.
    fn insert(&mut self, key: String, def: D, handler: Arc<H>) {
        match self.by_key.get(&key) {
            Some(&i) => self.entries[i] = (def, handler),
            None => {
                self.by_key.insert(key, self.entries.len());
                self.entries.push((def, handler));
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Arc<H>> {
        self.by_key.get(key).map(|&i| &self.entries[i].1)
    }

    pub(crate) fn definitions(&self) -> Vec<D> {
        self.entries.iter().map(|(d, _)| d.clone()).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &(D, Arc<H>)> {
        self.entries.iter()
    }
}

/// A tool argument mirrored into an HTTP header (`x-mcp-header` in its
/// input schema, SEP-2243).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderParam {
    /// The name as the schema gives it (`Region`).
    pub(crate) name: String,
    /// The name part of the header, lowercased (`region` for
    /// `Mcp-Param-Region`).
    pub(crate) header: String,
    /// The chain of `properties` keys leading to the argument.
    pub(crate) path: Vec<String>,
}

/// The arguments of a tool's input schema marked `x-mcp-header`, reachable
/// through `properties` keys alone (as the spec requires).
pub(crate) fn header_params(schema: &Value) -> Vec<HeaderParam> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<HeaderParam>) {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, property) in properties {
            path.push(key.clone());
            if let Some(name) = property.get("x-mcp-header").and_then(Value::as_str) {
                out.push(HeaderParam {
                    name: name.to_string(),
                    header: name.to_ascii_lowercase(),
                    path: path.clone(),
                });
            }
            walk(property, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out);
    out
}

/// Everything a server offers.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) tools: Table<Tool, ToolFn>,
    /// Tools' arguments mirrored into headers, by tool name (only tools
    /// that have some).
    pub(crate) headers: HashMap<String, Vec<HeaderParam>>,
    pub(crate) resources: Table<Resource, ResourceFn>,
    pub(crate) templates: Table<ResourceTemplate, TemplateFn>,
    pub(crate) prompts: Table<Prompt, PromptFn>,
    pub(crate) completion: Option<Arc<CompletionFn>>,
    /// Tools that may run as tasks, by name.
    pub(crate) task_support: HashMap<String, TaskSupport>,
    /// Tools declared safe to run again from the start when their task's
    /// worker is lost.
    pub(crate) rerun_safe: std::collections::HashSet<String>,
    /// Scopes a caller's token must carry to call a tool, by name.
    pub(crate) tool_scopes: HashMap<String, Vec<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.tools.by_key.keys().collect::<Vec<_>>())
            .field(
                "resources",
                &self.resources.by_key.keys().collect::<Vec<_>>(),
            )
            .field(
                "templates",
                &self.templates.by_key.keys().collect::<Vec<_>>(),
            )
            .field("prompts", &self.prompts.by_key.keys().collect::<Vec<_>>())
            .field("completion", &self.completion.is_some())
            .finish()
    }
}

impl Registry {
    /// Whether tool `name` may run as a task.
    /// The scopes a token must carry to call tool `name` (none if empty).
    pub(crate) fn tool_scopes(&self, name: &str) -> &[String] {
        self.tool_scopes.get(name).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn task_support(&self, name: &str) -> TaskSupport {
        self.task_support.get(name).copied().unwrap_or_default()
    }

    /// The arguments of tool `name` mirrored into headers, if any.
    pub(crate) fn header_params(&self, name: &str) -> Option<&[HeaderParam]> {
        self.headers.get(name).map(Vec::as_slice)
    }

    pub(crate) fn add_tool<F, Fut>(&mut self, tool: Tool, handler: F)
    where
        F: Fn(RequestContext, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<CallToolResult>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.add_raw_tool(tool, move |ctx, args| {
            let handler = handler.clone();
            async move {
                match parse_arguments::<Map<String, Value>>(args.as_deref()) {
                    Ok(args) => handler(ctx, args).await,
                    Err(error) => Ok(error),
                }
            }
        });
    }

    pub(crate) fn add_typed_tool<A, F, Fut>(&mut self, tool: Tool, handler: F)
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(RequestContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<CallToolResult>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.add_raw_tool(tool, move |ctx, args| {
            let handler = handler.clone();
            async move {
                match parse_arguments::<A>(args.as_deref()) {
                    Ok(args) => handler(ctx, args).await,
                    Err(error) => Ok(error),
                }
            }
        });
    }

    fn add_raw_tool<F, Fut>(&mut self, tool: Tool, handler: F)
    where
        F: Fn(RequestContext, Option<Box<RawValue>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<CallToolResult>> + Send + 'static,
    {
        let call: Arc<ToolFn> = Arc::new(move |ctx, args| Box::pin(handler(ctx, args)));
        let mapped = header_params(&tool.input_schema);
        if mapped.is_empty() {
            self.headers.remove(&tool.name);
        } else {
            self.headers.insert(tool.name.clone(), mapped);
        }
        self.tools.insert(tool.name.clone(), tool, call);
    }

    pub(crate) fn add_resource<F, Fut>(&mut self, resource: Resource, handler: F)
    where
        F: Fn(RequestContext, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<ReadResourceResult>> + Send + 'static,
    {
        let read: Arc<ResourceFn> = Arc::new(move |ctx, uri| Box::pin(handler(ctx, uri)));
        self.resources.insert(resource.uri.clone(), resource, read);
    }

    pub(crate) fn add_template<F, Fut>(&mut self, template: ResourceTemplate, handler: F)
    where
        F: Fn(RequestContext, String, HashMap<String, String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<ReadResourceResult>> + Send + 'static,
    {
        let read: Arc<TemplateFn> =
            Arc::new(move |ctx, uri, vars| Box::pin(handler(ctx, uri, vars)));
        self.templates
            .insert(template.uri_template.clone(), template, read);
    }

    pub(crate) fn add_prompt<F, Fut>(&mut self, prompt: Prompt, handler: F)
    where
        F: Fn(RequestContext, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<GetPromptResult>> + Send + 'static,
    {
        let get: Arc<PromptFn> = Arc::new(move |ctx, args| Box::pin(handler(ctx, args)));
        self.prompts.insert(prompt.name.clone(), prompt, get);
    }

    pub(crate) fn set_completion<F, Fut>(&mut self, handler: F)
    where
        F: Fn(RequestContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<Value>> + Send + 'static,
    {
        self.completion = Some(Arc::new(move |ctx, params| Box::pin(handler(ctx, params))));
    }

    /// The handler for reading `uri`: a resource of that exact URI, else the
    /// first template that matches it, with the template's variables.
    pub(crate) fn read(
        &self,
        ctx: RequestContext,
        uri: String,
    ) -> Option<BoxFuture<ReadResourceResult>> {
        if let Some(read) = self.resources.get(&uri) {
            return Some(read(ctx, uri));
        }
        self.templates.iter().find_map(|(template, read)| {
            let vars = match_template(&template.uri_template, &uri)?;
            Some(read(ctx.clone(), uri.clone(), vars))
        })
    }
}

/// Reads a tool's arguments (absent means `{}`). Arguments that do not fit
/// are a tool error the model can see and correct (2025-11-25), not a
/// protocol error.
fn parse_arguments<A: DeserializeOwned>(args: Option<&RawValue>) -> Result<A, CallToolResult> {
    serde_json::from_str(args.map_or("{}", RawValue::get))
        .map_err(|e| CallToolResult::error(format!("Invalid arguments: {e}")))
}

/// Matches `uri` against a level-1 URI template (`{name}` expands to one or
/// more characters other than `/`), returning the variables.
pub(crate) fn match_template(template: &str, uri: &str) -> Option<HashMap<String, String>> {
    let mut vars = HashMap::new();
    let (mut t, mut u) = (template, uri);
    while !t.is_empty() {
        match t.find('{') {
            Some(0) => {
                let close = t.find('}')?;
                let name = &t[1..close];
                t = &t[close + 1..];
                // The variable runs to the next literal of the template.
                let next_literal = t.find('{').map_or(t, |i| &t[..i]);
                let end = if next_literal.is_empty() {
                    u.find('/').unwrap_or(u.len())
                } else {
                    u.find(next_literal)?
                };
                let value = &u[..end];
                if value.is_empty() || value.contains('/') {
                    return None;
                }
                vars.insert(name.to_string(), value.to_string());
                u = &u[end..];
            }
            Some(i) => {
                u = u.strip_prefix(&t[..i])?;
                t = &t[i..];
            }
            None => {
                u = u.strip_prefix(t)?;
                t = "";
            }
        }
    }
    u.is_empty().then_some(vars)
}

#[cfg(test)]
mod tests {
    use super::{HeaderParam, header_params, match_template};
    use serde_json::json;

    #[test]
    fn mirrored_arguments_are_found_through_properties_only() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "nested": {"type": "object", "properties": {
                "zone": {"type": "string", "x-mcp-header": "Zone"}
            }},
            "list": {"type": "array", "items": {"type": "string", "x-mcp-header": "Item"}}
        }});
        let found = header_params(&schema);
        assert_eq!(
            found,
            vec![
                HeaderParam {
                    name: "Zone".into(),
                    header: "zone".into(),
                    path: vec!["nested".into(), "zone".into()]
                },
                HeaderParam {
                    name: "Region".into(),
                    header: "region".into(),
                    path: vec!["region".into()]
                },
            ]
        );
    }

    #[test]
    fn templates_match_whole_segments() {
        let vars = match_template("test://template/{id}/data", "test://template/42/data").unwrap();
        assert_eq!(vars["id"], "42");
        assert!(match_template("test://template/{id}/data", "test://template//data").is_none());
        assert!(match_template("test://template/{id}/data", "test://template/4/2/data").is_none());
        assert!(match_template("test://template/{id}/data", "test://template/42/datax").is_none());
        let vars = match_template("a://{x}-{y}", "a://1-2").unwrap();
        assert_eq!((vars["x"].as_str(), vars["y"].as_str()), ("1", "2"));
        assert!(
            match_template("plain://uri", "plain://uri")
                .unwrap()
                .is_empty()
        );
    }
}
