//! The 2026-07-28 era over stdio (`serve_lines` on an in-memory duplex
//! pipe): discovery, lists, handles, the envelope's errors, cancellation by
//! `notifications/cancelled`, and a legacy session on the same connection.

mod common;

use std::time::Duration;

use common::eventually;
use mcp_server::{McpServer, ServerConfig, demo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long any one expected message may take.
const PATIENCE: Duration = Duration::from_secs(5);

/// A client on one end of a pipe whose other end `serve_lines` serves.
struct Stdio {
    server: McpServer,
    write: Option<WriteHalf<DuplexStream>>,
    /// Every line the server wrote, parsed, in order.
    inbox: mpsc::UnboundedReceiver<Value>,
    serving: JoinHandle<Result<(), mcp_server::Error>>,
}

impl Stdio {
    fn start() -> Self {
        let server = demo::register(McpServer::builder())
            .config(ServerConfig::default())
            .build();
        let (client_side, server_side) = tokio::io::duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server_side);
        let serving = {
            let server = server.clone();
            tokio::spawn(async move { server.serve_lines(server_read, server_write).await })
        };
        let (client_read, write) = tokio::io::split(client_side);
        let (tx, inbox) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(client_read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let message = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Stdio {
            server,
            write: Some(write),
            inbox,
            serving,
        }
    }

    async fn send(&mut self, message: &Value) {
        let write = self.write.as_mut().expect("the input is open");
        write
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        write.flush().await.unwrap();
    }

    /// The next message the server writes.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, self.inbox.recv())
            .await
            .expect("the server answers in time")
            .expect("the server's output is open")
    }

    /// Reads up to the response to `id`: what came before it, and it.
    async fn until(&mut self, id: &Value) -> (Vec<Value>, Value) {
        let mut before = Vec::new();
        loop {
            let message = self.next().await;
            if message.get("method").is_none() && message.get("id") == Some(id) {
                return (before, message);
            }
            before.push(message);
        }
    }

    /// Sends a request and returns its response (what arrives before it,
    /// other than notifications of other requests, is unexpected).
    async fn exchange(&mut self, request: Value) -> Value {
        self.send(&request).await;
        let (before, response) = self.until(&request["id"]).await;
        assert!(
            before.iter().all(|m| m.get("id").is_none()),
            "a response to another request arrived first: {before:?}"
        );
        response
    }

    /// Closes the input and returns everything the server writes until it
    /// has finished (its output closes only once every request it started
    /// has ended).
    async fn finish(mut self) -> Vec<Value> {
        // The pipe's other end reads EOF only on a shutdown (or when both
        // halves are gone).
        let mut write = self.write.take().expect("the input is open");
        write.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let collect = async {
            while let Some(message) = self.inbox.recv().await {
                rest.push(message);
            }
        };
        tokio::time::timeout(PATIENCE, collect)
            .await
            .expect("the server finishes once its input closes");
        tokio::time::timeout(PATIENCE, self.serving)
            .await
            .expect("serve_lines returns")
            .unwrap()
            .unwrap();
        rest
    }
}

/// The envelope a 2026-07-28 request carries in `params._meta`.
fn envelope() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "stdio-test", "version": "1.0"}
    })
}

/// A 2026-07-28 request: `params` with the envelope merged into `_meta`.
fn modern(id: Value, method: &str, mut params: Value) -> Value {
    let mut meta = envelope();
    if let Some(own) = params.get("_meta").and_then(Value::as_object) {
        for (k, v) in own {
            meta[k] = v.clone();
        }
    }
    params["_meta"] = meta;
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn call(id: Value, name: &str, arguments: Value) -> Value {
    modern(
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
}

fn server_name(result: &Value) -> &Value {
    &result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]
}

#[tokio::test]
async fn discover_list_and_a_counter_handle_are_served_without_a_session() {
    let mut io = Stdio::start();
    let discover = io
        .exchange(modern(json!(1), "server/discover", json!({})))
        .await;
    let result = &discover["result"];
    assert_eq!(
        result["supportedVersions"],
        json!(["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"]),
        "{discover}"
    );
    assert_eq!(result["resultType"], "complete");
    assert!(result["capabilities"]["tools"].is_object(), "{discover}");
    assert_eq!(server_name(result), "mcp-server");

    let list = io.exchange(modern(json!(2), "tools/list", json!({}))).await;
    let result = &list["result"];
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "counter", "slow"]);
    assert_eq!(result["resultType"], "complete");
    assert!(
        result["ttlMs"].is_u64(),
        "lists carry caching hints: {list}"
    );

    let first = io
        .exchange(call(json!(3), "counter", json!({"by": 2})))
        .await;
    let structured = &first["result"]["structuredContent"];
    let id = structured["counter_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a modern call mints a handle: {first}"))
        .to_string();
    assert!(id.starts_with("ctr_") && id.len() == 36, "{id}");
    assert_eq!(structured["counter"], 2);
    assert_eq!(first["result"]["resultType"], "complete");
    let next = io
        .exchange(call(
            json!(4),
            "counter",
            json!({"by": 5, "counter_id": id}),
        ))
        .await;
    assert_eq!(
        next["result"]["structuredContent"],
        json!({"counter": 7, "counter_id": id}),
        "{next}"
    );
    // One handle, and no session: the modern era needs none.
    assert_eq!(io.server.handles().manager().count().await.unwrap(), 1);
    assert_eq!(io.server.sessions().count().await.unwrap(), 0);
    let rest = io.finish().await;
    assert!(rest.is_empty(), "nothing more was written: {rest:?}");
}

