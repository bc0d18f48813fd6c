//! The fixture server of the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`), built on this library: the tools,
//! resources and prompts its server scenarios call, with the answers they
//! expect, in both eras (legacy sessions and 2026-07-28). Run by `cargo
//! xtask interop`, not shipped in the binary.
//!
//! ```text
//! cargo run -p mcp-server --example conformance -- [ADDR]
//! ```
//!
//! Prints `listening on http://ADDR/mcp` on stdout once ready.

use std::sync::OnceLock;
use std::time::Duration;

use mcp_server::{
    HandlerResult, HttpConfig, InputRequest, McpServer, RequestContext, ServerConfig, TaskSupport,
    tool,
};
use serde_json::{Map, Value, json};
use session_core::wire::{
    CallToolResult, Content, ErrorObject, GetPromptResult, LoggingLevel, Prompt, PromptArgument,
    PromptMessage, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

fn text_resource(uri: &str, mime: &str, text: &str) -> Content {
    Content::Resource {
        resource: ResourceContents {
            uri: uri.into(),
            mime_type: Some(mime.into()),
            text: Some(text.into()),
            blob: None,
        },
    }
}

fn image() -> Content {
    Content::Image {
        data: PNG.into(),
        mime_type: "image/png".into(),
    }
}

fn result(content: Vec<Content>) -> HandlerResult<CallToolResult> {
    Ok(CallToolResult {
        content,
        ..CallToolResult::default()
    })
}

/// The server, for the tools that announce changes.
static SERVER: OnceLock<McpServer> = OnceLock::new();

async fn elicit(
    ctx: &RequestContext,
    message: &str,
    schema: Value,
) -> HandlerResult<CallToolResult> {
    let answer = ctx
        .input("elicitation", InputRequest::elicit(message, schema))
        .await?;
    result(vec![Content::text(format!(
        "User response: action={}, content={}",
        answer["action"].as_str().unwrap_or(""),
        answer["content"]
    ))])
}

fn tools(builder: mcp_server::McpServerBuilder) -> mcp_server::McpServerBuilder {
    builder
        .tool(
            tool("test_simple_text", "Returns simple text content", no_args()),
            |_, _| async { result(vec![Content::text("This is a simple text response for testing.")]) },
        )
        .tool(
            tool("test_image_content", "Returns image content", no_args()),
            |_, _| async { result(vec![image()]) },
        )
        .tool(
            tool("test_audio_content", "Returns audio content", no_args()),
            |_, _| async {
                result(vec![Content::Audio {
                    data: WAV.into(),
                    mime_type: "audio/wav".into(),
                }])
            },
        )
        .tool(
            tool("test_embedded_resource", "Returns an embedded resource", no_args()),
            |_, _| async {
                result(vec![text_resource(
                    "test://embedded-resource",
                    "text/plain",
                    "This is an embedded resource content.",
                )])
            },
        )
        .tool(
            tool("test_multiple_content_types", "Returns several content types", no_args()),
            |_, _| async {
                result(vec![
                    Content::text("Multiple content types test:"),
                    image(),
                    text_resource(
                        "test://mixed-content-resource",
                        "application/json",
                        r#"{"test":"data","value":123}"#,
                    ),
                ])
            },
        )
        .tool(
            tool("test_tool_with_logging", "Sends log messages while it runs", no_args()),
            |ctx, _| async move {
                for (i, text) in ["Tool execution started", "Tool processing data", "Tool execution completed"]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    ctx.log(LoggingLevel::Info, None, json!(text)).await;
                }
                result(vec![Content::text("Tool with logging executed successfully")])
            },
        )
        .tool(
            tool("test_error_handling", "Always fails as a tool", no_args()),
            |_, _| async {
                Ok(CallToolResult::error(
                    "This tool intentionally returns an error for testing",
                ))
            },
        )
        .tool(
            tool("test_tool_with_progress", "Reports progress", no_args()),
            |ctx, _| async move {
                for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    ctx.progress(p, Some(100.0), None).await;
                }
                result(vec![Content::text("Tool with progress completed")])
            },
        )
        .tool(
            tool(
                "test_sampling",
                "Asks the client's model",
                json!({"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}),
            ),
            |ctx, args: Map<String, Value>| async move {
                let prompt = args.get("prompt").and_then(Value::as_str).unwrap_or("").to_string();
                let answer = ctx
                    .input(
                        "sampling",
                        InputRequest::sampling(json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 100})),
                    )
                    .await?;
                let text = answer["content"]["text"].as_str().unwrap_or("").to_string();
                result(vec![Content::text(format!("LLM response: {text}"))])
            },
        )
        .tool(
            tool(
                "test_elicitation",
                "Asks the user",
                json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
            ),
            |ctx, args: Map<String, Value>| async move {
                let message = args.get("message").and_then(Value::as_str).unwrap_or("").to_string();
                let schema = json!({"type": "object", "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"}
                }, "required": ["username", "email"]});
                elicit(&ctx, &message, schema).await
            },
        )
        .tool(
            tool("test_elicitation_sep1034_defaults", "Asks with defaults", no_args()),
            |ctx, _| async move {
                let schema = json!({"type": "object", "properties": {
                    "name": {"type": "string", "default": "John Doe"},
                    "age": {"type": "integer", "default": 30},
                    "score": {"type": "number", "default": 95.5},
                    "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                    "verified": {"type": "boolean", "default": true}
                }});
                elicit(&ctx, "Please review and update the form fields with defaults", schema).await
            },
        )
        .tool(
            tool("test_elicitation_sep1330_enums", "Asks with enums", no_args()),
            |ctx, _| async move {
                let schema = json!({"type": "object", "properties": {
                    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {"type": "string", "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"}]},
                    "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"]},
                    "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                    "titledMulti": {"type": "array", "items": {"anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"}]}}
                }});
                elicit(&ctx, "Please select options from the enum fields", schema).await
            },
        )
}

