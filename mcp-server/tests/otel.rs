//! Spans exported over OTLP/HTTP (the `otel` feature): the binary, with the
//! standard `OTEL_*` variables pointing at a receiver started here on
//! loopback, exports each request's span with the trace id and parent the
//! client sent in `_meta.traceparent`.
#![cfg(feature = "otel")]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_span_is_exported_with_the_callers_trace_and_parent() {
    // The OTLP/HTTP receiver: every body posted to /v1/traces.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: String| {
            let kept = kept.clone();
            async move {
                if let Ok(value) = serde_json::from_str::<Value>(&body) {
                    kept.lock().push(value);
                }
                ([("content-type", "application/json")], "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut command = Command::new(common::BIN);
    command
        .args(["--listen", "127.0.0.1:0", "--store", "memory"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null());
    let server = common::start_command(command);

    let (trace, parent) = ("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "traced"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {},
                  "traceparent": format!("00-{trace}-{parent}-01")}}});
    let answered = reqwest::Client::new()
        .post(&server.url)
        .header("content-type", "application/json")
        .header("accept", common::ACCEPT_BOTH)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);

    let span = |received: &[Value]| -> Option<Value> {
        received
            .iter()
            .flat_map(|b| b["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
            .find(|s| {
                s["name"] == "request"
                    && s["traceId"]
                        .as_str()
                        .is_some_and(|t| t.eq_ignore_ascii_case(trace))
            })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let found = loop {
        if let Some(found) = span(&received.lock()) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span of trace {trace} exported: {:?}",
            received.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        found["parentSpanId"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case(parent)),
        "{found}"
    );
    let attributes = found["attributes"].to_string();
    assert!(attributes.contains("tools/call"), "{attributes}");
    assert!(
        !attributes.contains("traced"),
        "no argument in the span: {attributes}"
    );
}
