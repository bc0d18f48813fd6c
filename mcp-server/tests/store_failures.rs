//! One failure, one answer: whatever a request was doing when a store
//! failed (resolving its session, a tool writing the session or a handle,
//! `session/update`, DELETE, resuming a stream from the event store), it
//! gets HTTP 503 with `Retry-After` and the same JSON-RPC error; a request
//! that only reads is served while the store refuses writes; everything
//! works again once the store is back.
//!
//! Real parts only: the server on a loopback port, real HTTP, and real
//! `redis-server`s started by the test, killed, restarted, or told to
//! refuse writes (`min-replicas-to-write`, as a primary that lost its
//! replicas does).

mod common;
#[path = "common/stores.rs"]
mod stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Modern, TestServer, read_sse};
use mcp_server::{
    HttpConfig, McpServer, McpServerBuilder, RequestContext, ServerConfig, demo, tool,
};
use serde_json::{Map, Value, json};
use session_core::wire::CallToolResult;
use session_store::testkit::redis::RedisServer;
use stores::{
    accept_writes, assert_store_error, assert_store_unavailable, on_redis, refuse_writes,
};
use tokio::sync::Notify;

/// What a request got: its status, `Retry-After`, and the JSON-RPC
/// response (the body, or a stream's last message).
#[derive(Debug)]
struct Got {
    status: u16,
    retry_after: Option<String>,
    streamed: bool,
    body: Value,
}

async fn got(response: reqwest::Response) -> Got {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let streamed = common::content_type(&response).starts_with("text/event-stream");
    let body = if streamed {
        read_sse(response, usize::MAX)
            .await
            .into_iter()
            .rev()
            .find_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .unwrap_or(Value::Null)
    } else {
        let text = response.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    Got {
        status,
        retry_after,
        streamed,
        body,
    }
}

impl Got {
    fn unavailable(&self, what: &str, store: &str) -> Value {
        assert!(!self.streamed, "{what}: answered before any stream");
        assert_store_unavailable(
            what,
            self.status,
            self.retry_after.as_deref(),
            &self.body,
            store,
        )
    }

    fn ok(&self, what: &str) -> &Value {
        assert_eq!(self.status, 200, "{what}: {:?}", self.body);
        assert!(self.body.get("result").is_some(), "{what}: {:?}", self.body);
        assert!(self.retry_after.is_none(), "{what}");
        &self.body["result"]
    }
}

/// Every access records activity (the touch is a write each time), so a
/// store that refuses writes meets every request's touch.
fn touching() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.sessions = config.sessions.touch_interval(Duration::ZERO);
    config
}

/// Gates for `wait_then_count`: the tool says it runs, then waits to be
/// let go.
#[derive(Default)]
struct Gates {
    entered: Notify,
    go: Notify,
}

/// The demo tools, plus `note_then_count` (sends a log message, which
/// turns its answer into a stream, then counts in the session) and
/// `wait_then_count` (counts in the session once the test lets it go).
fn tools(gates: Arc<Gates>) -> McpServerBuilder {
    demo::register(McpServer::builder())
        .tool(
            tool(
                "note_then_count",
                "Logs, then counts",
                json!({"type": "object"}),
            ),
            |ctx: RequestContext, _: Map<String, Value>| async move {
                ctx.notify(
                    "notifications/message",
                    json!({"level": "info", "data": "counting"}),
                )
                .await;
                let (_, n) = ctx.require_session()?.update(count).await?;
                Ok(CallToolResult::text(n.to_string()))
            },
        )
        .tool(
            tool(
                "wait_then_count",
                "Waits, then counts",
                json!({"type": "object"}),
            ),
            move |ctx: RequestContext, _: Map<String, Value>| {
                let gates = gates.clone();
                async move {
                    gates.entered.notify_one();
                    gates.go.notified().await;
                    let (_, n) = ctx.require_session()?.update(count).await?;
                    Ok(CallToolResult::text(n.to_string()))
                }
            },
        )
}

fn count(state: &mut session_core::SessionState) -> i64 {
    let next = state.get("counter").and_then(Value::as_i64).unwrap_or(0) + 1;
    state.insert("counter".into(), json!(next));
    next
}

