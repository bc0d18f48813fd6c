//! Client behaviour: timeouts and cancellation, late responses, progress,
//! version checks, servers without session ids, DELETE refused, reconnection
//! limits, stdio shutdown, in-band errors versus lost sessions, recovery
//! policies and concurrent recovery, typed stream failures, the bounded
//! handshake, resources, prompts and pagination.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Store, serve, start, start_with};
use futures_util::StreamExt;
use mcp_client::{
    Client, ClientEvent, ClientOptions, Error, ProtocolMode, ReinitPolicy, RequestOptions,
};
use mcp_server::{McpServer, McpServerBuilder, RequestContext, ServerConfig, demo, tool};
use serde_json::{Map, Value, json};
use session_core::wire::{
    CallToolResult, Content, ErrorObject, GetPromptResult, Prompt, PromptArgument, PromptMessage,
    ReadResourceResult, Resource, ResourceContents,
};
use session_core::{SessionId, SessionStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn quiet() -> ClientOptions {
    ClientOptions::default()
        .protocol(ProtocolMode::Legacy)
        .listen(false)
}

/// How a `hold` handler ended.
#[derive(Debug, Default)]
struct Held {
    started: AtomicU32,
    /// "cancelled": its cancellation signal fired (`notifications/cancelled`
    /// reached the server); "dropped": its future was dropped without it.
    ended: Mutex<Option<&'static str>>,
}

impl Held {
    fn ended(&self) -> Option<&'static str> {
        *self.ended.lock().unwrap()
    }
}

/// Records how the handler ended when its future goes away.
struct Watch(Arc<Held>, RequestContext);

impl Drop for Watch {
    fn drop(&mut self) {
        let how = if self.1.is_cancelled() {
            "cancelled"
        } else {
            "dropped"
        };
        self.0.ended.lock().unwrap().get_or_insert(how);
    }
}

