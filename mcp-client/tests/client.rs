//! Client behaviour: timeouts and cancellation, progress, version checks,
//! servers without session ids, DELETE refused, reconnection limits, stdio
//! shutdown.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Store, start};
use mcp_client::{Client, ClientEvent, ClientOptions, Error, RequestOptions};
use mcp_server::ServerConfig;
use serde_json::{Value, json};

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn quiet() -> ClientOptions {
    ClientOptions::default().listen(false)
}

#[tokio::test]
async fn a_timeout_cancels_the_request_on_the_server() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    let started = Instant::now();
    let outcome = client
        .call_tool_with(
            "slow",
            json!({"steps": 100, "delay_ms": 20}),
            RequestOptions::default().timeout(Duration::from_millis(150)),
        )
        .await;
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let inner = server.server.clone();
    eventually("the server to stop the request", || {
        inner.requests_in_flight() == 0
    })
    .await;
    // The client still works after ignoring the late response.
    assert!(client.ping().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn dropping_a_request_cancels_it_on_the_server() {
    let server = start(&Store::Memory, ServerConfig::default()).await;
    let client = Client::connect_http(&server.url, quiet()).await.unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call_tool("slow", json!({"steps": 1000, "delay_ms": 10}))
                .await
        })
    };
    let inner = server.server.clone();
    eventually("the request to start", || inner.requests_in_flight() == 1).await;
    call.abort();
    eventually("the server to stop the request", || {
        inner.requests_in_flight() == 0
    })
    .await;
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

#[tokio::test]
async fn a_server_that_never_answers_hits_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accept, never answer
        }
    });
    let started = Instant::now();
    let outcome =
        Client::connect_http(&url, quiet().connect_timeout(Duration::from_millis(300))).await;
    assert!(
        matches!(outcome, Err(Error::Timeout { ref method, .. }) if method == "initialize"),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
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
    let client = Client::connect_http(&url, ClientOptions::default())
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
    let mut options =
        ClientOptions::default().on_event(move |e| sink.lock().unwrap().push(e.clone()));
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
        ClientOptions::default().on_event(move |e| sink.lock().unwrap().push(e.clone())),
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