#[tokio::test]
async fn a_request_without_its_full_envelope_is_answered_with_invalid_params_and_its_id() {
    let mut io = Stdio::start();
    let partial = |meta: Value| {
        json!({"jsonrpc": "2.0", "id": "bad", "method": "tools/call", "params": {
            "name": "counter", "arguments": {}, "_meta": meta}})
    };
    let cases = [
        (
            "server/discover without params",
            json!({"jsonrpc": "2.0", "id": "bad", "method": "server/discover"}),
        ),
        (
            "server/discover without _meta",
            json!({"jsonrpc": "2.0", "id": "bad", "method": "server/discover", "params": {}}),
        ),
        (
            "no capabilities",
            partial(json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"})),
        ),
        (
            "no version",
            partial(json!({"io.modelcontextprotocol/clientCapabilities": {}})),
        ),
        (
            "a version that is not a string",
            partial(json!({"io.modelcontextprotocol/protocolVersion": 20260728,
                           "io.modelcontextprotocol/clientCapabilities": {}})),
        ),
        (
            "capabilities that are not an object",
            partial(
                json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                           "io.modelcontextprotocol/clientCapabilities": []}),
            ),
        ),
    ];
    for (what, request) in cases {
        let answer = io.exchange(request).await;
        assert_eq!(answer["id"], "bad", "{what}: the id is echoed: {answer}");
        assert_eq!(answer["error"]["code"], -32602, "{what}: {answer}");
        assert!(answer.get("result").is_none(), "{what}");
    }
    // With no envelope at all, stdio has nothing else that says "modern":
    // the request is a legacy one before `initialize`, refused with its id.
    let bare = io
        .exchange(
            json!({"jsonrpc": "2.0", "id": "bare", "method": "tools/call",
            "params": {"name": "counter", "arguments": {}}}),
        )
        .await;
    assert_eq!(bare["id"], "bare");
    assert_eq!(bare["error"]["code"], -32600, "{bare}");
    // Nothing ran, and the connection goes on.
    assert_eq!(io.server.handles().manager().count().await.unwrap(), 0);
    let echo = io
        .exchange(call(json!("ok"), "echo", json!({"text": "still here"})))
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "still here");
    io.finish().await;
}

/// Starts `n` long modern `slow` requests with ids `slow-0` … and waits
/// until each has reported progress (so each is running).
async fn start_slow(io: &mut Stdio, n: usize) -> Vec<Value> {
    let ids: Vec<Value> = (0..n).map(|i| json!(format!("slow-{i}"))).collect();
    for id in &ids {
        let request = modern(
            id.clone(),
            "tools/call",
            json!({"name": "slow", "arguments": {"steps": 1000, "delay_ms": 20},
                   "_meta": {"progressToken": id}}),
        );
        io.send(&request).await;
    }
    let mut running = std::collections::HashSet::new();
    while running.len() < n {
        let message = io.next().await;
        assert_eq!(
            message["method"], "notifications/progress",
            "only progress before anything is cancelled: {message}"
        );
        running.insert(message["params"]["progressToken"].to_string());
    }
    ids
}

/// Cancels the requests `ids` with `cancel(id)`, then checks that they
/// stopped, that a later request is answered, and that none of them was
/// answered.
async fn cancel_and_check(mut io: Stdio, ids: &[Value], cancel: impl Fn(&Value) -> Value) {
    assert_eq!(io.server.requests_in_flight(), ids.len());
    for id in ids {
        io.send(&cancel(id)).await;
    }
    let server = io.server.clone();
    eventually("the cancelled requests to stop", || {
        let server = server.clone();
        async move { server.requests_in_flight() == 0 }
    })
    .await;
    io.send(&call(json!("later"), "echo", json!({"text": "later"})))
        .await;
    let (mut transcript, later) = io.until(&json!("later")).await;
    assert_eq!(later["result"]["content"][0]["text"], "later", "{later}");
    // Everything the server writes until it is done: a response of a
    // cancelled request would be among it.
    transcript.extend(io.finish().await);
    let answered: Vec<&Value> = transcript
        .iter()
        .filter(|m| m.get("method").is_none())
        .collect();
    assert!(
        answered.is_empty(),
        "a cancelled request must not be answered (spec: the server SHOULD NOT \
         send a response for a cancelled request): {answered:?}"
    );
    let last_step = transcript
        .iter()
        .filter_map(|m| m["params"]["progress"].as_f64())
        .fold(0.0, f64::max);
    assert!(last_step < 1000.0, "a cancelled request ran to its end");
}