/// Adds `hold`: a tool that first sends a notification, so the server
/// answers over SSE and runs the handler in a task of its own that outlives
/// the POST's connection; then it waits (far longer than any test) for its
/// cancellation signal. Only `notifications/cancelled` ends it early.
fn with_hold(held: Arc<Held>) -> impl FnOnce(McpServerBuilder) -> McpServerBuilder {
    move |builder| {
        builder.tool(
            tool("hold", "Waits to be cancelled.", json!({"type": "object"})),
            move |ctx: RequestContext, _args| {
                let held = held.clone();
                async move {
                    held.started.fetch_add(1, Ordering::SeqCst);
                    let _watch = Watch(held, ctx.clone());
                    ctx.notify(
                        "notifications/message",
                        json!({"level": "info", "data": "holding"}),
                    )
                    .await;
                    tokio::select! {
                        () = ctx.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    Ok(CallToolResult::text("released"))
                }
            },
        )
    }
}

#[tokio::test]
async fn a_timeout_cancels_the_request_on_the_server() {
    let held = Arc::new(Held::default());
    let server = start_with(
        &Store::Memory,
        ServerConfig::default(),
        with_hold(held.clone()),
    )
    .await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    let started = Instant::now();
    let outcome = client
        .call_tool_with(
            "hold",
            json!({}),
            RequestOptions::default().timeout(Duration::from_millis(800)),
        )
        .await;
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("the handler to end", || held.ended().is_some()).await;
    assert_eq!(
        held.ended(),
        Some("cancelled"),
        "the server learnt of the timeout from notifications/cancelled"
    );
    // The client still works after ignoring the late response.
    assert!(client.ping().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn dropping_a_request_cancels_it_on_the_server() {
    let held = Arc::new(Held::default());
    let server = start_with(
        &Store::Memory,
        ServerConfig::default(),
        with_hold(held.clone()),
    )
    .await;
    let notified = Arc::new(AtomicBool::new(false));
    let flag = notified.clone();
    let client = Client::connect_http(
        &server.url,
        quiet().on_event(move |e| {
            if matches!(e, ClientEvent::Notification { params, .. } if params["data"] == "holding")
            {
                flag.store(true, Ordering::SeqCst);
            }
        }),
    )
    .await
    .unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call_tool("hold", json!({})).await })
    };
    // The answer is an SSE stream now: the handler no longer depends on the
    // POST's connection.
    eventually("the handler to start", || notified.load(Ordering::SeqCst)).await;
    call.abort();
    eventually("the handler to end", || held.ended().is_some()).await;
    assert_eq!(held.ended(), Some("cancelled"));
    assert_eq!(held.started.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn progress_is_reported_and_can_keep_a_request_alive() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    // 5 steps of 80 ms take 400 ms: longer than the 150 ms timeout, which
    // each progress notification restarts.
    let result = client
        .call_tool_with(
            "slow",
            json!({"steps": 5, "delay_ms": 80}),
            RequestOptions::default()
                .timeout(Duration::from_millis(150))
                .reset_on_progress(Duration::from_secs(5))
                .on_progress(move |p, total, _| sink.lock().unwrap().push((p, total))),
        )
        .await
        .unwrap();
    assert_eq!(result.content.len(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert!(seen.iter().all(|(_, t)| *t == Some(5.0)));

    // The total bound still holds however much progress arrives.
    let started = Instant::now();
    let outcome = client
        .call_tool_with(
            "slow",
            json!({"steps": 100, "delay_ms": 50}),
            RequestOptions::default()
                .timeout(Duration::from_millis(150))
                .reset_on_progress(Duration::from_millis(400))
                .on_progress(|_, _, _| {}),
        )
        .await;
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(390) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    server.stop().await;
}

/// A fake server on loopback answering every message with
/// `answer(message, headers)`; a GET or DELETE comes as `{"method": "GET"}`
/// or `{"method": "DELETE"}`.
async fn fake_full<F>(answer: F) -> String
where
    F: Fn(&Value, &HeaderMap) -> axum::response::Response + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let app = Router::new().route(
        "/mcp",
        post({
            let answer = answer.clone();
            move |headers: HeaderMap, body: String| {
                let answer = answer.clone();
                async move {
                    let message: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    answer(&message, &headers)
                }
            }
        })
        .get({
            let answer = answer.clone();
            move |headers: HeaderMap| {
                let answer = answer.clone();
                async move { answer(&json!({"method": "GET"}), &headers) }
            }
        })
        .delete({
            let answer = answer.clone();
            move |headers: HeaderMap| {
                let answer = answer.clone();
                async move { answer(&json!({"method": "DELETE"}), &headers) }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A JSON-RPC result for request `id`, as a JSON body.
fn result_for(id: &Value, result: Value) -> axum::response::Response {
    (
        [("content-type", "application/json")],
        json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
    )
        .into_response()
}

/// An SSE body sending each event after its delay, then ending.
fn sse(events: Vec<(Duration, String)>) -> axum::response::Response {
    let stream = futures_util::stream::iter(events).then(|(delay, event)| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, std::convert::Infallible>(event)
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// An SSE event carrying `message`.
fn data(message: &Value) -> String {
    format!("data: {message}\n\n")
}

/// A fake server on loopback answering with `answer(method, headers)`.
async fn fake<F>(answer: F) -> String
where
    F: Fn(&str, &HeaderMap) -> axum::response::Response + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let app = Router::new().route(
        "/mcp",
        post({
            let answer = answer.clone();
            move |headers: HeaderMap, body: String| {
                let answer = answer.clone();
                async move {
                    let message: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let method = message["method"].as_str().unwrap_or("").to_string();
                    let mut response = answer(&method, &headers);
                    if let Some(id) = message.get("id") {
                        // Fill in the request id the fake answers for.
                        let bytes =
                            axum::body::to_bytes(std::mem::take(response.body_mut()), 1 << 20)
                                .await
                                .unwrap();
                        if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
                            value["id"] = id.clone();
                            *response.body_mut() = axum::body::Body::from(value.to_string());
                        } else {
                            *response.body_mut() = axum::body::Body::from(bytes);
                        }
                    }
                    response
                }
            }
        })
        .get({
            let answer = answer.clone();
            move |headers: HeaderMap| {
                let answer = answer.clone();
                async move { answer("GET", &headers) }
            }
        })
        .delete({
            let answer = answer.clone();
            move |headers: HeaderMap| {
                let answer = answer.clone();
                async move { answer("DELETE", &headers) }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn json_answer(result: Value) -> axum::response::Response {
    (
        [("content-type", "application/json")],
        json!({"jsonrpc": "2.0", "id": 0, "result": result}).to_string(),
    )
        .into_response()
}

fn init_result(version: &str) -> Value {
    json!({"protocolVersion": version, "capabilities": {"tools": {}},
        "serverInfo": {"name": "fake", "version": "0"}})
}

#[tokio::test]
async fn a_version_the_client_does_not_speak_is_a_clear_error() {
    let url = fake(|method, _| match method {
        "initialize" => json_answer(init_result("1999-01-01")),
        _ => StatusCode::ACCEPTED.into_response(),
    })
    .await;
    let outcome = Client::connect_http(&url, quiet()).await;
    match outcome {
        Err(Error::VersionMismatch { server, .. }) => assert_eq!(server, "1999-01-01"),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
}

/// Reads one HTTP request from `socket` (`buffer` keeps what was read past
/// it) and returns its body; `None` when the connection ends.
async fn read_request(socket: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
                buffer.drain(..end + 4 + length);
                return Some(body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// A hand-written HTTP server that records every request body, answers
/// `initialize` if told to (session `s-stall`), and never answers anything
/// else (it holds the connection).
async fn stalling_server(answer_initialize: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                while let Some(body) = read_request(&mut socket, &mut buffer).await {
                    log.lock().unwrap().push(body.clone());
                    let message: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if !(answer_initialize && message["method"] == "initialize") {
                        std::future::pending::<()>().await;
                    }
                    let answer = json!({"jsonrpc": "2.0", "id": message["id"],
                        "result": init_result("2025-11-25")})
                    .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s-stall\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_connect_timeout_and_initialize_is_not_cancelled() {
    let (url, seen) = stalling_server(false).await;
    let started = Instant::now();
    let outcome =
        Client::connect_http(&url, quiet().connect_timeout(Duration::from_millis(300))).await;
    assert!(
        matches!(outcome, Err(Error::Timeout { ref method, .. }) if method == "initialize"),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A cancellation would be sent at once; give it the time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only initialize, never cancelled: {seen:?}");
    assert!(seen[0].contains("\"initialize\""));
}

#[tokio::test]
async fn a_server_that_stalls_after_initialize_hits_the_connect_timeout() {
    let (url, seen) = stalling_server(true).await;
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect_http(&url, quiet().connect_timeout(Duration::from_millis(400))),
    )
    .await
    .expect("the handshake as a whole is bounded by the connect timeout");
    assert!(
        matches!(outcome, Err(Error::Timeout { ref method, .. }) if method == "notifications/initialized"),
        "{outcome:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("notifications/initialized")),
        "the server did get the notification it never answers"
    );
}

#[tokio::test]
async fn works_with_a_server_that_issues_no_session_id_and_tolerates_405_on_delete() {
    let url = fake(|method, headers| {
        assert!(
            !headers.contains_key("mcp-session-id"),
            "no session id to send"
        );
        match method {
            "initialize" => json_answer(init_result("2025-06-18")),
            "ping" => json_answer(json!({})),
            "tools/list" => {
                json_answer(json!({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}))
            }
            "DELETE" | "GET" => StatusCode::METHOD_NOT_ALLOWED.into_response(),
            _ => StatusCode::ACCEPTED.into_response(),
        }
    })
    .await;
    let client = Client::connect_http(
        &url,
        ClientOptions::default().protocol(ProtocolMode::Legacy),
    )
    .await
    .unwrap();
    assert_eq!(client.session_id(), None);
    assert_eq!(client.server().unwrap().protocol_version, "2025-06-18");
    client.ping().await.unwrap();
    assert_eq!(client.list_tools().await.unwrap()[0].name, "t");
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_get_stream_gives_up_after_bounded_retries_with_a_clear_event() {
    let gets = Arc::new(AtomicU32::new(0));
    let counter = gets.clone();
    let url = fake(move |method, _| match method {
        "initialize" => (
            [
                ("mcp-session-id", "s-1"),
                ("content-type", "application/json"),
            ],
            json!({"jsonrpc": "2.0", "id": 0, "result": init_result("2025-11-25")}).to_string(),
        )
            .into_response(),
        "GET" => {
            counter.fetch_add(1, Ordering::SeqCst);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        _ => StatusCode::ACCEPTED.into_response(),
    })
    .await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut options = ClientOptions::default()
        .protocol(ProtocolMode::Legacy)
        .on_event(move |e| sink.lock().unwrap().push(e.clone()));
    options.max_reconnects = 3;
    options.min_backoff = Duration::from_millis(5);
    options.max_backoff = Duration::from_millis(20);
    let client = Client::connect_http(&url, options).await.unwrap();
    eventually("the GET stream to give up", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ClientEvent::ListenFailed { .. }))
    })
    .await;
    assert_eq!(gets.load(Ordering::SeqCst), 4, "one try and three retries");
    client.disconnect().await;
}

#[tokio::test]
async fn stdio_shutdown_escalates_to_sigkill_for_a_server_that_ignores_eof_and_sigterm() {
    // A server that answers the handshake, then ignores stdin EOF and SIGTERM.
    let script = r#"
import json, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "serverInfo": {"name": "stubborn", "version": "0"}}}), flush=True)
        break
print("ignoring everything now", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stubborn.py");
    std::fs::write(&path, script).unwrap();
    let client = Client::connect_stdio(&format!("python3 {}", path.display()), quiet())
        .await
        .unwrap();
    let started = Instant::now();
    client.close().await.unwrap();
    let took = started.elapsed();
    // Two bounded waits (stdin EOF, then SIGTERM), then SIGKILL.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_get_stream_reconnects_after_the_servers_retry_with_last_event_id() {
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let record = seen.clone();
    let url = fake(move |method, headers| match method {
        "initialize" => (
            [
                ("mcp-session-id", "s-2"),
                ("content-type", "application/json"),
            ],
            json!({"jsonrpc": "2.0", "id": 0, "result": init_result("2025-11-25")}).to_string(),
        )
            .into_response(),
        "GET" => {
            let last = headers
                .get("last-event-id")
                .map(|v| v.to_str().unwrap().to_string());
            let mut log = record.lock().unwrap();
            log.push(last);
            let body = if log.len() == 1 {
                // One event, a retry hint, then the connection closes.
                "id: e1\nretry: 50\ndata: \n\n".to_string()
            } else {
                format!(
                    "id: e2\ndata: {}\n\n",
                    json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "data": "after reconnect"}})
                )
            };
            ([("content-type", "text/event-stream")], body).into_response()
        }
        _ => StatusCode::ACCEPTED.into_response(),
    })
    .await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = Client::connect_http(
        &url,
        ClientOptions::default()
            .protocol(ProtocolMode::Legacy)
            .on_event(move |e| sink.lock().unwrap().push(e.clone())),
    )
    .await
    .unwrap();
    eventually("the notification sent after reconnecting", || {
        events.lock().unwrap().iter().any(|e| {
            matches!(e, ClientEvent::Notification { method, params }
                if method == "notifications/message" && params["data"] == "after reconnect")
        })
    })
    .await;
    let log = seen.lock().unwrap().clone();
    assert_eq!(log[0], None, "the first GET has nothing to resume");
    assert_eq!(
        log[1].as_deref(),
        Some("e1"),
        "the reconnection resumes after the last event"
    );
    client.disconnect().await;
}

/// Events the client reported, for assertions.
fn recorder() -> (ClientOptions, Arc<Mutex<Vec<ClientEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = quiet().on_event(move |e| sink.lock().unwrap().push(e.clone()));
    (options, events)
}

fn replaced(events: &Mutex<Vec<ClientEvent>>) -> Vec<(Option<String>, Option<String>)> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::SessionReplaced { old, new } => Some((old.clone(), new.clone())),
            _ => None,
        })
        .collect()
}

async fn expire(server: &common::Server, session: &str) {
    server
        .server
        .sessions()
        .expire(&SessionId::parse(session).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_rpc_error_with_code_32001_is_the_servers_answer_and_is_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let server = start_with(&Store::Memory, ServerConfig::default(), move |builder| {
        builder.tool(
            tool(
                "times_out",
                "Fails like the TypeScript SDK's RequestTimeout.",
                json!({"type": "object"}),
            ),
            move |_ctx, _args| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Err(ErrorObject::new(-32001, "Request timed out"))
                }
            },
        )
    })
    .await;
    let (options, events) = recorder();
    let client = Client::connect_http(&server.url, options).await.unwrap();
    let session = client.session_id();
    let outcome = client.call_tool("times_out", json!({})).await;
    match outcome {
        Err(Error::Rpc { method, error }) => {
            assert_eq!(method, "tools/call");
            assert_eq!(error.code, -32001);
        }
        other => panic!("expected the server's error, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "sent once, not retried");
    assert_eq!(client.session_id(), session, "the session was not replaced");
    assert!(replaced(&events).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_reinit_policies_surface_reinitialize_or_retry() {
    let server = start(&Store::Memory, ServerConfig::default()).await;

    // Surface: the error, the dead id kept, and again on the next call.
    let (options, events) = recorder();
    let client = Client::connect_http(&server.url, options.reinit(ReinitPolicy::Surface))
        .await
        .unwrap();
    let old = client.session_id().unwrap();
    expire(&server, &old).await;
    for _ in 0..2 {
        let outcome = client.call_tool("counter", json!({})).await;
        assert!(
            matches!(outcome, Err(Error::SessionNotFound { ref session }) if *session == old),
            "{outcome:?}"
        );
        assert_eq!(client.session_id().as_deref(), Some(old.as_str()));
    }
    assert!(replaced(&events).is_empty());

    // Reinitialize: the error, but a new session for the next call.
    let (options, events) = recorder();
    let client = Client::connect_http(&server.url, options.reinit(ReinitPolicy::Reinitialize))
        .await
        .unwrap();
    let old = client.session_id().unwrap();
    expire(&server, &old).await;
    let outcome = client.call_tool("counter", json!({})).await;
    assert!(
        matches!(outcome, Err(Error::SessionNotFound { ref session }) if *session == old),
        "{outcome:?}"
    );
    let new = client.session_id().unwrap();
    assert_ne!(new, old);
    assert_eq!(replaced(&events), [(Some(old.clone()), Some(new.clone()))]);
    let counted = client.call_tool("counter", json!({})).await.unwrap();
    assert_eq!(counted.structured_content, Some(json!({"counter": 1})));

    // RetryOnce: the call succeeds in the new session.
    let (options, events) = recorder();
    let client = Client::connect_http(&server.url, options).await.unwrap();
    let old = client.session_id().unwrap();
    client.call_tool("counter", json!({"by": 5})).await.unwrap();
    expire(&server, &old).await;
    let counted = client.call_tool("counter", json!({})).await.unwrap();
    assert_eq!(
        counted.structured_content,
        Some(json!({"counter": 1})),
        "a fresh session"
    );
    let new = client.session_id().unwrap();
    assert_ne!(new, old);
    assert_eq!(replaced(&events), [(Some(old), Some(new))]);
    server.stop().await;
}

/// A memory store whose inserts (a new session) take 200 ms once `slow`.
#[derive(Debug, Default)]
struct SlowCreates {
    inner: session_store::MemoryStore,
    slow: AtomicBool,
}

#[async_trait::async_trait]
impl SessionStore for SlowCreates {
    async fn insert(&self, record: &session_core::SessionRecord) -> session_core::Result<()> {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.inner.insert(record).await
    }
    async fn load(
        &self,
        id: &SessionId,
    ) -> session_core::Result<Option<session_core::SessionRecord>> {
        self.inner.load(id).await
    }
    async fn compare_and_swap(
        &self,
        record: &session_core::SessionRecord,
        expected_version: u64,
    ) -> session_core::Result<session_core::Cas> {
        self.inner.compare_and_swap(record, expected_version).await
    }
    async fn delete(&self, id: &SessionId) -> session_core::Result<bool> {
        self.inner.delete(id).await
    }
    async fn count(&self) -> session_core::Result<usize> {
        self.inner.count().await
    }
    async fn list(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> session_core::Result<session_core::Page> {
        self.inner.list(cursor, limit).await
    }
    async fn remove_expired(
        &self,
        now: session_core::Timestamp,
        limit: usize,
    ) -> session_core::Result<Vec<session_core::SessionRecord>> {
        self.inner.remove_expired(now, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_during_recovery_all_succeed_in_one_new_session() {
    let store = Arc::new(SlowCreates::default());
    let server = serve(demo::register(McpServer::builder().store(store.clone())).build()).await;
    let (options, events) = recorder();
    let client = Client::connect_http(&server.url, options).await.unwrap();
    let old = client.session_id().unwrap();
    expire(&server, &old).await;
    // The new handshake takes 200 ms; calls keep starting meanwhile.
    store.slow.store(true, Ordering::SeqCst);
    let calls: Vec<_> = (0..20u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 10)).await;
                client.call_tool("counter", json!({"by": 1})).await
            })
        })
        .collect();
    let mut counters = Vec::new();
    for call in calls {
        let result = call.await.unwrap().unwrap();
        counters.push(
            result.structured_content.unwrap()["counter"]
                .as_i64()
                .unwrap(),
        );
    }
    counters.sort_unstable();
    assert_eq!(
        counters,
        (1..=20).collect::<Vec<_>>(),
        "one counter: one session"
    );
    let new = client.session_id().unwrap();
    assert_ne!(new, old);
    assert_eq!(replaced(&events), [(Some(old), Some(new.clone()))]);
    assert_eq!(
        server.server.sessions().count().await.unwrap(),
        1,
        "one new session"
    );
    let state = client.session_state().await.unwrap();
    assert_eq!(state.session_id, new);
    assert_eq!(state.state["counter"], 20);
    server.stop().await;
}

#[tokio::test]
async fn a_server_without_the_session_state_extension_is_unsupported() {
    let mut config = ServerConfig::default();
    config.session_state_extension = false;
    let server = start(&Store::Memory, config).await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    assert!(
        matches!(client.session_state().await, Err(Error::Unsupported(_))),
        "session/get"
    );
    assert!(
        matches!(
            client.update_session_state(Map::new()).await,
            Err(Error::Unsupported(_))
        ),
        "session/update"
    );
    // The rest still works.
    client.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn resources_prompts_and_any_request() {
    let server = start_with(&Store::Memory, ServerConfig::default(), |builder| {
        builder
            .resource(
                Resource {
                    uri: "memo://one".into(),
                    name: "one".into(),
                    title: None,
                    description: Some("The first memo".into()),
                    mime_type: Some("text/plain".into()),
                },
                |_ctx, uri| async move {
                    Ok(ReadResourceResult {
                        contents: vec![ResourceContents {
                            uri,
                            mime_type: Some("text/plain".into()),
                            text: Some("remember the milk".into()),
                            blob: None,
                        }],
                    })
                },
            )
            .prompt(
                Prompt {
                    name: "greet".into(),
                    title: None,
                    description: Some("Greets someone".into()),
                    arguments: vec![PromptArgument {
                        name: "who".into(),
                        description: None,
                        required: Some(true),
                    }],
                },
                |_ctx, args| async move {
                    let who = args.get("who").and_then(Value::as_str).unwrap_or("nobody");
                    Ok(GetPromptResult {
                        description: None,
                        messages: vec![PromptMessage {
                            role: "user".into(),
                            content: Content::text(format!("Hello, {who}!")),
                        }],
                    })
                },
            )
    })
    .await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    let resources = client.list_resources().await.unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].uri, "memo://one");
    let read = client.read_resource("memo://one").await.unwrap();
    assert_eq!(read.contents[0].text.as_deref(), Some("remember the milk"));
    let missing = client.read_resource("memo://none").await;
    assert!(
        matches!(missing, Err(Error::Rpc { ref error, .. }) if error.code == -32002),
        "{missing:?}"
    );

    let prompts = client.list_prompts().await.unwrap();
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].name, "greet");
    let mut args = Map::new();
    args.insert("who".into(), json!("rust"));
    let prompt = client.get_prompt("greet", args).await.unwrap();
    assert_eq!(prompt.messages[0].content, Content::text("Hello, rust!"));

    let listed: Value = client
        .request("tools/list", &json!({}), RequestOptions::default())
        .await
        .unwrap();
    assert!(
        listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "counter")
    );
    let unknown: Result<Value, _> = client
        .request("no/such/method", &json!({}), RequestOptions::default())
        .await;
    assert!(
        matches!(unknown, Err(Error::Rpc { ref error, .. }) if error.code == -32601),
        "{unknown:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn lists_follow_next_cursor_and_a_repeated_cursor_is_an_error() {
    let url = fake_full(|message, _| {
        let id = &message["id"];
        let cursor = message["params"]["cursor"].as_str();
        match message["method"].as_str().unwrap_or("") {
            "initialize" => result_for(id, init_result("2025-11-25")),
            "resources/list" => match cursor {
                None => result_for(
                    id,
                    json!({"resources": [{"uri": "r://1", "name": "1"}], "nextCursor": "p2"}),
                ),
                Some("p2") => result_for(
                    id,
                    json!({"resources": [{"uri": "r://2", "name": "2"}], "nextCursor": "p3"}),
                ),
                _ => result_for(id, json!({"resources": [{"uri": "r://3", "name": "3"}]})),
            },
            "prompts/list" => match cursor {
                None => result_for(
                    id,
                    json!({"prompts": [{"name": "a"}], "nextCursor": "next"}),
                ),
                _ => result_for(id, json!({"prompts": [{"name": "b"}]})),
            },
            // A server that sends the client round in circles.
            "tools/list" => {
                let next = if cursor == Some("x") { "y" } else { "x" };
                result_for(id, json!({"tools": [], "nextCursor": next}))
            }
            _ => StatusCode::ACCEPTED.into_response(),
        }
    })
    .await;
    let client = Client::connect_http(&url, quiet()).await.unwrap();
    let resources = client.list_resources().await.unwrap();
    assert_eq!(
        resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["r://1", "r://2", "r://3"]
    );
    let prompts = client.list_prompts().await.unwrap();
    assert_eq!(
        prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let tools = client.list_tools().await;
    assert!(matches!(tools, Err(Error::Protocol(_))), "{tools:?}");
}

#[tokio::test]
async fn a_dropped_client_leaves_its_session_to_be_resumed() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let client = Client::connect_http(
        &server.url,
        ClientOptions::default().protocol(ProtocolMode::Legacy),
    )
    .await
    .unwrap();
    let counted = client.call_tool("counter", json!({"by": 3})).await.unwrap();
    assert_eq!(counted.structured_content, Some(json!({"counter": 3})));
    let id = client.session_id().unwrap();
    drop(client);
    let again = Client::resume_http(&server.url, &id, quiet().reinit(ReinitPolicy::Surface))
        .await
        .unwrap();
    let counted = again.call_tool("counter", json!({"by": 1})).await.unwrap();
    assert_eq!(
        counted.structured_content,
        Some(json!({"counter": 4})),
        "the same session"
    );
    assert_eq!(again.session_id().unwrap(), id);
    again.close().await.unwrap();
    server.stop().await;
}

/// A fake that records the `MCP-Protocol-Version` of every `ping`.
async fn version_recorder(version: &'static str) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let url = fake_full(move |message, headers| {
        let id = &message["id"];
        match message["method"].as_str().unwrap_or("") {
            "initialize" => {
                let mut answer = result_for(id, init_result(version));
                answer
                    .headers_mut()
                    .insert("mcp-session-id", "s-rev".parse().unwrap());
                answer
            }
            "ping" => {
                log.lock().unwrap().push(
                    headers
                        .get("mcp-protocol-version")
                        .map(|v| v.to_str().unwrap().to_string()),
                );
                result_for(id, json!({}))
            }
            _ => StatusCode::ACCEPTED.into_response(),
        }
    })
    .await;
    (url, seen)
}

#[tokio::test]
async fn the_negotiated_revision_is_sent_and_a_resume_can_name_its_revision() {
    let (url, seen) = version_recorder("2025-03-26").await;
    let client = Client::connect_http(&url, quiet()).await.unwrap();
    assert_eq!(client.server().unwrap().protocol_version, "2025-03-26");
    assert_eq!(client.protocol_version().as_deref(), Some("2025-03-26"));
    client.ping().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Some("2025-03-26".to_string())]
    );

    let resumed = Client::resume_http_as(&url, "s-rev", "2025-06-18", quiet())
        .await
        .unwrap();
    resumed.ping().await.unwrap();
    let resumed = Client::resume_http(&url, "s-rev", quiet()).await.unwrap();
    assert_eq!(resumed.protocol_version().as_deref(), Some("2025-11-25"));
    resumed.ping().await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[1..],
        [
            Some("2025-06-18".to_string()),
            Some("2025-11-25".to_string())
        ]
    );

    let bad = Client::resume_http_as(&url, "s-rev", "1999-01-01", quiet()).await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
    let bad = Client::resume_http(&url, "not a header\n", quiet()).await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
}

#[tokio::test]
async fn a_session_id_that_is_not_visible_ascii_is_a_protocol_error() {
    let url = fake_full(|message, _| {
        let mut answer = result_for(&message["id"], init_result("2025-11-25"));
        answer
            .headers_mut()
            .insert("mcp-session-id", "has space".parse().unwrap());
        answer
    })
    .await;
    let outcome = Client::connect_http(&url, quiet()).await;
    assert!(matches!(outcome, Err(Error::Protocol(_))), "{outcome:?}");
}

/// A fake issuing sessions `s-1`, `s-2`, … that answers a GET in `s-1` with
/// 404 (and any other GET with 405). Returns the handshakes counter too.
async fn get_404_fake() -> (String, Arc<AtomicU32>) {
    let sessions = Arc::new(AtomicU32::new(0));
    let issued = sessions.clone();
    let url = fake_full(
        move |message, headers| match message["method"].as_str().unwrap_or("") {
            "initialize" => {
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let mut answer = result_for(&message["id"], init_result("2025-11-25"));
                answer
                    .headers_mut()
                    .insert("mcp-session-id", format!("s-{n}").parse().unwrap());
                answer
            }
            "GET" if headers.get("mcp-session-id").is_some_and(|v| v == "s-1") => {
                StatusCode::NOT_FOUND.into_response()
            }
            "GET" => StatusCode::METHOD_NOT_ALLOWED.into_response(),
            _ => StatusCode::ACCEPTED.into_response(),
        },
    )
    .await;
    (url, sessions)
}

#[tokio::test]
async fn a_404_on_the_get_stream_starts_a_new_session_unless_told_not_to() {
    let (url, sessions) = get_404_fake().await;
    let (options, events) = recorder();
    let client = Client::connect_http(&url, options.listen(true))
        .await
        .unwrap();
    eventually("the new session", || !replaced(&events).is_empty()).await;
    assert_eq!(
        replaced(&events),
        [(Some("s-1".to_string()), Some("s-2".to_string()))]
    );
    assert_eq!(client.session_id().as_deref(), Some("s-2"));
    client.disconnect().await;

    let (url, sessions_surfaced) = get_404_fake().await;
    let (options, events) = recorder();
    let client = Client::connect_http(&url, options.listen(true).reinit(ReinitPolicy::Surface))
        .await
        .unwrap();
    eventually("the GET stream to give up", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ClientEvent::ListenFailed { .. }))
    })
    .await;
    assert_eq!(client.session_id().as_deref(), Some("s-1"));
    assert_eq!(
        sessions_surfaced.load(Ordering::SeqCst),
        1,
        "no new handshake"
    );
    assert!(replaced(&events).is_empty());
    assert_eq!(sessions.load(Ordering::SeqCst), 2);
    client.disconnect().await;
}