async fn serve(redis: &RedisServer, events: Option<&RedisServer>, gates: Arc<Gates>) -> TestServer {
    let server = on_redis(tools(gates), redis, events)
        .config(touching())
        .build();
    TestServer::serve(server, HttpConfig::default()).await
}

/// A request with an id of its own (requests in flight in one session
/// must not share one).
fn rpc(method: &str, params: Value) -> Value {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn call(name: &str, args: Value) -> Value {
    rpc("tools/call", json!({"name": name, "arguments": args}))
}

async fn post(client: &Client, body: &Value) -> Got {
    got(client.post(body).send().await.unwrap()).await
}

async fn delete(client: &Client) -> Got {
    let response = client
        .http
        .delete(&client.url)
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("mcp-protocol-version", &client.version)
        .send()
        .await
        .unwrap();
    got(response).await
}

async fn resume(client: &Client, last_event_id: &str) -> reqwest::Response {
    client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("mcp-protocol-version", &client.version)
        .header("last-event-id", last_event_id)
        .send()
        .await
        .unwrap()
}

async fn initialize(url: &str) -> Got {
    let fresh = Client::new(url);
    post(
        &fresh,
        &rpc(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "x", "version": "1"}}),
        ),
    )
    .await
}

async fn modern_counter(client: &Modern, args: Value) -> Got {
    let request = client.request("tools/call", json!({"name": "counter", "arguments": args}));
    got(request.send().await.unwrap()).await
}

