//! The demo tools of the `mcp-server` binary: `echo`, `counter` (session
//! state) and `slow` (progress and cancellation).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use session_core::wire::{CallToolResult, Content, Tool};

use crate::{McpServerBuilder, RequestContext, tool};

/// Adds the demo tools to a server.
pub fn register(builder: McpServerBuilder) -> McpServerBuilder {
    builder
        .typed_tool(echo_tool(), |_ctx, args: EchoArgs| async move {
            Ok(CallToolResult::text(args.text))
        })
        .typed_tool(counter_tool(), counter)
        .typed_tool(slow_tool(), slow)
}

/// Arguments of `echo`.
#[derive(Debug, Deserialize)]
pub struct EchoArgs {
    /// What to send back.
    pub text: String,
}

fn echo_tool() -> Tool {
    tool(
        "echo",
        "Returns the text it is given.",
        json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Text to echo"}},
            "required": ["text"]
        }),
    )
}

/// Arguments of `counter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterArgs {
    /// How much to add (default 1).
    #[serde(default = "one")]
    pub by: i64,
}

fn one() -> i64 {
    1
}

fn counter_tool() -> Tool {
    let mut t = tool(
        "counter",
        "Adds `by` (default 1) to the counter kept in this session's state and returns the new value.",
        json!({
            "type": "object",
            "properties": {"by": {"type": "integer", "description": "Amount to add", "default": 1}}
        }),
    );
    t.output_schema = Some(json!({
        "type": "object",
        "properties": {"counter": {"type": "integer"}},
        "required": ["counter"]
    }));
    t
}

async fn counter(ctx: RequestContext, args: CounterArgs) -> crate::HandlerResult<CallToolResult> {
    let session = ctx.require_session()?;
    let (_, value) = session
        .update(|state| {
            let current = state.get("counter").and_then(|v| v.as_i64()).unwrap_or(0);
            let next = current.saturating_add(args.by);
            state.insert("counter".into(), json!(next));
            next
        })
        .await?;
    Ok(CallToolResult {
        content: vec![Content::text(value.to_string())],
        structured_content: Some(json!({"counter": value})),
        is_error: None,
    })
}

/// Arguments of `slow`.
#[derive(Debug, Deserialize)]
pub struct SlowArgs {
    /// Steps to take (at most 10,000).
    pub steps: u32,
    /// Milliseconds per step (at most 60,000).
    pub delay_ms: u64,
}

fn slow_tool() -> Tool {
    tool(
        "slow",
        "Takes `steps` steps of `delay_ms` each, reporting progress after every step; stops when cancelled.",
        json!({
            "type": "object",
            "properties": {
                "steps": {"type": "integer", "minimum": 0, "maximum": 10000},
                "delay_ms": {"type": "integer", "minimum": 0, "maximum": 60000}
            },
            "required": ["steps", "delay_ms"]
        }),
    )
}

async fn slow(ctx: RequestContext, args: SlowArgs) -> crate::HandlerResult<CallToolResult> {
    if args.steps > 10_000 || args.delay_ms > 60_000 {
        return Ok(CallToolResult::error(
            "steps must be at most 10000 and delay_ms at most 60000",
        ));
    }
    let total = f64::from(args.steps);
    for step in 1..=args.steps {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.delay_ms)) => {}
            () = ctx.cancelled() => {
                return Ok(CallToolResult::error(format!("cancelled after {} steps", step - 1)));
            }
        }
        ctx.progress(
            f64::from(step),
            Some(total),
            Some(format!("step {step} of {}", args.steps)),
        )
        .await;
    }
    Ok(CallToolResult::text(format!(
        "completed {} steps",
        args.steps
    )))
}