#[tokio::test]
async fn a_late_response_after_a_timeout_is_ignored() {
    let log = Arc::new(Mutex::new(Vec::<Value>::new()));
    let record = log.clone();
    let url = fake_full(move |message, _| {
        record.lock().unwrap().push(message.clone());
        let id = &message["id"];
        let text = |t: &str| json!({"content": [{"type": "text", "text": t}]});
        match message["method"].as_str().unwrap_or("") {
            "initialize" => result_for(id, init_result("2025-06-18")),
            "tools/call" if message["params"]["name"] == "first" => sse(vec![(
                Duration::from_millis(250),
                data(&json!({"jsonrpc": "2.0", "id": id, "result": text("late first")})),
            )]),
            "tools/call" => {
                // The earlier request's response, once more, on this stream,
                // before this request's own.
                let first = record.lock().unwrap().iter().find(|m| m["params"]["name"] == "first").map(|m| m["id"].clone()).unwrap();
                sse(vec![
                    (
                        Duration::from_millis(50),
                        data(&json!({"jsonrpc": "2.0", "id": first, "result": text("late first again")})),
                    ),
                    (
                        Duration::from_millis(400),
                        data(&json!({"jsonrpc": "2.0", "id": id, "result": text("second")})),
                    ),
                ])
            }
            _ => StatusCode::ACCEPTED.into_response(),
        }
    })
    .await;
    let client = Client::connect_http(&url, quiet()).await.unwrap();
    let first = client
        .call_tool_with(
            "first",
            json!({}),
            RequestOptions::default().timeout(Duration::from_millis(100)),
        )
        .await;
    assert!(matches!(first, Err(Error::Timeout { .. })), "{first:?}");
    let second = client.call_tool("second", json!({})).await.unwrap();
    assert_eq!(second.content, [Content::text("second")]);
    let first_id = log
        .lock()
        .unwrap()
        .iter()
        .find(|m| m["params"]["name"] == "first")
        .map(|m| m["id"].clone())
        .unwrap();
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|m| m["method"] == "notifications/cancelled"
                && m["params"]["requestId"] == first_id),
        "the timed-out request was cancelled"
    );
}

