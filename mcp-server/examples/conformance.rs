//! The fixture server of the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`), built on this library: the tools,
//! resources and prompts its server scenarios call, with the answers they
//! expect. Run by `cargo xtask interop`, not shipped in the binary.
//!
//! ```text
//! cargo run -p mcp-server --example conformance -- [ADDR]
//! ```
//!
//! Prints `listening on http://ADDR/mcp` on stdout once ready.

use std::time::Duration;

use mcp_server::{HandlerResult, HttpConfig, McpServer, RequestContext, ServerConfig, tool};
use serde_json::{Map, Value, json};
use session_core::wire::{
    CallToolResult, Content, GetPromptResult, LoggingLevel, Prompt, PromptArgument, PromptMessage,
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
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

async fn elicit(
    ctx: &RequestContext,
    message: &str,
    schema: Value,
) -> HandlerResult<CallToolResult> {
    let answer = ctx
        .request_client(
            "elicitation/create",
            json!({"message": message, "requestedSchema": schema}),
            Duration::from_secs(30),
        )
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
                    .request_client(
                        "sampling/createMessage",
                        json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 100}),
                        Duration::from_secs(30),
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
    let server = prompts(resources(tools(builder)))
        .completion(|_ctx, _params| async {
            Ok(json!({"completion": {"values": [], "total": 0, "hasMore": false}}))
        })
        .config(ServerConfig::default())
        .build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    server
        .serve_http(listener, HttpConfig::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
