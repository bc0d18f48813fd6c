//! Response modes, streams and the less travelled paths of the HTTP
//! transport, against a real server on a loopback port.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestServer, content_type, eventually, read_sse};
use mcp_server::{HttpConfig, McpServer, ResponseMode, ServerConfig, demo, tool};
use serde_json::{Value, json};
use session_core::wire::{
    CallToolResult, Content, GetPromptResult, LoggingLevel, Prompt, PromptMessage, Resource,
    ResourceContents,
};
use session_core::{EventId, EventStore, SessionId, StoredEvent, StreamId};
use session_store::MemoryEventStore;

fn http(mode: ResponseMode) -> HttpConfig {
    let mut config = HttpConfig::default();
    config.response_mode = mode;
    config
}

fn slow_call(id: i64, steps: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": steps, "delay_ms": 5},
        "_meta": {"progressToken": "p"}}})
}

async fn open_get(client: &common::Client) -> reqwest::Response {
    let response = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("mcp-protocol-version", &client.version)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn json_mode_answers_with_one_body_and_sends_notifications_to_the_get_stream() {
    let server = TestServer::start_with(
        demo::register(McpServer::builder()),
        ServerConfig::default(),
        http(ResponseMode::Json),
    )
    .await;
    let mut client = server.client();
    client.connect().await;
    let stream = open_get(&client).await;
    let events = tokio::spawn(read_sse(stream, 3));
    let response = client.post(&slow_call(5, 3)).send().await.unwrap();
    assert!(content_type(&response).starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 5);
    assert_eq!(body["result"]["content"][0]["text"], "completed 3 steps");
    let events = tokio::time::timeout(Duration::from_secs(5), events)
        .await
        .expect("the progress reached the GET stream")
        .unwrap();
    let progress: Vec<f64> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| m["params"]["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0]);
    server.stop().await;
}

#[tokio::test]
async fn sse_mode_streams_even_a_plain_answer() {
    let server = TestServer::start_with(
        demo::register(McpServer::builder()),
        ServerConfig::default(),
        http(ResponseMode::Sse),
    )
    .await;
    let mut client = server.client();
    client.connect().await;
    let response = client
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}}))
        .send()
        .await
        .unwrap();
    assert!(content_type(&response).starts_with("text/event-stream"));
    let events = read_sse(response, usize::MAX).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["id"], 9);
    assert_eq!(last["result"]["content"][0]["text"], "hi");
    server.stop().await;
}

/// An event store that refuses every append while `failing` is set.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryEventStore,
    failing: AtomicBool,
}

#[async_trait]
impl EventStore for Flaky {
    async fn append(
        &self,
        session: &SessionId,
        stream: &StreamId,
        data: Arc<str>,
    ) -> session_core::Result<EventId> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(session_core::Error::backend_msg("injected failure"));
        }
        self.inner.append(session, stream, data).await
    }

    async fn replay_after(
        &self,
        session: &SessionId,
        after: &EventId,
    ) -> session_core::Result<Option<Vec<StoredEvent>>> {
        self.inner.replay_after(session, after).await
    }

    async fn remove_session(&self, session: &SessionId) -> session_core::Result<()> {
        self.inner.remove_session(session).await
    }
}

#[tokio::test]
async fn when_the_event_store_fails_the_live_stream_still_gets_the_response() {
    let events = Arc::new(Flaky::default());
    let server = TestServer::start_with(
        demo::register(McpServer::builder()).event_store(events.clone()),
        ServerConfig::default(),
        HttpConfig::default(),
    )
    .await;
    let mut client = server.client();
    client.connect().await;
    events.failing.store(true, Ordering::SeqCst);
    let response = client.post(&slow_call(3, 2)).send().await.unwrap();
    assert!(content_type(&response).starts_with("text/event-stream"));
    let events = tokio::time::timeout(Duration::from_secs(5), read_sse(response, usize::MAX))
        .await
        .expect("the stream ends");
    let messages: Vec<Value> = events
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let answer = messages.last().expect("messages on the stream");
    assert_eq!(answer["id"], 3, "{messages:?}");
    assert_eq!(answer["result"]["content"][0]["text"], "completed 2 steps");
    server.stop().await;
}