fn text(text: impl Into<String>) -> HandlerResult<CallToolResult> {
    result(vec![Content::text(text)])
}

fn name_question() -> InputRequest {
    InputRequest::elicit(
        "What is your name?",
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
    )
}

fn sampling(question: &str, max_tokens: u32) -> InputRequest {
    InputRequest::sampling(json!({
        "messages": [{"role": "user", "content": {"type": "text", "text": question}}],
        "maxTokens": max_tokens
    }))
}

fn confirm() -> InputRequest {
    InputRequest::elicit(
        "Please confirm",
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}),
    )
}

/// The tools of the 2026-07-28 scenarios: diagnostics of the stateless
/// rules, change triggers for `subscriptions/listen`, mirrored headers, and
/// multi round-trip input through [`RequestContext::input`] (which in a
/// legacy session asks the client directly instead).
fn modern_tools(builder: mcp_server::McpServerBuilder) -> mcp_server::McpServerBuilder {
    builder
        .tool(
            tool(
                "test_x_mcp_header",
                "Echoes the region mirrored into the Mcp-Param-Region header",
                json!({"type": "object", "properties": {
                    "region": {"type": "string", "description": "mirrored into Mcp-Param-Region", "x-mcp-header": "Region"},
                    "level": {"type": "integer", "description": "not mirrored"}
                }}),
            ),
            |_, args: Map<String, Value>| async move {
                text(format!("region={}", args.get("region").and_then(Value::as_str).unwrap_or("<none>")))
            },
        )
        .tool(
            tool("test_missing_capability", "Needs the client's sampling capability", no_args()),
            |ctx, _| async move {
                ctx.input("llm_answer", sampling("Reply with the single word: pong", 16)).await?;
                text("sampling round-trip complete")
            },
        )
        .tool(
            tool("test_streaming_elicitation", "Answers with result frames only", no_args()),
            |_, _| async { text("stream observed: result frames only, no top-level requests") },
        )
        .tool(
            tool("test_logging_tool", "Logs only when the request asks for a log level", no_args()),
            |ctx, _| async move {
                ctx.log(LoggingLevel::Info, None, json!("test_logging_tool ran")).await;
                text("logged through the request-scoped channel")
            },
        )
        .tool(
            tool("test_trigger_tool_change", "Announces a tools/list change", no_args()),
            |_, _| async move {
                if let Some(server) = SERVER.get() {
                    server.notify_tools_list_changed().await;
                }
                text("tools/list_changed announced")
            },
        )
        .tool(
            tool("test_trigger_prompt_change", "Announces a prompts/list change", no_args()),
            |_, _| async move {
                if let Some(server) = SERVER.get() {
                    server.notify_prompts_list_changed().await;
                }
                text("prompts/list_changed announced")
            },
        )
        .tool(
            tool(
                "json_schema_2020_12_tool",
                "Takes arguments described with JSON Schema 2020-12 keywords",
                json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {
                        "street": {"type": "string"}, "city": {"type": "string"}}}},
                    "properties": {
                        "name": {"type": "string"},
                        "address": {"$ref": "#/$defs/address"},
                        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                        "phone": {"type": "string"},
                        "email": {"type": "string"}
                    },
                    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                    "then": {"required": ["phone"]},
                    "else": {"required": ["email"]},
                    "additionalProperties": false
                }),
            ),
            |_, _| async { text("schema accepted") },
        )
        .tool(
            tool("test_input_required_result_elicitation", "Asks the user's name", no_args()),
            |ctx, _| async move {
                let answer = ctx.input("user_name", name_question()).await?;
                text(format!("Hello, {}!", answer["content"]["name"].as_str().unwrap_or("stranger")))
            },
        )
        .tool(
            tool("test_input_required_result_sampling", "Asks the client's model", no_args()),
            |ctx, _| async move {
                let answer = ctx
                    .input("capital_question", sampling("What is the capital of France?", 100))
                    .await?;
                text(format!("Model said: {}", answer["content"]["text"].as_str().unwrap_or("")))
            },
        )
        .tool(
            tool("test_input_required_result_list_roots", "Asks for the client's roots", no_args()),
            |ctx, _| async move {
                let answer = ctx.input("client_roots", InputRequest::list_roots()).await?;
                let roots = answer["roots"].as_array().cloned().unwrap_or_default();
                let uris: Vec<&str> = roots.iter().filter_map(|r| r["uri"].as_str()).collect();
                text(format!("Client exposed {} root(s): {}", roots.len(), uris.join(", ")))
            },
        )
        .tool(
            tool("test_input_required_result_request_state", "Asks for a confirmation kept in requestState", no_args()),
            |ctx, _| async move {
                let answer = ctx.input("confirm", confirm()).await?;
                let ok = answer["content"]["ok"].as_bool().unwrap_or(false);
                text(format!("state-ok: confirmed={ok}"))
            },
        )
        .tool(
            tool("test_input_required_result_multiple_inputs", "Asks three things at once", no_args()),
            |ctx, _| async move {
                let answers = ctx
                    .inputs(vec![
                        ("user_name".into(), name_question()),
                        ("greeting".into(), sampling("Write a short greeting", 50)),
                        ("client_roots".into(), InputRequest::list_roots()),
                    ])
                    .await?;
                text(format!(
                    "name={}, greeting={}, roots={}",
                    answers[0]["content"]["name"].as_str().unwrap_or(""),
                    answers[1]["content"]["text"].as_str().unwrap_or(""),
                    answers[2]["roots"].as_array().map_or(0, Vec::len)
                ))
            },
        )
        .tool(
            tool("test_input_required_result_multi_round", "Asks in two rounds", no_args()),
            |ctx, _| async move {
                let name = ctx.input("step1", name_question()).await?;
                let name = name["content"]["name"].as_str().unwrap_or("someone").to_string();
                let color = ctx
                    .input(
                        "step2",
                        InputRequest::elicit(
                            format!("Which color do you like, {name}?"),
                            json!({"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}),
                        ),
                    )
                    .await?;
                text(format!(
                    "Multi-round complete: {name} likes {}",
                    color["content"]["color"].as_str().unwrap_or("nothing")
                ))
            },
        )
        .tool(
            tool("test_input_required_result_tampered_state", "Asks for a confirmation; a tampered requestState is refused", no_args()),
            |ctx, _| async move {
                ctx.input("confirm", confirm()).await?;
                text("confirmed")
            },
        )
        .tool(
            tool("test_input_required_result_capabilities", "Asks only what the client declared it can answer", no_args()),
            |ctx, _| async move {
                let caps = ctx.client_capabilities();
                let mut asks = Vec::new();
                if caps.get("sampling").is_some() {
                    asks.push(("greeting".to_string(), sampling("Write a short greeting", 50)));
                }
                if caps.get("elicitation").is_some() {
                    asks.push(("user_name".to_string(), name_question()));
                }
                let answers = ctx.inputs(asks).await?;
                text(format!("{} answer(s) received", answers.len()))
            },
        )
}

/// The tools of the tasks scenarios (`tasks-*`, the
/// `io.modelcontextprotocol/tasks` extension).
fn task_tools(builder: mcp_server::McpServerBuilder) -> mcp_server::McpServerBuilder {
    let elicit_confirm = |message: String| {
        InputRequest::elicit(
            message,
            json!({"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}),
        )
    };
    builder
        .tool(
            tool(
                "greet",
                "Greets by name (never a task)",
                json!({"type": "object", "properties": {"name": {"type": "string"}}}),
            ),
            |_, args| async move {
                text(format!(
                    "Hello, {}!",
                    args.get("name").and_then(Value::as_str).unwrap_or("World")
                ))
            },
        )
        .tool(
            tool(
                "slow_compute",
                "Sleeps `seconds`, then answers; a task when the client allows",
                json!({"type": "object", "properties": {
                    "seconds": {"type": "number", "minimum": 0},
                    "label": {"type": "string"}
                }}),
            ),
            |_, args| async move {
                let seconds = args
                    .get("seconds")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
                    .clamp(0.0, 600.0);
                let label = args
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if seconds > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                }
                text(format!("computed {label} in {seconds}s"))
            },
        )
        .task_support("slow_compute", TaskSupport::WhenDeclared)
        .tool(
            tool(
                "failing_job",
                "A task that ends in a tool error after ~1 s",
                no_args(),
            ),
            |_, _| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(CallToolResult::error("the job failed"))
            },
        )
        .task_support("failing_job", TaskSupport::Always)
        .tool(
            tool(
                "protocol_error_job",
                "A task that ends in a JSON-RPC error",
                no_args(),
            ),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(ErrorObject::new(-32603, "Internal error: the job broke"))
            },
        )
        .task_support("protocol_error_job", TaskSupport::WhenDeclared)
        .tool(
            tool(
                "confirm_delete",
                "Asks for a confirmation inside the task, then deletes (pretends to)",
                json!({"type": "object", "properties": {"filename": {"type": "string"}}}),
            ),
            move |ctx, args| async move {
                let file = args
                    .get("filename")
                    .and_then(Value::as_str)
                    .unwrap_or("the file")
                    .to_string();
                let answer = ctx
                    .input("confirm_delete", elicit_confirm(format!("Delete {file}?")))
                    .await?;
                let yes =
                    answer["action"] == "accept" && answer["content"]["confirm"] == json!(true);
                text(if yes {
                    format!("deleted {file}")
                } else {
                    format!("kept {file}")
                })
            },
        )
        .task_support("confirm_delete", TaskSupport::WhenDeclared)
        .tool(
            tool(
                "multi_input",
                "Asks two questions at once inside the task",
                no_args(),
            ),
            move |ctx, _| async move {
                let answers = ctx
                    .inputs(vec![
                        ("multi_name".into(), name_question()),
                        ("multi_confirm".into(), elicit_confirm("Go on?".into())),
                    ])
                    .await?;
                text(format!(
                    "name={}, confirmed={}",
                    answers[0]["content"]["name"].as_str().unwrap_or(""),
                    answers[1]["content"]["confirm"]
                ))
            },
        )
        .task_support("multi_input", TaskSupport::WhenDeclared)
        .tool(
            tool(
                "test_tool_with_task",
                "Asks the user's name on the request, then works on as a task",
                no_args(),
            ),
            |ctx, _| async move {
                let answer = ctx.input_before_task("user_name", name_question()).await?;
                let name = answer["content"]["name"]
                    .as_str()
                    .unwrap_or("stranger")
                    .to_string();
                tokio::time::sleep(Duration::from_millis(300)).await;
                text(format!("Hello, {name}!"))
            },
        )
        .task_support("test_tool_with_task", TaskSupport::Always)
}