/// Waits (up to 15 s) until `ping` in `client`'s session answers 200.
async fn until_served(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while post(client, &rpc("ping", json!({}))).await.status != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_every_path_is_503_with_retry_after_and_one_error_then_recovers() {
    let mut redis = RedisServer::start();
    let gates = Arc::new(Gates::default());
    let server = serve(&redis, None, gates.clone()).await;
    let mut legacy = Client::new(&server.url);
    legacy.connect().await;
    post(&legacy, &call("counter", json!({})))
        .await
        .ok("counter");
    let modern = Modern::new(&server.url);
    let minted = modern_counter(&modern, json!({"by": 5})).await;
    let counter_id = minted.ok("mint")["structuredContent"]["counter_id"]
        .as_str()
        .unwrap()
        .to_string();

    // A tool that resolved its session before Redis died, and writes after.
    let waiting = {
        let legacy = legacy.clone();
        tokio::spawn(async move { post(&legacy, &call("wait_then_count", json!({}))).await })
    };
    gates.entered.notified().await;
    redis.kill();
    gates.go.notify_one();
    let written = waiting.await.unwrap();
    let in_tool = written.unavailable("a tool writing the session", "session");

    let lookup = post(&legacy, &call("echo", json!({"text": "hi"}))).await;
    let at_lookup = lookup.unavailable("session lookup", "session");
    assert_eq!(
        (
            &in_tool["code"],
            &in_tool["message"],
            &in_tool["data"]["store"]
        ),
        (
            &at_lookup["code"],
            &at_lookup["message"],
            &at_lookup["data"]["store"]
        ),
        "the same error before and inside the handler"
    );
    post(&legacy, &call("counter", json!({})))
        .await
        .unavailable("counter", "session");
    post(&legacy, &rpc("session/update", json!({"state": {"k": 1}})))
        .await
        .unavailable("session/update", "session");
    delete(&legacy).await.unavailable("DELETE", "session");
    let resumed = got(resume(&legacy, "any-stream/1").await).await;
    resumed.unavailable("GET with Last-Event-ID", "session");
    initialize(&server.url)
        .await
        .unavailable("initialize", "session");
    modern_counter(&modern, json!({"counter_id": counter_id}))
        .await
        .unavailable("a modern handle write", "handle");
    modern_counter(&modern, json!({}))
        .await
        .unavailable("a modern handle mint", "handle");

    redis.restart();
    until_served(&legacy).await;
    // Whether the write that met the dead Redis was applied is what its
    // outcome said; the counter went on from what Redis kept.
    let counted = post(&legacy, &call("counter", json!({}))).await;
    let n = counted.ok("counter")["structuredContent"]["counter"]
        .as_i64()
        .unwrap();
    assert!(n == 2 || n == 3, "the counter went on: {n}");
    post(&legacy, &rpc("session/update", json!({"state": {"k": 1}})))
        .await
        .ok("session/update");
    let handle = modern_counter(&modern, json!({"counter_id": counter_id})).await;
    assert_eq!(handle.ok("handle")["structuredContent"]["counter"], 6);
    modern_counter(&modern, json!({})).await.ok("mint");
    assert_eq!(initialize(&server.url).await.status, 200);
    assert_eq!(delete(&legacy).await.status, 200);
    assert_eq!(
        post(&legacy, &rpc("ping", json!({}))).await.status,
        404,
        "deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_writes_each_write_is_503_and_reads_are_served() {
    let redis = RedisServer::start();
    let server = serve(&redis, None, Arc::default()).await;
    let mut legacy = Client::new(&server.url);
    legacy.connect().await;
    post(&legacy, &call("counter", json!({})))
        .await
        .ok("counter");
    let modern = Modern::new(&server.url);
    let minted = modern_counter(&modern, json!({})).await;
    let counter_id = minted.ok("mint")["structuredContent"]["counter_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A finished stream, to resume while writes are refused.
    let mut slow = call("slow", json!({"steps": 2, "delay_ms": 1}));
    slow["params"]["_meta"] = json!({"progressToken": "p"});
    let events = read_sse(legacy.post(&slow).send().await.unwrap(), usize::MAX).await;
    let first_progress = events[1].id.clone().expect("stored events have ids");

    // A session whose client has yet to say `notifications/initialized`.
    let mut pending = Client::new(&server.url);
    let init = rpc(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "x", "version": "1"}}),
    );
    let response = pending.post(&init).send().await.unwrap();
    pending.session = Some(
        response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string(),
    );
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});

    refuse_writes(&redis);

    // Activating a session is a write: the client is told to send it again.
    post(&pending, &initialized)
        .await
        .unavailable("notifications/initialized", "session");

    // Reads: every one's activity write is refused, and each is served.
    post(&legacy, &rpc("ping", json!({}))).await.ok("ping");
    post(&legacy, &rpc("tools/list", json!({})))
        .await
        .ok("tools/list");
    let echoed = post(&legacy, &call("echo", json!({"text": "still here"}))).await;
    assert_eq!(echoed.ok("echo")["content"][0]["text"], "still here");
    let state = post(&legacy, &rpc("session/get", json!({}))).await;
    assert_eq!(state.ok("session/get")["state"]["counter"], 1);
    let replay = resume(&legacy, &first_progress).await;
    assert_eq!(replay.status(), 200, "resuming a stream only reads");
    let replayed = read_sse(replay, usize::MAX).await;
    let last: Value = serde_json::from_str(&replayed.last().unwrap().data).unwrap();
    assert_eq!(
        last["id"], slow["id"],
        "the replay ends with the response: {last}"
    );
    modern.call("tools/list", json!({})).await.result();

    // Writes: each gets the one answer.
    post(&legacy, &call("counter", json!({})))
        .await
        .unavailable("a tool writing the session", "session");
    post(&legacy, &rpc("session/update", json!({"state": {"k": 1}})))
        .await
        .unavailable("session/update", "session");
    delete(&legacy).await.unavailable("DELETE", "session");
    initialize(&server.url)
        .await
        .unavailable("initialize", "session");
    modern_counter(&modern, json!({"counter_id": counter_id}))
        .await
        .unavailable("a modern handle write", "handle");
    modern_counter(&modern, json!({}))
        .await
        .unavailable("a modern handle mint", "handle");
    // Once a stream has begun (200 and its headers sent), the failure is
    // its last event.
    let streamed = post(&legacy, &call("note_then_count", json!({}))).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.streamed, "{streamed:?}");
    assert_store_error("a streamed answer's last event", &streamed.body, "session");

    accept_writes(&redis);
    assert_eq!(post(&pending, &initialized).await.status, 202);
    let counted = post(&legacy, &call("counter", json!({}))).await;
    assert_eq!(
        counted.ok("counter")["structuredContent"]["counter"],
        2,
        "the refused writes were not applied"
    );
    post(&legacy, &rpc("session/update", json!({"state": {"k": 1}})))
        .await
        .ok("session/update");
    let handle = modern_counter(&modern, json!({"counter_id": counter_id})).await;
    assert_eq!(handle.ok("handle")["structuredContent"]["counter"], 2);
    assert_eq!(initialize(&server.url).await.status, 200);
    assert_eq!(delete(&legacy).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_while_the_event_store_is_down_is_503_then_resumes() {
    let sessions = RedisServer::start();
    let mut events = RedisServer::start();
    let server = serve(&sessions, Some(&events), Arc::default()).await;
    let mut legacy = Client::new(&server.url);
    legacy.connect().await;
    let mut slow = call("slow", json!({"steps": 3, "delay_ms": 1}));
    slow["params"]["_meta"] = json!({"progressToken": "p"});
    let response = legacy.post(&slow).send().await.unwrap();
    // The whole stream: priming, three progress events, the response.
    let seen = read_sse(response, usize::MAX).await;
    let first_progress = seen[1].id.clone().unwrap();

    events.kill();
    let refused = got(resume(&legacy, &first_progress).await).await;
    refused.unavailable("GET with Last-Event-ID", "event");
    // The session store is fine: the session's other requests are served.
    post(&legacy, &call("counter", json!({})))
        .await
        .ok("counter");

    events.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let resumed = loop {
        let response = resume(&legacy, &first_progress).await;
        if response.status() == 200 {
            break response;
        }
        got(response)
            .await
            .unavailable("while the event store restarts", "event");
        assert!(
            Instant::now() < deadline,
            "the event store did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rest = tokio::time::timeout(Duration::from_secs(10), read_sse(resumed, usize::MAX))
        .await
        .expect("the replay ends with the response");
    let messages: Vec<Value> = rest
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let steps: Vec<f64> = messages
        .iter()
        .filter_map(|m| m["params"]["progress"].as_f64())
        .collect();
    assert_eq!(steps, [2.0, 3.0], "the events kept through the restart");
    let last = messages.last().unwrap();
    assert_eq!(last["id"], slow["id"], "{last}");
    assert_eq!(last["result"]["content"][0]["text"], "completed 3 steps");
}

/// A client of `serve_lines` on an in-memory pipe: one JSON line each way.
struct Lines {
    write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    read: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
}

impl Lines {
    fn serve(server: McpServer) -> Self {
        let (client, served) = tokio::io::duplex(1 << 16);
        let (served_read, served_write) = tokio::io::split(served);
        tokio::spawn(async move { server.serve_lines(served_read, served_write).await });
        let (read, write) = tokio::io::split(client);
        Lines {
            write,
            read: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(read)),
        }
    }

    /// Sends `message` and reads lines up to the response to it.
    async fn ask(&mut self, message: &Value) -> Value {
        use tokio::io::AsyncWriteExt as _;
        self.write
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.read.next_line())
                .await
                .expect("an answer in time")
                .unwrap()
                .expect("the output is open");
            let answer: Value = serde_json::from_str(&line).unwrap();
            if answer.get("id") == message.get("id") {
                return answer;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_stdio_a_store_failure_is_the_same_json_rpc_error() {
    let mut redis = RedisServer::start();
    let server = on_redis(tools(Arc::default()), &redis, None)
        .config(touching())
        .build();
    let mut stdio = Lines::serve(server);
    let init = rpc(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "x", "version": "1"}}),
    );
    assert!(stdio.ask(&init).await.get("result").is_some());
    let counted = stdio.ask(&call("counter", json!({}))).await;
    assert_eq!(counted["result"]["structuredContent"]["counter"], 1);

    refuse_writes(&redis);
    let refused = stdio.ask(&call("counter", json!({}))).await;
    assert_store_error("a tool writing the session, on stdio", &refused, "session");
    let echoed = stdio.ask(&call("echo", json!({"text": "read"}))).await;
    assert_eq!(
        echoed["result"]["content"][0]["text"], "read",
        "a read is served: {echoed}"
    );
    accept_writes(&redis);

    redis.kill();
    let lookup = stdio.ask(&call("echo", json!({"text": "read"}))).await;
    assert_store_error("session lookup, on stdio", &lookup, "session");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counted = stdio.ask(&call("counter", json!({}))).await;
        if let Some(n) = counted["result"]["structuredContent"]["counter"].as_i64() {
            assert_eq!(n, 2, "the refused write was not applied");
            break;
        }
        assert_store_error("while Redis restarts", &counted, "session");
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