fn panicking_server() -> mcp_server::McpServerBuilder {
    demo::register(McpServer::builder()).tool(
        tool("boom", "Panics", json!({"type": "object"})),
        |ctx, _args| async move {
            if ctx.wants_progress() {
                ctx.progress(1.0, None, None).await;
            }
            panic!("a bug in a handler");
            #[allow(unreachable_code)]
            Ok(CallToolResult::text("never"))
        },
    )
}

#[tokio::test]
async fn a_panicking_handler_fails_its_request_and_the_server_goes_on() {
    let server = TestServer::start_with(
        panicking_server(),
        ServerConfig::default(),
        HttpConfig::default(),
    )
    .await;
    let mut client = server.client();
    client.connect().await;
    // Answered as one JSON body.
    let r = client
        .call("tools/call", json!({"name": "boom", "arguments": {}}))
        .await;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    // Answered over SSE, after a progress notification.
    let response = client
        .post(&json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
            "params": {"name": "boom", "arguments": {}, "_meta": {"progressToken": 1}}}))
        .send()
        .await
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(5), read_sse(response, usize::MAX))
        .await
        .expect("the stream ends with an error, not silence");
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["id"], 77);
    assert_eq!(last["error"]["code"], -32603);
    assert_eq!(server.server.requests_in_flight(), 0);
    let echo = client.tool("echo", json!({"text": "still here"})).await;
    assert_eq!(echo["content"][0]["text"], "still here", "{echo}");
    server.stop().await;
}

#[tokio::test]
async fn a_request_id_already_in_flight_in_the_session_is_refused() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.client();
    client.connect().await;
    let long = json!({"jsonrpc": "2.0", "id": "dup", "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 200, "delay_ms": 10},
        "_meta": {"progressToken": 1}}});
    let first = client.post(&long).send().await.unwrap();
    eventually("the first request to be in flight", || async {
        server.server.requests_in_flight() == 1
    })
    .await;
    let second: Value = client
        .post(&long)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["id"], "dup");
    assert_eq!(second["error"]["code"], -32600, "{second}");
    // The first is still the one cancellation reaches.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "dup"}});
    client.post(&cancel).send().await.unwrap();
    eventually("the first request to stop", || async {
        server.server.requests_in_flight() == 0
    })
    .await;
    drop(first);
    server.stop().await;
}