#[tokio::test]
async fn notifications_cancelled_stops_running_modern_requests_and_later_ones_are_served() {
    let mut io = Stdio::start();
    let ids = start_slow(&mut io, 1).await;
    assert_eq!(io.server.requests_in_flight(), 1);
    // Cancelled with the envelope in `_meta`, as this server tells eras
    // apart.
    io.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": ids[0], "reason": "changed my mind", "_meta": envelope()}}),
    )
    .await;
    let server = io.server.clone();
    eventually("the cancelled request to stop", || {
        let server = server.clone();
        async move { server.requests_in_flight() == 0 }
    })
    .await;
    io.send(&call(json!("later"), "echo", json!({"text": "later"})))
        .await;
    let (before, later) = io.until(&json!("later")).await;
    assert_eq!(later["result"]["content"][0]["text"], "later");
    let mut rest = before;
    rest.extend(io.finish().await);
    // Whatever else came, the request did not complete.
    for message in &rest {
        assert_ne!(
            message["result"]["content"][0]["text"], "completed 1000 steps",
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_modern_request_cancelled_by_notification_is_never_answered() {
    let mut io = Stdio::start();
    // Several at once: whether the handler's own result wins the race with
    // the cancellation is decided per request.
    let ids = start_slow(&mut io, 8).await;
    cancel_and_check(io, &ids, |id| {
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": id, "_meta": envelope()}})
    })
    .await;
}

#[tokio::test]
async fn a_plain_notifications_cancelled_stops_a_modern_request() {
    let mut io = Stdio::start();
    let ids = start_slow(&mut io, 1).await;
    cancel_and_check(io, &ids, |id| {
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": id}})
    })
    .await;
}

#[tokio::test]
async fn a_legacy_session_and_modern_requests_share_one_connection() {
    let mut io = Stdio::start();
    let modern_first = io
        .exchange(call(json!(1), "counter", json!({"by": 10})))
        .await;
    let handle = modern_first["result"]["structuredContent"]["counter_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{modern_first}"))
        .to_string();
    let init = io
        .exchange(
            json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "legacy", "version": "1"}}}),
        )
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert!(init["result"].get("resultType").is_none());
    io.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let legacy_call = |id: i64, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "counter", "arguments": args}})
    };
    let one = io.exchange(legacy_call(3, json!({}))).await;
    assert_eq!(
        one["result"]["structuredContent"],
        json!({"counter": 1}),
        "the session counts in its own state: {one}"
    );
    assert!(
        one["result"].get("resultType").is_none(),
        "legacy results as before"
    );
    // Modern requests beside it mint and use handles, not the session.
    let minted = io.exchange(call(json!(4), "counter", json!({}))).await;
    assert_eq!(minted["result"]["structuredContent"]["counter"], 1);
    assert_ne!(
        minted["result"]["structuredContent"]["counter_id"],
        json!(handle)
    );
    let two = io.exchange(legacy_call(5, json!({}))).await;
    assert_eq!(two["result"]["structuredContent"], json!({"counter": 2}));
    // The session uses the handle the modern request minted, and the
    // modern request sees what the session added.
    let shared = io
        .exchange(legacy_call(6, json!({"by": 5, "counter_id": handle})))
        .await;
    assert_eq!(shared["result"]["structuredContent"]["counter"], 15);
    let seen = io
        .exchange(call(
            json!(7),
            "counter",
            json!({"by": 0, "counter_id": handle}),
        ))
        .await;
    assert_eq!(seen["result"]["structuredContent"]["counter"], 15);
    assert_eq!(seen["result"]["resultType"], "complete");
    let ping = io
        .exchange(json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}))
        .await;
    assert_eq!(ping["result"], json!({}));
    let list = io.exchange(modern(json!(9), "tools/list", json!({}))).await;
    assert_eq!(list["result"]["resultType"], "complete");
    let legacy_list = io
        .exchange(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list"}))
        .await;
    assert!(legacy_list["result"]["tools"].is_array());
    assert!(legacy_list["result"].get("ttlMs").is_none());
    assert_eq!(io.server.sessions().count().await.unwrap(), 1);
    let server = io.server.clone();
    io.finish().await;
    assert_eq!(
        server.sessions().count().await.unwrap(),
        0,
        "the session ends with the connection"
    );
}