fn resource(uri: &str, name: &str, mime: &str) -> Resource {
    Resource {
        uri: uri.into(),
        name: name.into(),
        title: None,
        description: Some(format!("{name} fixture")),
        mime_type: Some(mime.into()),
    }
}

fn contents(
    uri: String,
    mime: &str,
    text: Option<String>,
    blob: Option<String>,
) -> HandlerResult<ReadResourceResult> {
    Ok(ReadResourceResult {
        contents: vec![ResourceContents {
            uri,
            mime_type: Some(mime.into()),
            text,
            blob,
        }],
    })
}

fn resources(builder: mcp_server::McpServerBuilder) -> mcp_server::McpServerBuilder {
    builder
        .resource(
            resource("test://static-text", "static-text", "text/plain"),
            |_, uri| async move {
                contents(
                    uri,
                    "text/plain",
                    Some("This is the content of the static text resource.".into()),
                    None,
                )
            },
        )
        .resource(
            resource("test://static-binary", "static-binary", "image/png"),
            |_, uri| async move { contents(uri, "image/png", None, Some(PNG.into())) },
        )
        .resource(
            resource("test://watched-resource", "watched-resource", "text/plain"),
            |_, uri| async move {
                contents(
                    uri,
                    "text/plain",
                    Some("Watched resource content".into()),
                    None,
                )
            },
        )
        .resource_template(
            ResourceTemplate {
                uri_template: "test://template/{id}/data".into(),
                name: "template".into(),
                description: Some("A resource per id".into()),
                mime_type: Some("application/json".into()),
            },
            |_, uri, vars| async move {
                let id = vars.get("id").cloned().unwrap_or_default();
                let text =
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                contents(uri, "application/json", Some(text.to_string()), None)
            },
        )
}