/// A fake issuing sessions `s-1`, `s-2`, … whose `tools/call` answers are
/// SSE streams that break before the response: `body` is the stream, and a
/// GET resuming it gets `resume`. Counts the `tools/call`s.
async fn broken_stream_fake(body: &'static str, resume: StatusCode) -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let sessions = AtomicU32::new(0);
    let url = fake_full(
        move |message, _| match message["method"].as_str().unwrap_or("") {
            "initialize" => {
                let n = sessions.fetch_add(1, Ordering::SeqCst) + 1;
                let mut answer = result_for(&message["id"], init_result("2025-11-25"));
                answer
                    .headers_mut()
                    .insert("mcp-session-id", format!("s-{n}").parse().unwrap());
                answer
            }
            "tools/call" => {
                counted.fetch_add(1, Ordering::SeqCst);
                sse(vec![(Duration::ZERO, body.to_string())])
            }
            "GET" => resume.into_response(),
            _ => StatusCode::ACCEPTED.into_response(),
        },
    )
    .await;
    (url, calls)
}

fn fast_reconnects(mut options: ClientOptions) -> ClientOptions {
    options.max_reconnects = 2;
    options.min_backoff = Duration::from_millis(5);
    options.max_backoff = Duration::from_millis(10);
    options
}

#[tokio::test]
async fn broken_response_streams_fail_with_typed_errors() {
    // Ended before the response, nothing to resume from: the server broke
    // the protocol.
    let (url, _) = broken_stream_fake(
        "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n",
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    let client = Client::connect_http(&url, quiet()).await.unwrap();
    let outcome = client.call_tool("t", json!({})).await;
    assert!(matches!(outcome, Err(Error::Protocol(_))), "{outcome:?}");

    // Resumable, but every resumption fails: a transport failure.
    let (url, _) = broken_stream_fake(
        "id: e-1\nretry: 5\ndata: \n\n",
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    let client = Client::connect_http(&url, fast_reconnects(quiet()))
        .await
        .unwrap();
    let outcome = client.call_tool("t", json!({})).await;
    assert!(
        matches!(outcome, Err(Error::Transport { ref message, .. }) if message.contains("2 attempts")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_session_lost_while_resuming_a_response_is_recovered_but_not_resent() {
    let (url, calls) =
        broken_stream_fake("id: e-1\nretry: 5\ndata: \n\n", StatusCode::NOT_FOUND).await;
    let (options, events) = recorder();
    let client = Client::connect_http(&url, fast_reconnects(options))
        .await
        .unwrap();
    let outcome = client.call_tool("t", json!({})).await;
    assert!(
        matches!(outcome, Err(Error::SessionNotFound { ref session }) if session == "s-1"),
        "{outcome:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "it reached the server: not sent again"
    );
    assert_eq!(client.session_id().as_deref(), Some("s-2"));
    assert_eq!(
        replaced(&events),
        [(Some("s-1".to_string()), Some("s-2".to_string()))]
    );
}

#[tokio::test]
async fn requests_after_close_fail_at_once() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    let other = client.clone();
    client.close().await.unwrap();
    let started = Instant::now();
    let outcome = other.ping().await;
    assert!(matches!(outcome, Err(Error::Closed)), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    server.stop().await;
}

/// A `server/discover` result naming 2026-07-28.
fn discovered() -> Value {
    json!({"resultType": "complete", "supportedVersions": ["2026-07-28"],
           "capabilities": {"tools": {}},
           "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "fake", "version": "1"}}})
}

#[tokio::test]
async fn modern_requests_carry_their_envelope_and_headers_and_bad_answers_are_typed_errors() {
    let posts = Arc::new(AtomicU32::new(0));
    let counted = posts.clone();
    let url = fake_full(move |message, headers| {
        let id = &message["id"];
        let params = &message["params"];
        let meta = &params["_meta"];
        // Every request: the envelope, and the headers mirroring it.
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientInfo"]["name"],
            "mcp-client"
        );
        assert!(meta["io.modelcontextprotocol/clientCapabilities"]["extensions"]
            ["io.modelcontextprotocol/tasks"]
            .is_object());
        assert_eq!(headers["mcp-protocol-version"], "2026-07-28");
        assert_eq!(headers["mcp-method"], message["method"].as_str().unwrap());
        let name = params["name"].as_str().unwrap_or_default();
        if message["method"] == "tools/call" {
            assert_eq!(headers["mcp-name"], name);
            counted.fetch_add(1, Ordering::SeqCst);
        }
        match (message["method"].as_str().unwrap(), name) {
            ("server/discover", _) => result_for(id, discovered()),
            ("tools/list", _) => result_for(
                id,
                json!({"tools": [
                    {"name": "region", "inputSchema": {"type": "object", "properties": {
                        "where": {"type": "string", "x-mcp-header": "Where"}}}},
                    {"name": "invalid", "inputSchema": {"type": "object", "properties": {
                        "n": {"type": "number", "x-mcp-header": "N"}}}}]}),
            ),
            ("tools/call", "region") => {
                assert_eq!(headers["mcp-param-where"], "=?base64?w7xiZXI=?=");
                result_for(id, json!({"content": [{"type": "text", "text": "ok"}]}))
            }
            ("tools/call", "bad_type") => result_for(id, json!({"resultType": 5})),
            ("tools/call", "unknown_type") => result_for(id, json!({"resultType": "later"})),
            ("tools/call", "empty_input") => {
                result_for(id, json!({"resultType": "input_required"}))
            }
            ("tools/call", "odd_kind") => result_for(
                id,
                json!({"resultType": "input_required", "requestState": "s",
                       "inputRequests": {"k": {"method": "files/delete", "params": {}}}}),
            ),
            ("tools/call", "forever") => {
                // The state is echoed on every retry.
                if params["inputResponses"].is_object() {
                    assert_eq!(params["requestState"], "again");
                }
                result_for(
                    id,
                    json!({"resultType": "input_required", "requestState": "again",
                           "inputRequests": {"k": {"method": "roots/list", "params": {}}}}),
                )
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    })
    .await;
    let client = Client::connect_http(
        &url,
        ClientOptions::default()
            .capabilities(json!({"roots": {}}))
            .max_input_rounds(3)
            .on_request(|_, _| async { Ok(json!({"roots": []})) }),
    )
    .await
    .unwrap();
    assert_eq!(client.protocol_version().as_deref(), Some("2026-07-28"));
    assert_eq!(client.server().unwrap().server_info.name, "fake");
    // The tool whose annotation breaks the rules is left out.
    let tools = client.list_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "region");
    client
        .call_tool("region", json!({"where": "über"}))
        .await
        .unwrap();
    for name in ["bad_type", "unknown_type", "empty_input", "odd_kind"] {
        let outcome = client.call_tool(name, json!({})).await;
        assert!(
            matches!(outcome, Err(Error::Protocol(_))),
            "{name}: {outcome:?}"
        );
    }
    let before = posts.load(Ordering::SeqCst);
    let outcome = client.call_tool("forever", json!({})).await;
    assert!(
        matches!(&outcome, Err(Error::Protocol(m)) if m.contains("3 rounds")),
        "{outcome:?}"
    );
    assert_eq!(
        posts.load(Ordering::SeqCst) - before,
        4,
        "the first try and 3 rounds"
    );
}

#[tokio::test]
async fn a_broken_modern_response_stream_is_reissued_with_a_new_id() {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = ids.clone();
    let url = fake_full(move |message, _| {
        let id = &message["id"];
        match message["method"].as_str().unwrap_or_default() {
            "server/discover" => result_for(id, discovered()),
            "tools/call" => {
                let mut ids = seen.lock().unwrap();
                ids.push(id.clone());
                if ids.len() <= 2 {
                    // The connection drops: before the answer's head, then
                    // after a progress notification.
                    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                          "params": {"progressToken": 1, "progress": 1}});
                    let delay = Duration::from_millis(if ids.len() == 1 { 0 } else { 100 });
                    let events: Vec<std::io::Result<String>> = if ids.len() == 1 {
                        vec![Err(std::io::Error::other("dropped"))]
                    } else {
                        vec![Ok(data(&progress)), Err(std::io::Error::other("dropped"))]
                    };
                    let stream = futures_util::stream::iter(events).then(move |event| async move {
                        if event.is_err() {
                            tokio::time::sleep(delay).await;
                        }
                        event
                    });
                    (
                        [("content-type", "text/event-stream")],
                        axum::body::Body::from_stream(stream),
                    )
                        .into_response()
                } else {
                    result_for(id, json!({"content": [{"type": "text", "text": "second"}]}))
                }
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    })
    .await;
    let mut options = ClientOptions::default();
    options.min_backoff = Duration::from_millis(5);
    let client = Client::connect_http(&url, options).await.unwrap();
    let result = client.call_tool("t", json!({})).await.unwrap();
    assert_eq!(result, CallToolResult::text("second"));
    let ids = ids.lock().unwrap();
    assert_eq!(ids.len(), 3);
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "a new request id each time: {ids:?}"
    );
}

#[tokio::test]
async fn auto_falls_back_to_a_legacy_session_when_the_probe_sounds_legacy() {
    let probes = Arc::new(AtomicU32::new(0));
    let counted = probes.clone();
    let url = fake_full(move |message, headers| {
        let id = &message["id"];
        match message["method"].as_str().unwrap_or_default() {
            "server/discover" => {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::BAD_REQUEST,
                    [("content-type", "application/json")],
                    json!({"jsonrpc": "2.0", "id": null,
                           "error": {"code": -32000, "message": "Bad Request: no session"}})
                    .to_string(),
                )
                    .into_response()
            }
            "initialize" => {
                let mut answer = result_for(id, init_result("2025-11-25"));
                answer
                    .headers_mut()
                    .insert("mcp-session-id", "s-1".parse().unwrap());
                answer
            }
            "ping" => {
                assert_eq!(headers["mcp-session-id"], "s-1");
                result_for(id, json!({}))
            }
            _ => StatusCode::ACCEPTED.into_response(),
        }
    })
    .await;
    let options = || ClientOptions::default().listen(false);
    let client = Client::connect_http(&url, options()).await.unwrap();
    assert_eq!(client.protocol_version().as_deref(), Some("2025-11-25"));
    assert_eq!(client.session_id().as_deref(), Some("s-1"));
    client.ping().await.unwrap();
    // The verdict is kept for the URL: the next client does not probe.
    let again = Client::connect_http(&url, options()).await.unwrap();
    assert_eq!(again.session_id().as_deref(), Some("s-1"));
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    // Pinned to 2026-07-28, the same server is an error.
    let pinned = Client::connect_http(
        &url,
        options().protocol(ProtocolMode::Pinned("2026-07-28".into())),
    )
    .await;
    assert!(matches!(pinned, Err(Error::Rpc { .. })), "{pinned:?}");
}

#[tokio::test]
async fn the_listen_stream_is_opened_for_announced_list_changes_and_reopened_when_it_ends() {
    let listens = Arc::new(Mutex::new(Vec::new()));
    let seen = listens.clone();
    let url = fake_full(move |message, headers| {
        let id = &message["id"];
        match message["method"].as_str().unwrap_or_default() {
            "server/discover" => {
                let mut result = discovered();
                result["capabilities"] = json!({"tools": {"listChanged": true}});
                result_for(id, result)
            }
            "subscriptions/listen" => {
                assert_eq!(headers["mcp-method"], "subscriptions/listen");
                assert_eq!(message["params"]["notifications"]["toolsListChanged"], true);
                seen.lock().unwrap().push(id.clone());
                let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                                     "params": {}});
                // One change, then the server ends the stream.
                sse(vec![(Duration::ZERO, data(&changed))])
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    })
    .await;
    let heard = Arc::new(AtomicU32::new(0));
    let count = heard.clone();
    let mut options = ClientOptions::default().on_event(move |e| {
        if matches!(e, ClientEvent::Notification { method, .. } if method == "notifications/tools/list_changed")
        {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    options.min_backoff = Duration::from_millis(5);
    options.max_backoff = Duration::from_millis(20);
    let client = Client::connect_http(&url, options).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while heard.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the stream was not reopened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ids = listens.lock().unwrap().clone();
    assert!(ids.len() >= 3);
    assert_ne!(ids[0], ids[1], "each reconnection is a new request");
    // Closed: no more listening.
    client.disconnect().await;
    let after = listens.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(listens.lock().unwrap().len(), after);
}

#[tokio::test]
async fn re_issuing_a_broken_request_stays_within_the_requests_timeout() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let url = fake_full(move |message, _| {
        let id = &message["id"];
        match message["method"].as_str().unwrap_or_default() {
            "server/discover" => result_for(id, discovered()),
            "tools/call" => {
                counted.fetch_add(1, Ordering::SeqCst);
                // The connection drops every time.
                let stream = futures_util::stream::iter([Err::<String, _>(std::io::Error::other(
                    "dropped",
                ))]);
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    })
    .await;
    let mut options = ClientOptions::default();
    options.min_backoff = Duration::from_millis(200);
    options.max_backoff = Duration::from_secs(2);
    let client = Client::connect_http(&url, options).await.unwrap();
    let started = Instant::now();
    let outcome = client
        .call_tool_with(
            "t",
            json!({}),
            RequestOptions::default().timeout(Duration::from_millis(500)),
        )
        .await;
    let took = started.elapsed();
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    assert!(
        took < Duration::from_millis(900),
        "{took:?}: the re-issues' backoff was bounded by the timeout"
    );
    assert!(
        attempts.load(Ordering::SeqCst) >= 2,
        "re-issued at least once"
    );
}