#[tokio::test]
async fn get_and_delete_of_unknown_or_expired_sessions_get_404_and_refusals_name_the_request() {
    let config = ServerConfig::default()
        .idle_timeout(Duration::from_millis(300))
        .sweep_interval(Duration::from_secs(3600));
    let server = TestServer::start(config).await;
    let mut client = server.client();
    client.connect().await;
    let session = client.session.clone().unwrap();
    let http = &client.http;
    let get = |id: &str| {
        http.get(&server.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", id)
            .send()
    };
    let delete = |id: &str| http.delete(&server.url).header("mcp-session-id", id).send();
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(get(unknown).await.unwrap().status(), 404);
    assert_eq!(delete(unknown).await.unwrap().status(), 404);

    // An unsupported protocol version is refused on DELETE too, and the
    // session is left alone.
    let bad_version = http
        .delete(&server.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_version.status(), 400);

    // A refused request is answered with its own id.
    let mut stranger = server.client();
    stranger.session = Some(unknown.into());
    let refused = stranger
        .post(&json!({"jsonrpc": "2.0", "id": 41, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["id"], 41, "{body}");

    // Past the idle timeout (no sweep has run): 404 on GET and DELETE.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&session).await.unwrap().status(), 404);
    assert_eq!(delete(&session).await.unwrap().status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_session_loses_its_open_get_stream_to_the_sweeper() {
    let config = ServerConfig::default()
        .idle_timeout(Duration::from_millis(300))
        .sweep_interval(Duration::from_millis(50));
    let server = TestServer::start(config).await;
    let mut client = server.client();
    client.connect().await;
    let stream = open_get(&client).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), read_sse(stream, usize::MAX)).await;
    assert!(
        ended.is_ok(),
        "the GET stream ended when its session expired"
    );
    let status = client
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    server.stop().await;
}

fn resource_server() -> mcp_server::McpServerBuilder {
    #[derive(serde::Deserialize)]
    struct Greeting {
        name: String,
    }
    demo::register(McpServer::builder())
        .resource(
            Resource {
                uri: "note://today".into(),
                name: "today".into(),
                title: None,
                description: None,
                mime_type: Some("text/plain".into()),
            },
            |_ctx, uri| async move {
                Ok(session_core::wire::ReadResourceResult {
                    contents: vec![ResourceContents {
                        uri,
                        mime_type: Some("text/plain".into()),
                        text: Some("nothing yet".into()),
                        blob: None,
                    }],
                })
            },
        )
        .typed_prompt(
            Prompt {
                name: "greet".into(),
                title: None,
                description: None,
                arguments: Vec::new(),
            },
            |_ctx, args: Greeting| async move {
                Ok(GetPromptResult {
                    description: None,
                    messages: vec![PromptMessage {
                        role: "user".into(),
                        content: Content::text(format!("Hello, {}", args.name)),
                    }],
                })
            },
        )
        .tool(
            tool(
                "chatty",
                "Logs at info and error",
                json!({"type": "object"}),
            ),
            |ctx, _args| async move {
                ctx.log(LoggingLevel::Info, None, json!("info line")).await;
                ctx.log(LoggingLevel::Error, None, json!("error line"))
                    .await;
                Ok(CallToolResult::text("done"))
            },
        )
}

#[tokio::test]
async fn subscribers_hear_of_resource_updates_until_they_unsubscribe() {
    let server = TestServer::start_with(
        resource_server(),
        ServerConfig::default(),
        HttpConfig::default(),
    )
    .await;
    let mut client = server.client();
    let init = client.connect().await;
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["resources"]["subscribe"], true);
    assert!(
        caps.get("completions").is_none(),
        "no completion handler, no capability: {caps}"
    );
    let complete = client
        .call(
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": "note://today"},
                "argument": {"name": "x", "value": ""}}),
        )
        .await;
    assert_eq!(complete["error"]["code"], -32601, "{complete}");
    let list = client.call("resources/list", json!({})).await;
    assert_eq!(list["result"]["resources"][0]["uri"], "note://today");
    let read = client
        .call("resources/read", json!({"uri": "note://today"}))
        .await;
    assert_eq!(read["result"]["contents"][0]["text"], "nothing yet");

    assert_eq!(
        server.server.notify_resource_updated("note://today").await,
        0
    );
    let r = client
        .call("resources/subscribe", json!({"uri": "note://today"}))
        .await;
    assert!(r.get("result").is_some(), "{r}");
    let stream = open_get(&client).await;
    let events = tokio::spawn(read_sse(stream, 1));
    eventually("the GET stream to be attached", || async {
        server.server.notify_resource_updated("note://today").await == 1
    })
    .await;
    let events = tokio::time::timeout(Duration::from_secs(5), events)
        .await
        .unwrap()
        .unwrap();
    let note: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(note["method"], "notifications/resources/updated");
    assert_eq!(note["params"]["uri"], "note://today");
    assert_eq!(
        server.server.notify_resource_updated("note://other").await,
        0
    );
    client
        .call("resources/unsubscribe", json!({"uri": "note://today"}))
        .await;
    assert_eq!(
        server.server.notify_resource_updated("note://today").await,
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn typed_prompts_check_their_arguments_and_log_levels_filter_messages() {
    let server = TestServer::start_with(
        resource_server(),
        ServerConfig::default(),
        HttpConfig::default(),
    )
    .await;
    let mut client = server.client();
    client.connect().await;
    let list = client.call("prompts/list", json!({})).await;
    assert_eq!(list["result"]["prompts"][0]["name"], "greet");
    let ok = client
        .call(
            "prompts/get",
            json!({"name": "greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(ok["result"]["messages"][0]["content"]["text"], "Hello, Ada");
    let bad = client
        .call("prompts/get", json!({"name": "greet", "arguments": {}}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("name"));

    // At level `error`, the info line is not sent.
    let set = client
        .call("logging/setLevel", json!({"level": "error"}))
        .await;
    assert!(set.get("result").is_some(), "{set}");
    let response = client
        .post(&json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
            "params": {"name": "chatty", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    let events = read_sse(response, usize::MAX).await;
    let logged: Vec<String> = events
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter(|m| m["method"] == "notifications/message")
        .map(|m| m["params"]["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logged, ["error line"]);
    let bad_level = client
        .call("logging/setLevel", json!({"level": "loud"}))
        .await;
    assert_eq!(bad_level["error"]["code"], -32602);
    server.stop().await;
}

#[tokio::test]
async fn a_modern_client_is_answered_whatever_it_accepts() {
    let server = TestServer::start(ServerConfig::default()).await;
    let response = server
        .client()
        .http
        .post(&server.url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32602, "no envelope: {body}");
    assert_eq!(body["id"], 1);
    let discover = json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let response = server
        .client()
        .http
        .post(&server.url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(discover.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["result"]["supportedVersions"].is_array(), "{body}");
    // A legacy request with the same Accept is still 406.
    let legacy = server
        .client()
        .http
        .post(&server.url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("host", "LOCALHOST")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 406, "and not 403: host names ignore case");
    server.stop().await;
}

#[tokio::test]
async fn a_stdio_client_whose_session_expired_can_initialize_again() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let server = demo::register(McpServer::builder())
        .config(ServerConfig::default().handshake_timeout(Duration::from_millis(100)))
        .build();
    let (client_side, server_side) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_side);
    let serving = tokio::spawn(async move { server.serve_lines(server_read, server_write).await });
    let (client_read, mut client_write) = tokio::io::split(client_side);
    let mut lines = BufReader::new(client_read).lines();
    let mut exchange = async |message: Value| -> Value {
        client_write
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    assert!(exchange(init.clone()).await.get("result").is_some());
    // Never says `initialized`, only pings, past the handshake deadline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ping = exchange(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})).await;
    assert!(ping.get("result").is_some());
    let list = exchange(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})).await;
    assert_eq!(list["error"]["code"], -32600);
    assert!(
        list["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send initialize"),
        "{list}"
    );
    let again = exchange(init).await;
    assert!(again.get("result").is_some(), "{again}");
    let list = exchange(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})).await;
    assert!(list["result"]["tools"].is_array(), "{list}");
    // Both halves of the client's end go: the server reads EOF.
    drop(client_write);
    drop(lines);
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_followed_request_stream_whose_replica_went_quiet_ends() {
    use session_store::testkit::redis::RedisServer;
    use session_store::{RedisOptions, RedisStore};
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url(), RedisOptions::default()).unwrap();
    let events: Arc<dyn EventStore> = Arc::new(store.event_store());
    let mut config = HttpConfig::default();
    config.follow_idle_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(
        demo::register(McpServer::builder())
            .store(Arc::new(store))
            .event_store(events.clone()),
        ServerConfig::default(),
        config,
    )
    .await;
    let mut client = server.client();
    client.connect().await;
    let session = SessionId::parse(client.session.as_deref().unwrap()).unwrap();
    // A request stream that another replica started, then died in.
    let stream = StreamId::parse("r00000000deadbeef").unwrap();
    let note = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
    let first = events
        .append(&session, &stream, Arc::from(note))
        .await
        .unwrap();
    events
        .append(&session, &stream, Arc::from(note))
        .await
        .unwrap();
    let resumed = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session.as_str())
        .header("mcp-protocol-version", &client.version)
        .header("last-event-id", first.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let got = tokio::time::timeout(Duration::from_secs(10), read_sse(resumed, usize::MAX))
        .await
        .expect("the followed stream ended after going quiet");
    assert_eq!(got.len(), 1, "the missed event, then the end: {got:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_initialize_with_oversized_client_info_is_invalid_params_not_503() {
    let server = TestServer::start(ServerConfig::default()).await;
    let huge = "x".repeat(100 << 10);
    let response = server
        .client()
        .post(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": huge, "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("mcp-session-id").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["code"],
        -32602,
        "{}",
        &body.to_string()[..200]
    );
    assert_eq!(server.server.sessions().count().await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_keep_alive_connections_promptly() {
    let server = TestServer::start(ServerConfig::default()).await;
    let url = server.url.clone();
    let mut client = server.client();
    // Leaves an idle keep-alive connection in the client's pool.
    client.connect().await;
    let stream = open_get(&client).await;
    let events = tokio::spawn(read_sse(stream, 100));
    // Without the graceful close, the idle connection and the open stream
    // would keep `serve_http` running.
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("serve_http returns once its connections have closed");
    tokio::time::timeout(Duration::from_secs(2), events)
        .await
        .expect("the GET stream ends with the server")
        .unwrap();
    // The listener is closed too.
    let late = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await;
    assert!(late.is_err(), "a connection after shutdown: {late:?}");
}