fn prompt(name: &str, description: &str, arguments: &[&str]) -> Prompt {
    Prompt {
        name: name.into(),
        title: None,
        description: Some(description.into()),
        arguments: arguments
            .iter()
            .map(|a| PromptArgument {
                name: (*a).into(),
                description: Some(format!("The {a} argument")),
                required: Some(true),
            })
            .collect(),
    }
}

fn user(content: Content) -> PromptMessage {
    PromptMessage {
        role: "user".into(),
        content,
    }
}

fn prompts(builder: mcp_server::McpServerBuilder) -> mcp_server::McpServerBuilder {
    let arg = |args: &Map<String, Value>, name: &str| {
        args.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    builder
        .prompt(
            prompt("test_simple_prompt", "A simple prompt", &[]),
            |_, _| async {
                Ok(GetPromptResult {
                    description: None,
                    messages: vec![user(Content::text("This is a simple prompt for testing."))],
                })
            },
        )
        .prompt(
            prompt(
                "test_prompt_with_arguments",
                "A prompt with arguments",
                &["arg1", "arg2"],
            ),
            move |_, args| async move {
                let text = format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    arg(&args, "arg1"),
                    arg(&args, "arg2")
                );
                Ok(GetPromptResult {
                    description: None,
                    messages: vec![user(Content::text(text))],
                })
            },
        )
        .prompt(
            prompt(
                "test_prompt_with_embedded_resource",
                "A prompt with a resource",
                &["resourceUri"],
            ),
            move |_, args| async move {
                let uri = arg(&args, "resourceUri");
                Ok(GetPromptResult {
                    description: None,
                    messages: vec![
                        user(text_resource(
                            &uri,
                            "text/plain",
                            "Embedded resource content for testing.",
                        )),
                        user(Content::text("Please process the embedded resource above.")),
                    ],
                })
            },
        )
        .prompt(
            prompt(
                "test_input_required_result_prompt",
                "A prompt that asks for context first",
                &[],
            ),
            |ctx, _| async move {
                let answer = ctx
                    .input(
                        "user_context",
                        InputRequest::elicit(
                            "What context should the prompt use?",
                            json!({"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}),
                        ),
                    )
                    .await?;
                let context = answer["content"]["context"].as_str().unwrap_or("").to_string();
                Ok(GetPromptResult {
                    description: None,
                    messages: vec![user(Content::text(format!(
                        "Use the following context: {context}"
                    )))],
                })
            },
        )
        .prompt(
            prompt("test_prompt_with_image", "A prompt with an image", &[]),
            |_, _| async {
                Ok(GetPromptResult {
                    description: None,
                    messages: vec![
                        user(image()),
                        user(Content::text("Please analyze the image above.")),
                    ],
                })
            },
        )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let builder = McpServer::builder().name("conformance-fixtures");
    let server = prompts(resources(task_tools(modern_tools(tools(builder)))))
        .completion(|_ctx, _params| async {
            Ok(json!({"completion": {"values": [], "total": 0, "hasMore": false}}))
        })
        .config(ServerConfig::default())
        .build();
    let _ = SERVER.set(server.clone());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    server
        .serve_http(listener, HttpConfig::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
