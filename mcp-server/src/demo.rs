//! The demo tools of the `mcp-server` binary: `echo`, `counter` (session
//! state, or a durable handle), and `slow` (progress and cancellation, or a
//! task when the request declares the tasks extension).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use session_core::wire::{CallToolResult, Content, Tool};

use crate::{McpServerBuilder, RequestContext, TaskSupport, tool};

/// Adds the demo tools to a server.
pub fn register(builder: McpServerBuilder) -> McpServerBuilder {
    builder
        .typed_tool(echo_tool(), |_ctx, args: EchoArgs| async move {
            Ok(CallToolResult::text(args.text))
        })
        .typed_tool(counter_tool(), counter)
        .typed_tool(slow_tool(), slow)
        .task_support("slow", TaskSupport::WhenDeclared)
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
    /// The counter handle to add to (from an earlier call's `counter_id`).
    #[serde(default)]
    pub counter_id: Option<String>,
}

fn one() -> i64 {
    1
}

/// The prefix of counter handles (`ctr_<128 random bits>`).
const COUNTER_PREFIX: &str = "ctr";

fn counter_tool() -> Tool {
    let mut t = tool(
        "counter",
        "Adds `by` (default 1) to a counter and returns the new value. With `counter_id` \
         (from an earlier call) it counts in that durable counter, whichever protocol \
         revision or session the call comes from; counters expire after 24 h unused. \
         Without it, a legacy session counts in its own state, and a 2026-07-28 request \
         starts a new counter and returns its `counter_id` to pass on later calls.",
        json!({
            "type": "object",
            "properties": {
                "by": {"type": "integer", "description": "Amount to add", "default": 1},
                "counter_id": {
                    "type": "string",
                    "description": "The counter to add to, as returned by an earlier call"
                }
            }
        }),
    );
    t.output_schema = Some(json!({
        "type": "object",
        "properties": {
            "counter": {"type": "integer"},
            "counter_id": {"type": "string"}
        },
        "required": ["counter"]
    }));
    t
}

async fn counter(ctx: RequestContext, args: CounterArgs) -> crate::HandlerResult<CallToolResult> {
    let add = |state: &mut session_core::SessionState| {
        let current = state.get("counter").and_then(|v| v.as_i64()).unwrap_or(0);
        let next = current.saturating_add(args.by);
        state.insert("counter".into(), json!(next));
        next
    };
    let (value, id) = match (&args.counter_id, ctx.session()) {
        (Some(id), _) => match ctx.handles().update(id, add).await {
            Ok((_, value)) => (value, Some(id.clone())),
            Err(e) if e.is_gone() => {
                return Ok(CallToolResult::error(format!(
                    "counter_id {id} is unknown or expired ({e}); call counter again without \
                     counter_id to start a new counter"
                )));
            }
            Err(e) => return Err(crate::error::handle_error_object(&e)),
        },
        (None, Some(session)) => (session.update(add).await?.1, None),
        (None, None) => {
            let mut state = session_core::SessionState::new();
            let value = add(&mut state);
            let minted = ctx
                .handles()
                .mint(COUNTER_PREFIX, state)
                .await
                .map_err(|e| crate::error::handle_error_object(&e))?;
            (value, Some(minted.id().to_string()))
        }
    };
    let structured = match &id {
        Some(id) => json!({"counter": value, "counter_id": id}),
        None => json!({"counter": value}),
    };
    let text = match &id {
        Some(id) => format!("{value} (counter_id {id})"),
        None => value.to_string(),
    };
    Ok(CallToolResult {
        content: vec![Content::text(text)],
        structured_content: Some(structured),
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
        "Takes `steps` steps of `delay_ms` each, reporting progress after every step; stops when \
         cancelled. Runs as a task (io.modelcontextprotocol/tasks) when the request declares \
         the extension, its status message telling the step.",
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
        let message = format!("step {step} of {}", args.steps);
        if ctx.is_task() {
            ctx.set_status_message(Some(message)).await;
        } else {
            ctx.progress(f64::from(step), Some(total), Some(message))
                .await;
        }
    }
    Ok(CallToolResult::text(format!(
        "completed {} steps",
        args.steps
    )))
}
